"""Decoder training (paper §3, §4): minimise Σ‖x − f(Φ(x))‖² with Adam.

* Loss: the squared reconstruction error of eq. (1), averaged over pixels and the batch (Adam is
  invariant to the constant factor, so this is the paper's objective up to scale). The
  feature-space and adversarial losses of Appendix A (``decoder.loss: feature | gan``) are
  objectives of :mod:`preimage.objectives` plugged into the same loop (its :class:`PixelObjective` is
  the interface); each of their terms is logged per epoch (``train_<term>``), the discriminator and
  its optimiser are saved in the checkpoint.
* Optimiser: Adam (β1 = 0.9, β2 = 0.999), batch 64, learning rate 1e-3 (§4), kept constant for the
  first ``lr_decay_start`` of the run and then lowered smoothly (cosine) to ``lr_final`` × the
  base rate at the end: the paper's "lowered gradually towards the end".
* Features are multiplied by one scalar, ``1 / RMS`` of the training features, so that every
  representation enters the decoder at a similar scale (a fixed linear map: no information is
  lost); the scale is stored with the decoder.
* Targets are what the representation sees: the centre crop of each image that Φ was computed
  on (``target_size`` of the feature cache; paper Table 1: AlexNet sees 227 of 256 px), never
  pixels outside it.
* Decoders that predict a smaller image (§3 "we predict downsampled images"; Table 6: 192 px,
  Table 7: 128 px) are trained against that crop downsampled (antialiased bilinear) to
  ``decoder.output_size``.
* Validation: a seeded ``val_fraction`` of the training images is held out (the test set is
  never looked at during training); where a store holds several crops of each photograph
  (``data.crops_per_image``) whole photographs are held out, so no validation image shares a pixel
  with a training one. ``keep: best`` (default) writes the weights of the epoch with the lowest
  validation loss, not the last ones (pixel-loss decoders; the feature and adversarial objectives
  of Appendix A keep their last epoch, as the validation loss is the pixel loss they trade away); ``patience: n`` stops once n epochs in a row failed to lower
  it (0: never). Both are ours: the paper trains on 1.2 M images for a fixed schedule.
* ``residual`` (ours): the decoder predicts the difference from the mean training target
  (:meth:`preimage.decoders.Decoder.start_from`), so training starts at the mean-image reference
  row instead of noise.
* CUDA when available with bfloat16 autocast, else the CPU with the job's threads.
* A checkpoint after every epoch, outside the declared outputs; a restarted job resumes from it and
  ends with the same weights as an uninterrupted run (the data order of epoch ``e`` depends only on
  ``seed`` and ``e``). A NaN or infinite loss stops with a clear error.
* Checkpoints hold tensors and plain values only (the torch CPU and CUDA RNG states as uint8
  tensors) and are read with ``torch.load(weights_only=True)``: a checkpoint never runs code. One
  that cannot be read that way (damaged, or a pickle of other objects) is logged and ignored (the
  run starts afresh); a ``train.pt.tmp`` left by a killed save is removed. A full disk stops the
  run with "no space left on device writing <path>" and leaves no partial file.

A run's state is a :class:`TrainingRun` (decoder, optimiser, history, epochs done, and for the
autoencoder its :class:`FineTunedEncoder`); its data a :class:`PairedSplit`; its outputs
:class:`RunFiles`. Trained decoders are loaded back by :func:`preimage.decoding.load_decoder`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from preimage import atomic_files, image_store, streaming, torch_files
from preimage.decoders import Decoder, build_decoder
from preimage.decoding import feature_provenance
from preimage.devices import resolve_device
from preimage.features.cache import FeatureStore
from preimage.objectives import PixelObjective, build_objective

log = logging.getLogger("preimage.train")


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters of one training run (``train.*`` in the config)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    lr_decay_start: float = 0.5
    lr_final: float = 0.01
    width: float = 1.0
    upsample: str = "deconv"
    val_fraction: float = 0.05
    keep: str = "best"
    patience: int = 0
    residual: bool = True
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    preload_mb: int = 4096

    def __post_init__(self) -> None:
        if self.keep not in ("best", "last"):
            raise ValueError(f"train.keep must be 'best' or 'last', got {self.keep!r}")
        if self.patience < 0:
            raise ValueError(f"train.patience must be ≥ 0, got {self.patience}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"unknown training parameter(s): {', '.join(sorted(unknown))}")
        return cls(**dict(values))

    def fingerprint(self, extra: Mapping[str, Any]) -> str:
        """Identity of a run: a checkpoint resumes only a run with the same fingerprint."""
        payload = json.dumps({**dataclasses.asdict(self), **extra}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


# --------------------------------------------------------------------------- data


class PairedData:
    """Training pairs (feature, image) from the two HDF5 stores, in memory when small enough.

    Large sets stream (:mod:`preimage.streaming`): whole storage chunks are read in a seeded random
    order and shuffled within a buffer of several chunks, by a background thread, so the GPU is not
    kept waiting on HDF5. With ``features_path=None`` the pairs are (image, image): the autoencoder
    computes its own features from the images.
    """

    def __init__(self, features_path: Optional[str], images_path: str, indices: np.ndarray, preload_mb: int,
                 crop: Optional[int] = None) -> None:
        self.images = image_store.ImageStore(images_path, crop=crop)
        self.features = FeatureStore(features_path) if features_path is not None else self.images
        if len(self.features) != len(self.images):
            raise ValueError(f"{features_path} has {len(self.features)} rows but {images_path} has {len(self.images)} images")
        self.indices = np.sort(np.asarray(indices))
        feature_bytes = 4 * int(np.prod(self.features.shape)) if features_path is not None else 0
        per_image = feature_bytes + 3 * self.images.size ** 2
        self.per_image, self.preload_mb = per_image, preload_mb
        self.in_memory = per_image * len(self.indices) <= preload_mb * (1 << 20)
        if self.in_memory:
            self._imgs = np.concatenate([self.images.read(s, e) for s, e in streaming.runs(self.indices)])
            self._feats = (np.concatenate([self.features.read(s, e) for s, e in streaming.runs(self.indices)])
                           if features_path is not None else self._imgs)

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, batch_size: int, rng: Optional[np.random.Generator]) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """(float32 features, uint8 images) batches; shuffled when ``rng`` is given."""
        if self.in_memory:
            order = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
            for start in range(0, len(order), batch_size):
                pick = order[start:start + batch_size]
                yield self._feats[pick], self._imgs[pick]
            return
        buffer = streaming.buffer_size(self.per_image, self.preload_mb, batch_size, getattr(self.features, "chunk", 1))
        yield from streaming.stream_pairs(self.features, self.images, self.indices, batch_size, rng, buffer)

    def close(self) -> None:
        if self.features is not self.images:
            self.features.close()
        self.images.close()


def split_train_val(count: int, val_fraction: float, seed: int,
                    groups: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded split of the training images into training and validation indices.

    ``groups`` (one integer per image, e.g. the photograph a crop was cut from) keeps every group
    on one side: ``val_fraction`` of the groups are held out whole."""
    if groups is None:
        groups = np.arange(count)
    names, members = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    n_val = int(round(len(names) * val_fraction)) if val_fraction > 0 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 and len(names) > 1 else 0), len(names) - 1)
    held_out = np.isin(members, order[:n_val])
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def nested_subset(indices: np.ndarray, groups: Optional[np.ndarray], fraction: float, seed: int) -> np.ndarray:
    """The training indices of the first ``fraction`` of the photographs (``groups``; every image
    its own when None) in a seeded order: the subsets of growing fractions are nested, so a
    data-scaling curve adds images without swapping any."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a training subset is a fraction in (0, 1], got {fraction}")
    indices = np.asarray(indices)
    keys = indices if groups is None else np.asarray(groups)[indices]
    names = np.unique(keys)
    order = np.random.default_rng([seed, 1]).permutation(len(names))
    chosen = names[order[:max(1, int(math.ceil(fraction * len(names))))]]
    return indices[np.isin(keys, chosen)]


def photo_groups(images: image_store.ImageStore) -> Optional[np.ndarray]:
    """The photograph each image of a store was cut from, where the store holds several crops of
    each (``crops_per_image`` > 1); None otherwise (every image its own group)."""
    if int(images.attrs.get("crops_per_image", 1)) <= 1:
        return None
    sources = [str(p).split("#", 1)[0] for p in images.paths]
    return np.unique(sources, return_inverse=True)[1]


def mean_target(images_path: str, indices: np.ndarray, crop: int, size: int, sample: int = 2048,
                seed: int = 0) -> torch.Tensor:
    """The mean training target (3, size, size) over a seeded sample of ``indices``."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(indices, size=min(sample, len(indices)), replace=False))
    total = torch.zeros(3, size, size, dtype=torch.float64)
    with image_store.ImageStore(images_path, crop=crop) as imgs:
        for s, e in streaming.runs(pick):
            total += to_targets(imgs.read(s, e), size, torch.device("cpu")).double().sum(0)
    return (total / max(1, len(pick))).float()


def feature_scale(features: FeatureStore, indices: np.ndarray, sample: int = 512, seed: int = 0) -> float:
    """1 / RMS of (a seeded sample of) the training features."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(indices, size=min(sample, len(indices)), replace=False))
    values = np.concatenate([features.read(s, e).reshape(e - s, -1) for s, e in streaming.runs(pick)])
    rms = float(np.sqrt(np.mean(values.astype(np.float64) ** 2)))
    return 1.0 / rms if rms > 0 else 1.0


def to_targets(images: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """uint8 images → float targets in [0, 1] at the decoder's output size."""
    x = image_store.to_float(images).to(device, non_blocking=True)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def learning_rate(cfg: TrainConfig, progress: float) -> float:
    """Constant until ``lr_decay_start`` (fraction of the run), then cosine to ``lr_final``·lr."""
    if progress <= cfg.lr_decay_start:
        return cfg.lr
    t = (progress - cfg.lr_decay_start) / max(1e-12, 1 - cfg.lr_decay_start)
    low = cfg.lr * cfg.lr_final
    return low + 0.5 * (cfg.lr - low) * (1 + math.cos(math.pi * min(1.0, t)))


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """Write a checkpoint atomically through ``{name}.tmp`` (a kill during the write leaves the
    previous one intact; a full disk raises :class:`preimage.atomic_files.NoSpaceLeft` and removes it)."""
    torch_files.save_torch(state, path, tmp=path.with_name(path.name + ".tmp"))


def load_checkpoint(path: Path) -> Optional[Dict[str, Any]]:
    """The checkpoint at ``path``, or None (logged) when it is missing or cannot be read safely.

    Read with ``weights_only=True``: a file that would unpickle anything but tensors and plain
    values is never executed, only reported and ignored, as is a damaged one.
    """
    stale = path.with_name(path.name + ".tmp")
    if stale.exists():
        log.info("removing %s left by an interrupted save", stale)
        stale.unlink(missing_ok=True)
    if not path.exists():
        return None
    try:
        state = torch_files.load_torch(path, advice="it will be replaced")
    except (torch_files.UnsafeFile, atomic_files.DamagedFile) as err:
        log.warning("ignoring unreadable checkpoint %s: %s; starting afresh", path, err)
        return None
    if not isinstance(state, dict):
        log.warning("ignoring unreadable checkpoint %s: it holds a %s, not a checkpoint; starting afresh", path,
                    type(state).__name__)
        return None
    return state


def rng_state() -> Dict[str, Any]:
    """The torch RNG states (CPU, and every CUDA device when CUDA is initialised) as uint8 tensors."""
    state: Dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Any) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- the state of a run


@dataclasses.dataclass
class PairedSplit:
    """The training pairs of one run: features and images (``features_path`` None: the images are
    their own input, as for the autoencoder), the seeded training and validation indices
    (:func:`split_train_val`) and ``crop``, the side of the centre region the decoder reconstructs."""

    features_path: Optional[str]
    images_path: str
    train_idx: np.ndarray
    val_idx: np.ndarray
    crop: int

    def open(self, preload_mb: int) -> Tuple[PairedData, Optional[PairedData]]:
        """The training pairs and the validation pairs (None without validation images)."""
        train = PairedData(self.features_path, self.images_path, self.train_idx, preload_mb, self.crop)
        val = (PairedData(self.features_path, self.images_path, self.val_idx, preload_mb, self.crop)
               if len(self.val_idx) else None)
        return train, val


@dataclasses.dataclass
class FineTunedEncoder:
    """The AlexNet layers an autoencoder trains jointly with its decoder (§5.2), at ``lr_scale`` ×
    the decoder's learning rate. ``representation`` is the AlexNet layer (its ``net`` runs the
    layers, its ``model`` holds the whole network's weights)."""

    representation: Any
    lr_scale: float

    def parameters(self) -> List[torch.nn.Parameter]:
        return [p for p in self.representation.net.parameters() if p.requires_grad]

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.representation.model.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.representation.model.load_state_dict(state)


@dataclasses.dataclass
class RunFiles:
    """Where a run writes: the decoder (``decoder.pt``), the per-epoch log (CSV), the checkpoint
    (outside the declared outputs) and, for an autoencoder, the fine-tuned network's state dict."""

    decoder: str
    log: str
    checkpoint: Path
    encoder: Optional[str] = None


@dataclasses.dataclass
class TrainingRun:
    """The state of one training run, what a checkpoint saves and a restarted job restores.

    ``inputs`` turns a batch as :class:`PairedData` yields it into the decoder's input (scaled
    features; for the autoencoder the encoder's code of the images); ``epoch`` counts the epochs
    done; ``history`` has one row per epoch done (the CSV log).
    """

    name: str
    model: Decoder
    optimizer: torch.optim.Optimizer
    meta: Dict[str, Any]
    inputs: Callable[[np.ndarray], torch.Tensor]
    encoder: Optional[FineTunedEncoder] = None
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    epoch: int = 0
    objective: Any = dataclasses.field(default_factory=PixelObjective)
    #: the weights of the epoch with the lowest validation loss so far (``keep: best``):
    #: {"epoch", "val_loss", "model"[, "encoder"]}, CPU copies, saved in the checkpoint
    best: Optional[Dict[str, Any]] = None

    def weights(self) -> Dict[str, Any]:
        """CPU copies of the weights that make the decoder (and, for the autoencoder, its encoder)."""
        state = {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}
        if self.encoder is not None:
            state["encoder"] = {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}
        return state

    def remember_if_best(self, val_loss: float) -> bool:
        """Keep the current weights when ``val_loss`` is the lowest so far; returns whether it is."""
        if not math.isfinite(val_loss) or (self.best is not None and val_loss >= self.best["val_loss"]):
            return False
        self.best = {"epoch": self.epoch, "val_loss": val_loss, **self.weights()}
        return True

    def restore_best(self) -> None:
        """Load the remembered best weights into the decoder (and encoder)."""
        self.model.load_state_dict(self.best["model"])
        if self.encoder is not None:
            self.encoder.load_state_dict(self.best["encoder"])

    @classmethod
    def start(cls, name: str, model: Decoder, meta: Dict[str, Any], cfg: TrainConfig,
              inputs: Callable[[np.ndarray], torch.Tensor],
              encoder: Optional[FineTunedEncoder] = None, objective: Any = None) -> "TrainingRun":
        """A fresh run: Adam (§4) over the decoder and, at its own rate, the fine-tuned encoder;
        ``objective`` defaults to :class:`PixelObjective`.

        Parameters
        ----------
        name : str
            The representation's slug, for the log.
        model : Decoder
            The decoder to train.
        meta : dict
            The decoder's metadata, written into ``decoder.pt`` with its weights.
        cfg : TrainConfig
            The training settings (Adam's ``lr``, ``beta1``, ``beta2`` here).
        inputs : callable
            Turns a batch of stored arrays (features, or images for an autoencoder) into the decoder's inputs.
        encoder : FineTunedEncoder, optional
            The AlexNet layers trained jointly (§5.2 autoencoders), at ``encoder.lr_scale`` × the rate.
        objective : optional
            The loss (:func:`preimage.objectives.build_objective`); None: the pixel loss, eq. (1).
        """
        groups = [{"params": list(model.parameters()), "lr_scale": 1.0}]
        if encoder is not None:
            groups.append({"params": encoder.parameters(), "lr_scale": encoder.lr_scale})
        optimizer = torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        return cls(name, model, optimizer, meta, inputs, encoder, objective=objective or PixelObjective())

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.objective.set_learning_rate(lr)

    def checkpoint(self) -> Dict[str, Any]:
        """The checkpoint of the epochs done: tensors and plain values only (``weights_only``)."""
        state = {"fingerprint": self.meta["fingerprint"], "epoch": self.epoch, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "torch_rng": rng_state(), "history": self.history}
        if self.encoder is not None:
            state["encoder"] = self.encoder.state_dict()
        objective = self.objective.state_dict()
        if objective:
            state["objective"] = objective
        if self.best is not None:
            state["best"] = self.best
        return state

    def resume(self, path: Path, epochs: int) -> None:
        """Continue from the checkpoint at ``path`` when it belongs to this run (same fingerprint)."""
        state = load_checkpoint(path)
        if state is None:
            return
        if state.get("fingerprint") != self.meta["fingerprint"]:
            log.info("ignoring checkpoint %s: it belongs to a different configuration", path)
            return
        self.model.load_state_dict(state["model"])
        if self.encoder is not None:
            self.encoder.load_state_dict(state["encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "objective" in state:
            self.objective.load_state_dict(state["objective"])
        set_rng_state(state["torch_rng"])
        self.history, self.epoch = list(state["history"]), int(state["epoch"])
        self.best = state.get("best")
        log.info("resuming %s from %s at epoch %d/%d", self.name, path, self.epoch, epochs)


# --------------------------------------------------------------------------- training


def train_decoder(
    representation_name: str,
    features_path: str,
    images_path: str,
    out_path: str,
    log_path: str,
    checkpoint_path: str,
    config: Mapping[str, Any] | TrainConfig,
    stop_after_epochs: Optional[int] = None,
    loss: Optional[Mapping[str, Any]] = None,
    init_from: Optional[str] = None,
    subset: Optional[float] = None,
) -> Dict[str, Any]:
    """Train the decoder of the representation named ``representation_name`` (its slug) on its
    feature cache; write ``out_path`` (decoder.pt) and ``log_path`` (csv).

    ``loss`` selects the objective (:func:`preimage.objectives.build_objective`: ``{"kind":
    "pixel" | "feature" | "gan", "representation": {"name", "params"}, "gan": {…}}``; None or
    ``pixel``: eq. (1)). ``init_from`` names a trained ``decoder.pt`` of the same network (the
    pixel decoder of the representation, ``decoder.init: pixel``) whose weights the run starts
    from instead of a random initialisation. ``subset`` (a fraction in (0, 1]) trains on the nested
    subset of the training photographs that :func:`nested_subset` picks (the data-scaling curve); the
    validation images stay those of the whole run. ``stop_after_epochs`` ends the run early *without* writing outputs (tests
    use it to simulate a killed job; the checkpoint stays and the next call resumes).

    Parameters
    ----------
    representation_name : str
        The representation's slug (``fc6``, ``fc6-gan``).
    features_path : str
        The training split's feature cache (the decoder's inputs; it records ``target_size`` and
        ``decoder_kind``).
    images_path : str
        The training image store (the targets: the centre ``target_size`` px of each image).
    out_path : str
        Output: ``decoder.pt`` (weights and metadata, with the provenance of its features).
    log_path : str
        Output: the training log, one row per epoch (losses, learning rate, validation loss, ``kept``).
    checkpoint_path : str
        The checkpoint written after every epoch; a run finding one of the same settings resumes from it.
    config : mapping or TrainConfig
        The training settings (``train.*`` of the config: epochs, batch size, lr, device …).
    stop_after_epochs : int, optional
        End after this many epochs without writing the outputs (a killed job, for tests).
    loss : mapping, optional
        The objective (``decoder.loss``: pixel, feature or gan; Appendix A); None: pixel.
    init_from : str, optional
        A trained ``decoder.pt`` of the same network to start from (``decoder.init: pixel``).
    subset : float, optional
        Train on this fraction (0, 1] of the training photographs (the data-scaling curve); None: all.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_mapping(config)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    with FeatureStore(features_path) as feats, image_store.ImageStore(images_path) as imgs:
        count, feature_shape = len(feats), feats.shape
        imgs_size = imgs.size
        feature_attrs = feats.attrs
        missing = [key for key in ("target_size", "decoder_kind") if key not in feature_attrs]
        if missing:
            raise ValueError(f"{features_path} does not record {' and '.join(missing)}, which every feature cache "
                             "records: it is not a complete cache; delete it and rerun its feature job")
        image_size = int(feature_attrs["target_size"])
        if image_size > imgs.size:
            raise ValueError(f"{features_path} sees {image_size}-px images but {images_path} holds {imgs.size}-px ones")
        groups = photo_groups(imgs)
        train_idx, val_idx = split_train_val(count, cfg.val_fraction, cfg.seed, groups)
        if subset is not None:
            train_idx = nested_subset(train_idx, groups, subset, cfg.seed)
        n_sources = len(np.unique(groups[train_idx])) if groups is not None else len(train_idx)
        scale = feature_scale(feats, train_idx, seed=cfg.seed)
    kind = feature_attrs["decoder_kind"]
    model = build_decoder(kind, feature_shape, image_size, width=cfg.width, upsample=cfg.upsample).to(device)
    if cfg.residual:
        model.start_from(mean_target(images_path, train_idx, image_size, model.output_size, seed=cfg.seed))
    init_identity = _initialise(model, init_from, scale) if init_from else None
    objective = build_objective(loss, image_size=image_size, output_size=model.output_size, feature_scale=scale,
                                width=cfg.width, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), device=device,
                                use_amp=cfg.amp and device.type == "cuda") or PixelObjective()
    if objective.kind != "pixel":
        seen = int(objective.representation.target_size(imgs_size))
        if seen != image_size:
            raise ValueError(f"{representation_name}: the {objective.kind} loss's representation sees {seen}-px images "
                             f"but {features_path} was computed on {image_size} px; recompute the features")
    settings = objective.settings()
    fingerprint = cfg.fingerprint({"representation": representation_name, "features": feature_attrs.get("identity"),
                                   "images_sha256": feature_attrs.get("images_sha256"), "count": count,
                                   **({"objective": settings} if objective.kind != "pixel" else {}),
                                   **({"subset": subset} if subset is not None else {}),
                                   **({"init": init_identity} if init_identity else {})})
    label = feature_attrs.get("label", representation_name)
    meta = {
        "representation": representation_name, "kind": kind, "feature_shape": list(feature_shape),
        "image_size": image_size, "output_size": model.output_size, "width": cfg.width, "upsample": cfg.upsample,
        "residual": model.residual, "feature_scale": scale, "train": dataclasses.asdict(cfg), "features_identity": feature_attrs.get("identity"),
        "label": label if objective.kind == "pixel" else f"{label}; {objective.describe()}", "fingerprint": fingerprint,
        "loss": settings, "init": init_identity, "n_train": len(train_idx), "n_train_sources": n_sources,
        "subset": subset,
        "provenance": feature_provenance(feature_attrs),  # how to compute its features anew (preimage invert)
    }

    def inputs(f: np.ndarray) -> torch.Tensor:
        # streamed batches keep the cache's dtype (float16): converted here, on the device
        return torch.from_numpy(f).to(device, non_blocking=True).float() * scale

    run = TrainingRun.start(representation_name, model, meta, cfg, inputs, objective=objective)
    split = PairedSplit(features_path, images_path, train_idx, val_idx, image_size)
    return _train(run, cfg, device, split, RunFiles(out_path, log_path, Path(checkpoint_path)), stop_after_epochs)


def _initialise(model: Decoder, path: str, scale: float) -> str:
    """Load the weights of the trained decoder at ``path`` into ``model`` (same network, same
    features: same kind, shapes and feature scale); returns the file's sha256 for the fingerprint."""
    from preimage.decoding import load_decoder

    source, meta = load_decoder(path)
    expected = {"kind": model.kind, "feature_shape": list(model.feature_shape), "image_size": model.image_size,
                "output_size": model.output_size, "width": model.width, "upsample": model.upsample,
                "residual": model.residual}
    mismatch = [key for key, value in expected.items() if meta.get(key) != value]
    if mismatch:
        raise ValueError(f"cannot start from {path}: its decoder differs in {', '.join(mismatch)} "
                         "(decoder.width and upsample must be those of the decoder it starts from)")
    if not math.isclose(float(meta["feature_scale"]), scale, rel_tol=1e-6):
        raise ValueError(f"cannot start from {path}: it was trained on other features (feature scale "
                         f"{meta['feature_scale']:.6g}, here {scale:.6g})")
    model.load_state_dict(source.state_dict())
    log.info("starting from the weights of %s", path)
    return atomic_files.file_sha256(path)


def train_autoencoder(
    layer: str,
    images_path: str,
    out_path: str,
    encoder_path: str,
    log_path: str,
    checkpoint_path: str,
    config: Mapping[str, Any] | TrainConfig,
    weights: str = "imagenet",
    weights_seed: int = 0,
    crop: int = 227,
    encoder_lr_scale: float = 0.1,
    stop_after_epochs: Optional[int] = None,
    arch: str = "torchvision",
) -> Dict[str, Any]:
    """The AlexNet autoencoder of §5.2: the decoder of ``layer`` trained jointly with the AlexNet
    layers below it (initialised from ``weights`` on network ``arch``, learning rate
    ``encoder_lr_scale`` × the decoder's), on the images alone.

    Writes the decoder like :func:`train_decoder` and the fine-tuned network's full state dict to
    ``encoder_path``, so that ``features.create(layer, weights=encoder_path, arch=arch)`` computes the
    autoencoder's code. The encoder runs in eval mode (dropout off), as when features are cached.

    Parameters
    ----------
    layer : str
        The AlexNet layer whose autoencoder is trained (``conv1`` … ``fc8``).
    images_path : str
        The training image store (inputs and targets).
    out_path : str
        Output: the decoder's ``decoder.pt``.
    encoder_path : str
        Output: the fine-tuned network's state dict.
    log_path : str
        Output: the training log, one row per epoch (losses, learning rate, validation loss, ``kept``).
    checkpoint_path : str
        The checkpoint written after every epoch; a run finding one of the same settings resumes from it.
    config : mapping or TrainConfig
        The training settings (``train.*`` of the config: epochs, batch size, lr, device …).
    weights : str, default "imagenet"
        The encoder's starting weights: ``imagenet``, ``random`` or a file (``features.alexnet.weights``).
    weights_seed : int, default 0
        Seed of ``random`` weights.
    crop : int, default 227
        Side in pixels of the centre crop AlexNet sees (Table 1: 227).
    encoder_lr_scale : float, default 0.1
        The encoder's learning rate as a fraction of the decoder's (``variants.encoder_lr_scale``;
        ours, §5.2 gives none).
    stop_after_epochs : int, optional
        End after this many epochs without writing the outputs (a killed job, for tests).
    arch : str, default "torchvision"
        ``torchvision`` (AlexNet) or ``caffenet`` (the paper's CaffeNet, ``features.alexnet.arch``).
    """
    from preimage.features import create

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_mapping(config)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    encoder = create(layer, weights=weights, seed=weights_seed, crop=crop, arch=arch).to(device)
    encoder.net.eval()
    for p in encoder.net.parameters():
        p.requires_grad_(True)
    with image_store.ImageStore(images_path) as imgs:
        count, image_size, imgs_size = len(imgs), int(encoder.target_size(imgs.size)), imgs.size
        train_idx, val_idx = split_train_val(count, cfg.val_fraction, cfg.seed, photo_groups(imgs))
        rng = np.random.default_rng(cfg.seed)
        sample = np.sort(rng.choice(train_idx, size=min(256, len(train_idx)), replace=False))
        with torch.no_grad():
            values = torch.cat([encoder(image_store.to_float(imgs.read(s, e)).to(device)).flatten(1).cpu()
                                for s, e in streaming.runs(sample)])
    rms = float(values.double().pow(2).mean().sqrt())
    scale = 1.0 / rms if rms > 0 else 1.0
    feature_shape = tuple(encoder.output_shape(image_size, image_size))
    kind = encoder.decoder_kind(feature_shape)
    model = build_decoder(kind, feature_shape, image_size, width=cfg.width, upsample=cfg.upsample).to(device)
    if cfg.residual:
        model.start_from(mean_target(images_path, train_idx, image_size, model.output_size, seed=cfg.seed))
    identity = encoder.identity()
    images_sha256 = image_store.image_store_digest(images_path)
    fingerprint = cfg.fingerprint({"autoencoder": layer, "encoder": identity, "encoder_lr_scale": encoder_lr_scale,
                                   "images_sha256": images_sha256, "count": count})
    name = f"{layer}-ae"
    meta = {
        "representation": name, "kind": kind, "feature_shape": list(feature_shape),
        "image_size": image_size, "output_size": model.output_size, "width": cfg.width, "upsample": cfg.upsample,
        "residual": model.residual, "feature_scale": scale, "train": dataclasses.asdict(cfg), "features_identity": json.dumps(identity),
        "label": f"{layer} autoencoder (encoder fine-tuned from {encoder.label})", "fingerprint": fingerprint,
        "encoder_lr_scale": encoder_lr_scale,
        # the fine-tuned encoder computes its features anew (preimage invert); its sha256 is added by _finish
        "provenance": feature_provenance(
            {"representation": layer, "params": {"weights": weights, "seed": weights_seed, "crop": crop, "arch": arch},
             "identity": identity, "image_size": imgs_size, "target_size": image_size, "dtype": "float32",
             "images_sha256": images_sha256},
            weights=None, weights_file=os.path.relpath(encoder_path, os.path.dirname(os.path.abspath(out_path)) or ".")),
    }

    def inputs(x: np.ndarray) -> torch.Tensor:
        return encoder(image_store.to_float(x).to(device, non_blocking=True)) * scale

    run = TrainingRun.start(name, model, meta, cfg, inputs, FineTunedEncoder(encoder, encoder_lr_scale))
    split = PairedSplit(None, images_path, train_idx, val_idx, image_size)
    files = RunFiles(out_path, log_path, Path(checkpoint_path), encoder=encoder_path)
    return _train(run, cfg, device, split, files, stop_after_epochs)


def _train(run: TrainingRun, cfg: TrainConfig, device: torch.device, split: PairedSplit, files: RunFiles,
           stop_after_epochs: Optional[int]) -> Dict[str, Any]:
    """The loop shared by decoders and autoencoders: resume, one epoch after another (each ending
    with a validation loss and a checkpoint), then the outputs."""
    run.resume(files.checkpoint, cfg.epochs)
    train_data, val_data = split.open(cfg.preload_mb)
    # the validation loss is eq. (1)'s pixel loss: it says which epoch is best for the pixel objective
    # only; a feature or adversarial decoder trades pixel error for what its own loss asks, so it keeps
    # its last epoch (a pixel-loss choice would hand back the pixel decoder it started from)
    keep_best = cfg.keep == "best" and val_data is not None and run.objective.kind == "pixel"
    if keep_best and run.epoch == 0 and run.best is None:
        # epoch 0 competes too: with ``residual`` it is the mean image, the floor a decoder must beat
        run.remember_if_best(evaluate_loss(run.model, val_data, run.inputs, run.model.output_size, device,
                                           cfg.batch_size))
    log.info("%s: %s decoder (%d parameters, width %.3g) from %s features to %d px; %d train / %d val images; "
             "%d epochs on %s%s", run.name, run.meta["kind"], sum(p.numel() for p in run.model.parameters()),
             cfg.width, "x".join(map(str, run.meta["feature_shape"])), run.model.output_size, len(train_data),
             len(split.val_idx), cfg.epochs, device,
             f"; encoder fine-tuned at {run.encoder.lr_scale:g} x lr" if run.encoder is not None else "")
    try:
        for epoch in range(run.epoch, cfg.epochs):
            if stop_after_epochs is not None and epoch >= stop_after_epochs:
                return {"stopped_at": epoch}
            terms, lr, seconds, seen = _train_epoch(run, cfg, device, train_data, epoch)
            loss = terms.pop("loss", float("nan"))
            val_loss = (evaluate_loss(run.model, val_data, run.inputs, run.model.output_size, device, cfg.batch_size)
                        if val_data else float("nan"))
            row = {"epoch": epoch + 1, "train_loss": loss, "val_loss": val_loss, "lr": lr, "seconds": seconds,
                   "images_per_s": seen / max(seconds, 1e-9)}
            row.update({f"train_{name}": value for name, value in terms.items()})
            if val_data:
                row.update(run.objective.validation(run.model, val_data, run.inputs, device, cfg.batch_size))
            run.history.append(row)
            run.epoch = epoch + 1
            improved = keep_best and run.remember_if_best(val_loss)
            log.info("epoch %d/%d: train loss %.5f, val loss %.5f%s, %.0f img/s, %.1f s%s", epoch + 1, cfg.epochs,
                     row["train_loss"], val_loss, " (best)" if improved else "", row["images_per_s"], seconds,
                     "".join(f"; {k} {v:.4g}" for k, v in row.items() if k.startswith(("train_", "val_"))
                             and k not in ("train_loss", "val_loss")))
            save_checkpoint(files.checkpoint, run.checkpoint())
            if keep_best and cfg.patience and run.epoch - run.best["epoch"] >= cfg.patience:
                log.info("early stop after epoch %d: the validation loss has not fallen below %.5f (epoch %d) "
                         "for %d epochs (train.patience)", run.epoch, run.best["val_loss"], run.best["epoch"],
                         cfg.patience)
                break
    finally:
        train_data.close()
        if val_data:
            val_data.close()
    return _finish(run, files)


#: Training steps between two reads of the loss terms on a GPU. Reading a value back waits for the
#: GPU to finish the step; doing it every step would stop the host from queueing the next batch while
#: the GPU computes. A non-finite term is still refused with its step, at most this many steps late
#: (before the epoch's checkpoint is written, so no checkpoint holds its weights).
SETTLE_EVERY = 25


def settle_interval(device: torch.device) -> int:
    """Steps between reads of the loss terms: :data:`SETTLE_EVERY` on a GPU, every step elsewhere."""
    return SETTLE_EVERY if device.type == "cuda" else 1


def _train_epoch(run: TrainingRun, cfg: TrainConfig, device: torch.device, data: PairedData,
                 epoch: int) -> Tuple[Dict[str, float], float, float, int]:
    """One pass over ``data`` in the seeded order of ``epoch``: (the epoch means of the objective's
    terms, ``loss`` among them; the last learning rate; seconds; images seen)."""
    from tqdm import tqdm

    run.model.train()
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    use_amp = cfg.amp and device.type == "cuda"
    rng = np.random.default_rng([cfg.seed, epoch])
    started, seen = time.perf_counter(), 0
    sums: Dict[str, float] = {}
    lr = learning_rate(cfg, epoch * steps_per_epoch / max(1, total_steps))
    bar = tqdm(total=len(data), desc=f"{run.name} epoch {epoch + 1}/{cfg.epochs}", unit="img",
               disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False)
    interval = settle_interval(device)
    window: List[Tuple[int, float, int, torch.Tensor]] = []  # steps whose terms are not yet read back
    names: List[str] = []

    def settle() -> None:
        """Read the window's terms back in one transfer: refuse a non-finite one (naming its step),
        add them to the epoch's sums, show the last loss."""
        if not window:
            return
        values = torch.stack([v for *_, v in window]).double().cpu().tolist()
        for (k, lr_k, n, _), row in zip(window, values):
            bad = [name for name, v in zip(names, row) if not math.isfinite(v)]
            if bad:
                raise NonFiniteLoss(
                    f"{run.name}: {' and '.join(bad)} became {row[names.index(bad[0])]} at epoch {epoch + 1}, "
                    f"step {k + 1} (lr {lr_k:.2e}); lower train.lr or check the features for extreme values")
            for name, v in zip(names, row):
                sums[name] = sums.get(name, 0.0) + v * n
        window.clear()
        bar.set_postfix(loss=f"{values[-1][names.index('loss')]:.4f}", img_s=f"{seen / (time.perf_counter() - started):.0f}")

    for step, (f, x) in enumerate(data.batches(cfg.batch_size, rng)):
        lr = learning_rate(cfg, (epoch * steps_per_epoch + step) / max(1, total_steps))
        run.set_learning_rate(lr)
        targets = to_targets(x, run.model.output_size, device)
        z = run.inputs(f)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            prediction = run.model(z)
        terms = run.objective(prediction.float(), targets, z)
        loss = terms["loss"]
        names = list(terms)
        window.append((step, lr, len(f), torch.stack([value.detach().float().reshape(()) for value in terms.values()])))
        seen += len(f)
        if len(window) >= interval:
            settle()  # on a CPU every step, before the step is taken; on a GPU without stalling it each step
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        bar.update(len(f))
    settle()
    bar.close()
    return {name: total / max(1, seen) for name, total in sums.items()}, lr, time.perf_counter() - started, seen


def _finish(run: TrainingRun, files: RunFiles) -> Dict[str, Any]:
    """Write the decoder, the CSV log and (autoencoder) the fine-tuned network; drop the checkpoint."""
    if run.best is not None:
        run.restore_best()
        log.info("keeping the weights of epoch %d (validation loss %.5f)%s", run.best["epoch"],
                 run.best["val_loss"], "; no epoch improved on the start" if run.best["epoch"] == 0 else "")
    run.meta["kept_epoch"] = run.best["epoch"] if run.best is not None else run.epoch
    for row in run.history:
        row["kept"] = int(row["epoch"] == run.meta["kept_epoch"])
    if run.encoder is not None and files.encoder is not None:
        torch_files.save_torch({k: v.detach().cpu() for k, v in run.encoder.state_dict().items()}, files.encoder)
        # the fine-tuned weights the decoder's features come from
        run.meta["provenance"]["weights"] = atomic_files.file_sha256(files.encoder)
    torch_files.save_torch({"state_dict": {k: v.cpu() for k, v in run.model.state_dict().items()}, "meta": run.meta},
                     files.decoder)
    with atomic_files.atomic_path(files.log) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(run.history[0]) if run.history else ["epoch"])
            writer.writeheader()
            writer.writerows(run.history)
    files.checkpoint.unlink(missing_ok=True)
    return {"history": run.history, "meta": run.meta}


@torch.no_grad()
def evaluate_loss(model, data: PairedData, inputs, out_size: int, device: torch.device, batch_size: int) -> float:
    """Mean squared error per pixel on ``data``; ``inputs(batch)`` gives the decoder's input."""
    model.eval()
    total, n = 0.0, 0
    for f, x in data.batches(batch_size, None):
        prediction = model(inputs(f)).float()
        total += F.mse_loss(prediction, to_targets(x, out_size, device), reduction="sum").item() / prediction[0].numel()
        n += len(f)
    return total / max(1, n)
