"""The objectives a decoder is trained with: eq. (1) and the losses of Appendix A.

The pixel loss of eq. (1) (:class:`PixelObjective`, the paper's §3) is the default and the interface
of every objective of the training loop (:mod:`preimage.train`). The rest of this module is about
decoders trained in feature space, with and without a learnt image prior (paper Appendix A).

Appendix A of the paper reports preliminary experiments with a second way of training the decoder
f: instead of the image distance of eq. (1), minimise the distance between the features
Φ(f(Φ(x))) of the reconstruction and the features Φ(x) of the original image (as Mahendran &
Vedaldi do per image), and instead of their hand-made image prior learn one with a generative
adversarial network (Goodfellow et al. 2014); Figures 12-13 compare the result with the simple
decoder and with Mahendran & Vedaldi on higher AlexNet layers. Appendix A gives only this idea:
no networks, loss weights or schedule. Everything else here is our choice. The weighted sum of a
feature, an adversarial and an image term follows the structure of the authors' later paper
(Dosovitskiy & Brox 2016, "Generating images with perceptual similarity metrics based on deep
networks"); its weights are not used (its terms are unnormalised sums on other networks).

The three losses of ``decoder.loss`` (per representation; the ``{rep}-feature`` and ``{rep}-gan``
variants of :mod:`preimage.representations` set them for an extra row):

``pixel``
    eq. (1): ``L_pix`` = mean over pixels and batch of ``(x̂ − x)²`` at the decoder's output size
    (:class:`PixelObjective`).
``feature``
    ``L_feat`` = mean over the batch and feature dimensions of ``(s·Φ(up(x̂)) − s·Φ(x))²``.
    ``up`` resizes the decoder's output bilinearly to the region Φ sees (as evaluation does, §5.1);
    ``s`` is the decoder's feature scale (1 / RMS of the training features, :mod:`preimage.train`),
    so ``L_feat`` is the squared feature error relative to the typical feature energy: about the
    square of the evaluation's feature error ‖Φ(x̂) − Φ(x)‖/‖Φ(x)‖, the same scale for every
    representation. Φ(x) is read from the feature cache; Φ(up(x̂)) is computed with the frozen,
    differentiable representation (HOG, AlexNet/CaffeNet layers, ``torchvision:``/
    ``efficientnet_lite0:`` nodes: classes that declare ``differentiable = True``). SIFT and LBP are
    refused (:class:`NotDifferentiable`).
``gan``
    ``w_feat·L_feat + w_adv·L_adv + w_pix·L_pix`` with ``L_adv = −log D(x̂)`` (the non-saturating
    generator loss of Goodfellow et al.) from a discriminator D trained alongside on
    ``−log D(x) − log(1 − D(x̂))`` (x: the training targets at the decoder's output size).

Our choices for ``gan`` (``decoder.gan.*``; the reasons for the defaults, :class:`GanSettings`):

* D (:class:`Discriminator`): stride-2 4×4 convolutions with leaky ReLU 0.2 (the decoders'
  slope) from the decoder's output size down to 4×4 or less, channels 64, 128, 256, 512 (then 512)
  × the decoder's width, a 3×3 convolution, global average pooling and one linear unit (the logit);
  it sees only the image (no features), so it judges naturalness, not consistency, which the
  feature term enforces.
* D is trained with Adam (β1 0.5: the usual GAN choice) at ``discriminator_lr`` × the decoder's
  learning rate, on the decoder's learning-rate schedule; one D step before every decoder step, on
  the same batch (the reconstruction detached).
* Balance: D skips its step while it wins by far, i.e. while its loss on the current batch is
  below ``pause_ratio`` × the generator's adversarial loss of the previous step (an overpowering
  D gives the decoder no useful gradient). Deterministic, so a resumed run takes the same steps.

Where the decoders start (``decoder.init``): from a random initialisation like the simple decoder, or
from the trained pixel decoder of the same representation, trained on with the new loss (as
super-resolution GANs start from their network trained on the image distance; much cheaper when
Φ is a network whose backward pass dominates the step).

Everything a run needs to resume to the same weights (D, its optimiser, the balance state) is in
:meth:`GanObjective.state_dict`, saved in the per-epoch checkpoint by :mod:`preimage.train` with the
decoder, its optimiser and the RNG states.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from preimage import metrics
from preimage.decoders import scale_channels

__all__ = ["LOSSES", "Discriminator", "FeatureObjective", "GanObjective", "GanSettings", "NotDifferentiable",
           "PixelObjective", "build_objective", "differentiable_representation", "require_differentiable"]

#: The values of ``decoder.loss``.
LOSSES = ("pixel", "feature", "gan")


class NotDifferentiable(ValueError):
    """A feature-space loss was asked for a representation whose features pass no gradient to the image."""


def require_differentiable(name: str, loss: str = "feature") -> None:
    """Raise :class:`NotDifferentiable` unless the class of representation ``name`` declares
    ``differentiable = True`` (looked up without creating it)."""
    from preimage.features import lookup

    cls = lookup(name)
    if not getattr(cls, "differentiable", False):
        raise NotDifferentiable(
            f"{name}: the {loss!r} loss needs gradients of the features with respect to the image, and "
            f"{cls.__name__} is not differentiable here; use it with decoder.loss pixel (feature-space losses work for "
            "hog, the AlexNet layers, torchvision:<model>:<node> and efficientnet_lite0:<node>)")


def differentiable_representation(name: str, params: Mapping[str, Any], device: torch.device):
    """The representation ``name`` created with ``params`` on ``device``, frozen (its network in eval
    mode, no parameter gradients): gradients flow to the image only."""
    from preimage.features import create

    require_differentiable(name)
    representation = create(name, **dict(params)).to(device)
    for module in ("net", "model"):
        net = getattr(representation, module, None)
        if isinstance(net, nn.Module):
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
    return representation


# --------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class GanSettings:
    """The weights and discriminator settings of the ``gan`` loss (``decoder.gan.*``).

    Defaults (ours; Appendix A gives none), with L_feat and L_pix normalised as in the module
    docstring so that one set can serve every representation:

    * ``feature_weight`` 1: the data term of Appendix A, the reference scale.
    * ``adversarial_weight`` 0.1 and ``pixel_weight`` 1: chosen on the embedded default
      (``efficientnet_lite0:pool`` on its 64-px crops of seven photographs, tested on crops of two
      others; 3 epochs from the pixel decoder, ``decoder.init: pixel``).
      With 0.01 and 0.1 the discriminator won outright (mean D(x̂) 0.11 in the last epoch), the
      pixel term was too weak to hold brightness (training MSE 0.115, reconstructions drift dark)
      and the test image error rose to 1.14; with 0.1 and 1 D stayed undecided (mean D(x̂) 0.38,
      D(x) 0.54), the training MSE stayed at 0.068 and the image error at 1.04, with a slightly
      lower feature error (1.033 against 1.039) and the same sharpness (0.10; the pixel decoder:
      0.013). The pixel term is still small: about an eighth of the feature term at the end of
      training, so blur is not rewarded again (the authors' later paper also keeps a small image
      term).
    * ``discriminator_lr`` 1 (× ``train.lr``), ``pause_ratio`` 0.1: see the module docstring.
    """

    feature_weight: float = 1.0
    adversarial_weight: float = 0.1
    pixel_weight: float = 1.0
    discriminator_lr: float = 1.0
    pause_ratio: float = 0.1

    @classmethod
    def from_mapping(cls, values: Optional[Mapping[str, Any]]) -> "GanSettings":
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"unknown decoder.gan parameter(s): {', '.join(sorted(unknown))}")
        return cls(**{k: float(v) for k, v in values.items()})


# --------------------------------------------------------------------------- discriminator


class Discriminator(nn.Module):
    """Judges whether a ``size``-px image in [0, 1] is a training image (logit > 0) or a reconstruction."""

    def __init__(self, size: int, width: float = 1.0) -> None:
        super().__init__()
        if size < 4:
            raise ValueError(f"the discriminator needs images of at least 4 px, got {size}")
        layers, cin, side, i = [], 3, int(size), 0
        while side > 4:
            cout = scale_channels(min(64 * 2**i, 512), width)
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            cin, side, i = cout, (side + 1) // 2, i + 1
        layers += [nn.Conv2d(cin, cin, 3, padding=1), nn.LeakyReLU(0.2)]
        self.size, self.width = int(size), float(width)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, size, size)`` → logits ``(N,)``."""
        h = self.body(images * 2 - 1)
        return self.head(h.mean(dim=(2, 3))).squeeze(1)


# --------------------------------------------------------------------------- objectives


class PixelObjective:
    """Eq. (1), the default objective; the interface of every objective of the training loop.

    ``objective(prediction, targets, inputs)`` gets the decoder's float output, the targets at its
    output size and the decoder's inputs (scaled features), and returns named scalar tensors:
    ``loss`` (minimised by the decoder's optimiser) and any further terms to log (``pixel``,
    ``feature``, ``d_loss``, …), each averaged per epoch into ``train_<name>``. An objective with
    its own networks (the GAN's discriminator) steps them inside the call and keeps them in
    ``state_dict`` (saved in the checkpoint); ``validation`` adds ``val_*`` columns.
    """

    kind = "pixel"

    def __call__(self, prediction: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"loss": F.mse_loss(prediction, targets)}

    def set_learning_rate(self, lr: float) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def describe(self) -> str:
        return "pixel loss (eq. 1)"

    def settings(self) -> Dict[str, Any]:
        return {"loss": self.kind}

    def validation(self, model, data, inputs, device: torch.device, batch_size: int) -> Dict[str, float]:
        return {}


class FeatureObjective(PixelObjective):
    """The ``feature`` loss: L_feat only (see the module docstring). Also the base of :class:`GanObjective`.
    It has no state of its own: the learning-rate and state hooks are :class:`PixelObjective`'s.

    ``representation`` is the frozen Φ (:func:`differentiable_representation`), ``image_size`` the
    side of the region it sees (the decoder's ``image_size``), ``feature_scale`` the decoder's s.
    """

    kind = "feature"

    def __init__(self, representation, image_size: int, feature_scale: float, device: torch.device,
                 use_amp: bool = False) -> None:
        self.representation = representation
        self.image_size = int(image_size)
        self.feature_scale = float(feature_scale)
        self.device = device
        self.use_amp = bool(use_amp)

    def _autocast(self):
        return (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.use_amp else nullcontext())

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """s·Φ(up(images)), flattened to ``(N, D)`` in float32 (differentiable)."""
        up = metrics.upsample_to(images, self.image_size)
        with self._autocast():
            out = self.representation(up)
        return out.float().flatten(1) * self.feature_scale

    def feature_loss(self, prediction: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """L_feat of a batch: ``inputs`` are the decoder's inputs, s·Φ(x) (the scaled cached features)."""
        return F.mse_loss(self.features(prediction), inputs.float().flatten(1))

    def __call__(self, prediction: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        loss = self.feature_loss(prediction, inputs)
        return {"loss": loss, "feature": loss.detach(), "pixel": F.mse_loss(prediction.detach(), targets)}

    def describe(self) -> str:
        return "feature-space loss (Appendix A)"

    @torch.no_grad()
    def validation(self, model, data, inputs, device: torch.device, batch_size: int) -> Dict[str, float]:
        """``val_feature``: L_feat on the validation pairs (the decoder in eval mode)."""
        model.eval()
        total, n = 0.0, 0
        for f, _ in data.batches(batch_size, None):
            z = inputs(f)
            with self._autocast():
                prediction = model(z)
            total += self.feature_loss(prediction.float(), z).item() * len(f)
            n += len(f)
        return {"val_feature": total / max(1, n)}


class GanObjective(FeatureObjective):
    """The ``gan`` loss: feature + adversarial + pixel terms and the discriminator trained alongside.

    Parameters
    ----------
    representation : preimage.features.base.Representation
        The frozen, differentiable Φ (:func:`differentiable_representation`) of the feature term.
    image_size : int
        Side in pixels of the region Φ sees (the decoder's ``image_size``); reconstructions are
        upsampled to it before Φ.
    feature_scale : float
        The decoder's feature scale s: the feature term compares s·Φ(x̂) with the decoder's inputs s·Φ(x).
    device : torch.device
        Where Φ and the discriminator run.
    output_size : int
        Side in pixels of the decoder's reconstructions, the discriminator's input.
    width : float
        Channel multiplier of the discriminator (``decoder.width``, 1 = full width).
    lr : float
        The decoder's learning rate (``train.lr``); the discriminator's is ``lr`` × ``settings.discriminator_lr``.
    betas : tuple of float
        The decoder's Adam betas; the discriminator uses (0.5, ``betas[1]``) (ours, the usual GAN choice).
    settings : GanSettings
        Loss weights and the discriminator's pause rule (``decoder.gan``; ours, Appendix A gives none).
    use_amp : bool, default False
        Compute Φ and the discriminator in bfloat16 autocast.
    """

    kind = "gan"

    def __init__(self, representation, image_size: int, feature_scale: float, device: torch.device,
                 output_size: int, width: float, lr: float, betas, settings: GanSettings,
                 use_amp: bool = False) -> None:
        super().__init__(representation, image_size, feature_scale, device, use_amp)
        self.gan = settings
        self.discriminator = Discriminator(output_size, width).to(device)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr * settings.discriminator_lr,
                                          betas=(0.5, float(betas[1])))
        self.last_adversarial = 0.0  # the decoder's adversarial loss of the previous step (none yet: D steps)

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * self.gan.discriminator_lr

    def _discriminate(self, images: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.discriminator(images).float()

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``−log D(real) − log(1 − D(fake))`` (mean over the batch) and D's mean probabilities."""
        real_logits, fake_logits = self._discriminate(real), self._discriminate(fake)
        loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        return {"d_loss": loss, "d_real": torch.sigmoid(real_logits).mean().detach(),
                "d_fake": torch.sigmoid(fake_logits).mean().detach()}

    def __call__(self, prediction: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One discriminator step (unless paused), then the decoder's loss terms (``loss`` is their
        weighted sum, the one the caller minimises)."""
        self.discriminator.requires_grad_(True)
        d = self.discriminator_loss(targets, prediction.detach())
        step = bool(d["d_loss"].item() >= self.gan.pause_ratio * self.last_adversarial)
        if step and torch.isfinite(d["d_loss"]):
            self.optimizer.zero_grad(set_to_none=True)
            d["d_loss"].backward()
            self.optimizer.step()
        self.discriminator.requires_grad_(False)  # gradients of the decoder's loss reach the image only
        adversarial = F.softplus(-self._discriminate(prediction)).mean()
        feature = self.feature_loss(prediction, inputs)
        pixel = F.mse_loss(prediction, targets)
        g = self.gan
        loss = g.feature_weight * feature + g.adversarial_weight * adversarial + g.pixel_weight * pixel
        self.last_adversarial = float(adversarial.item())
        return {"loss": loss, "feature": feature.detach(), "adversarial": adversarial.detach(),
                "pixel": pixel.detach(), "d_loss": d["d_loss"].detach(), "d_real": d["d_real"],
                "d_fake": d["d_fake"], "d_steps": torch.tensor(float(step))}

    def state_dict(self) -> Dict[str, Any]:
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict(),
                "last_adversarial": self.last_adversarial}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.last_adversarial = float(state["last_adversarial"])

    def describe(self) -> str:
        return "feature + adversarial loss (Appendix A)"

    def settings(self) -> Dict[str, Any]:
        return {"loss": self.kind, **dataclasses.asdict(self.gan)}


def build_objective(loss: Optional[Mapping[str, Any]], *, image_size: int, output_size: int, feature_scale: float,
                    width: float, lr: float, betas, device: torch.device, use_amp: bool):
    """The objective of ``loss`` (``{"kind": pixel|feature|gan, "representation": {"name", "params"},
    "gan": {…}}``, what :meth:`preimage.representations.Catalog.loss_params` gives), or None for
    ``pixel`` (the caller's default). The representation is created here, frozen, on ``device``,
    and must see ``image_size`` pixels of the stored images (the feature cache's ``target_size``).

    Parameters
    ----------
    loss : mapping, optional
        ``{"kind": pixel|feature|gan, "representation": {"name", "params"}, "gan": {…}}``; None: pixel.
    image_size : int
        Side in pixels of the region Φ sees (the feature cache's ``target_size``).
    output_size : int
        Side in pixels of the decoder's reconstructions (the discriminator's input, ``gan``).
    feature_scale : float
        The decoder's feature scale s (the feature term compares s·Φ(x̂) with s·Φ(x)).
    width : float
        Channel multiplier of the discriminator (``decoder.width``).
    lr : float
        The decoder's learning rate (``train.lr``), the base of the discriminator's.
    betas : tuple of float
        The decoder's Adam betas (:class:`GanObjective`).
    device : torch.device
        Where Φ (and the discriminator) run.
    use_amp : bool
        Compute Φ and the discriminator in bfloat16 autocast.
    """
    kind = (loss or {}).get("kind", "pixel")
    if kind not in LOSSES:
        raise ValueError(f"decoder.loss: unknown loss {kind!r}; known: {', '.join(LOSSES)}")
    if kind == "pixel":
        return None
    spec = loss.get("representation") or {}
    if not spec.get("name"):
        raise ValueError(f"the {kind!r} loss needs the representation (name and parameters) to compute features with")
    require_differentiable(spec["name"], kind)
    representation = differentiable_representation(spec["name"], spec.get("params") or {}, device)
    if kind == "feature":
        return FeatureObjective(representation, image_size, feature_scale, device, use_amp)
    return GanObjective(representation, image_size, feature_scale, device, output_size, width, lr, betas,
                        GanSettings.from_mapping(loss.get("gan")), use_amp)

