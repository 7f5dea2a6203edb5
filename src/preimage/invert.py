"""Apply a trained decoder to new images or to stored features (``preimage invert``).

The workflow trains one decoder per representation Φ (paper §3) and evaluates it on held-out
test images (§5.1). This module applies a trained ``decoder.pt`` outside the workflow:

* :func:`invert_images`: image files are prepared as the data stage prepares its images (decoded
  to RGB, shorter side resized to S, centre S×S crop: :func:`preimage.data.resize_center_crop`,
  paper §4), Φ is recreated from the decoder's provenance (:attr:`preimage.decoding.TrainedDecoder.provenance`:
  representation, parameters, weights checked by sha256) and computed as the feature stage
  computes it (rounded to the cache's storage type), and the features are decoded;
* :func:`invert_features`: rows of a feature cache (``results/features/<rep>/<split>.h5``) are
  decoded directly, after checking that they are the decoder's representation (name, weights,
  shape).

Each reconstruction is written as a PNG named after its input (the stem of its file name, and for
a feature cache's row the row's number: never a folder from the input's name, and every path is
checked to lie in the output folder), with a sheet of the inputs above their reconstructions.
With ``error=True`` the normalised error of §5.1 (‖x − f(Φ(x))‖ / N,
:func:`preimage.metrics.normalised_error`) is computed against the region the decoder reconstructs
(the centre crop Φ sees), with PSNR, SSIM and a bootstrap interval of the mean
(:func:`preimage.metrics.error_summary`), exactly as :mod:`preimage.evaluate` computes them.

The normaliser N (our choice of default, so that numbers are comparable with the workflow's):
``auto`` takes the one :mod:`preimage.evaluate` used (the mean distance between the test images,
column ``normaliser`` of the ``error.csv`` beside the decoder), so the error is on the same scale
as evaluate's table; without that file, the mean distance between the inputs themselves (at least
two images). ``inputs``, a number, or the path of an ``error.csv`` choose explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from preimage import atomic_files, image_store, metrics
from preimage.decoding import TrainedDecoder, WeightsMismatch
from preimage.features.cache import FeatureStore

__all__ = ["InvertError", "InvertResult", "invert_features", "invert_images", "read_image", "resolve_normaliser",
           "output_tag"]

#: Columns of the sheet (pairs of rows: inputs above reconstructions).
SHEET_COLUMNS = 8


class InvertError(ValueError):
    """A problem with what ``preimage invert`` was given (unreadable image, wrong features …)."""


@dataclasses.dataclass
class InvertResult:
    """What one inversion wrote and measured."""

    outputs: List[Path]  #: the reconstruction PNGs, in input order
    sheet: Optional[Path]  #: inputs above reconstructions (PNG)
    names: List[str]  #: the inputs (file paths, or ``<features>#<row>``)
    errors: Optional[pd.DataFrame] = None  #: per image: input, output, error, psnr, ssim
    summary: Optional[Dict[str, Any]] = None  #: mean error, bootstrap CI, normaliser and its source
    reference: Optional[Dict[str, Dict[str, Any]]] = None  #: evaluate's rows (method → row), when found
    errors_csv: Optional[Path] = None


def read_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """The image file ``path`` as the data stage stores images: uint8 (3, S, S), RGB, shorter side
    resized to ``size`` and centre-cropped. An unreadable file is an :class:`InvertError` naming it."""
    from preimage.data import BadImage, open_rgb, resize_center_crop

    if not Path(path).is_file():
        raise InvertError(f"cannot read image {path}: no such file")
    try:
        return resize_center_crop(open_rgb(path), int(size))
    except BadImage as err:
        raise InvertError(f"cannot read image {path}: {err}") from None


def output_tag(decoder: TrainedDecoder) -> str:
    """Suffix of the files written for ``decoder``: its folder's name for the workflow's
    ``results/<rep>/decoder.pt`` (``conv1``), else the file's stem."""
    path = decoder.path
    return path.parent.name if path.name == "decoder.pt" and path.parent.name else path.stem


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True,
                disable=not enabled or not sys.stderr.isatty() or total < 2)


# --------------------------------------------------------------------------- normaliser


def evaluate_rows(path: Path, eval_size: int) -> Optional[Dict[str, Dict[str, Any]]]:
    """The rows (method → row) of evaluate's ``error.csv`` at ``path``, if it exists and was
    computed at ``eval_size`` px (the normaliser depends on the image size)."""
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    if not {"method", "normaliser", "error"} <= set(table.columns) or not len(table):
        raise InvertError(f"{path} is not an error table written by evaluate (no method, error and normaliser)")
    if "eval_size" in table.columns and int(table["eval_size"].iloc[0]) != int(eval_size):
        return None
    return {str(row["method"]): row.to_dict() for _, row in table.iterrows()}


def resolve_normaliser(spec: Optional[str], decoder: TrainedDecoder,
                       targets: Optional[np.ndarray]) -> Tuple[float, str, Optional[Dict[str, Dict[str, Any]]]]:
    """``(N, where it comes from, evaluate's rows)`` for ``spec`` (module docstring); the rows of
    evaluate's table (method → row) only when N is the one evaluate used, else None:
    ``auto`` (None), ``inputs``, a number, or the path of an ``error.csv``. ``targets`` are the
    uint8 regions the errors are computed on (needed for ``inputs``)."""
    spec = "auto" if spec is None else str(spec)
    beside = decoder.path.parent / "error.csv"
    if spec == "auto":
        rows = evaluate_rows(beside, decoder.image_size)
        if rows is not None:
            return float(next(iter(rows.values()))["normaliser"]), f"evaluate's test images ({beside})", rows
        spec = "inputs"
    if spec == "inputs":
        if targets is None or len(targets) < 2:
            raise InvertError("the normalised error needs the mean distance between at least two images: give two or "
                              "more images, or --normaliser (a number, or evaluate's error.csv)")
        value = metrics.mean_pairwise_distance(image_store.to_float(targets))
        return value, f"mean distance between the {len(targets)} inputs", None
    try:
        value = float(spec)
    except ValueError:
        path = Path(spec)
        if not path.is_file():
            raise InvertError(f"--normaliser {spec!r} is neither auto, inputs, a number nor an error.csv") from None
        rows = evaluate_rows(path, decoder.image_size)
        if rows is None:
            raise InvertError(f"{path} was computed at another image size than the {decoder.image_size} px "
                              f"{decoder.path} reconstructs")
        return float(next(iter(rows.values()))["normaliser"]), f"evaluate's test images ({path})", rows
    if not value > 0 or not math.isfinite(value):
        raise InvertError(f"--normaliser must be positive, got {spec}")
    return value, "given", None


# --------------------------------------------------------------------------- writing


def _write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_files.atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(tmp, format="PNG")


def _output_paths(sources: Sequence[Tuple[str, Optional[int]]], out_dir: Optional[Path], tag: str) -> List[Path]:
    """``<stem>_<tag>.png`` per ``(input file, row)`` in ``out_dir`` (or beside each input), made
    unique (``<stem>-2_<tag>.png``); the stem is the input file's stem, followed by the row
    (``_00012``) for a row of a feature cache.

    Only the file name of an input is ever used, never a folder in it (a name such as
    ``dir#/../../x.png`` stays in the folder), and every path is checked to lie in its folder
    (:func:`_confined`).
    """
    taken: set = set()
    paths = []
    for source, row in sources:
        folder = out_dir if out_dir is not None else Path(source).parent
        stem = Path(source).stem + ("" if row is None else f"_{_row_index(row):05d}")
        path, k = folder / f"{stem}_{tag}.png", 1
        while path in taken:
            k += 1
            path = folder / f"{stem}-{k}_{tag}.png"
        taken.add(path)
        paths.append(_confined(path, folder))
    return paths


def _row_index(row: Any) -> int:
    if not isinstance(row, (int, np.integer)) or isinstance(row, bool) or row < 0:
        raise InvertError(f"row {row!r} is not a row index")
    return int(row)


def _confined(path: Path, folder: Path) -> Path:
    """``path``, after checking that it names a file directly inside ``folder`` (after resolving
    ``..`` and links of the folders above it): nothing is ever written elsewhere."""
    inside = os.path.realpath(path.parent) == os.path.realpath(folder) and path.name not in ("", ".", "..")
    if not inside or os.sep in path.name or (os.altsep and os.altsep in path.name):
        raise InvertError(f"refusing to write {path}: it is not inside {folder}")
    return path


def _check_output_folder(folder: Optional[Path]) -> None:
    """An :class:`InvertError` naming ``-o`` when it (or a folder above it) exists but is no
    folder: found before anything is computed or written."""
    if folder is None:
        return
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            if not candidate.is_dir():
                raise InvertError(f"output folder {folder}: {candidate} exists and is not a folder")
            return


def write_sheet(inputs: Optional[np.ndarray], reconstructions: np.ndarray, path: Path, title: str,
                columns: int = SHEET_COLUMNS) -> Path:
    """Inputs above their reconstructions, ``columns`` per row pair (uint8 (n, 3, S, S) each)."""
    from preimage.plotting import image_grid

    rows = []
    for start in range(0, len(reconstructions), columns):
        if inputs is not None:
            rows.append(("input", inputs[start:start + columns]))
        rows.append(("reconstruction", reconstructions[start:start + columns]))
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, path, title=title)
    return path


class _Collector:
    """Writes reconstructions as they come and keeps what the sheet and the errors need."""

    def __init__(self, decoder: TrainedDecoder, names: List[str], outputs: List[Path], error: bool,
                 keep_targets: bool, sheet_max: int) -> None:
        self.decoder, self.names, self.outputs, self.error = decoder, names, outputs, error
        self.keep_targets, self.sheet_max = keep_targets, sheet_max
        self.distances: List[np.ndarray] = []
        self.psnr: List[np.ndarray] = []
        self.ssim: List[np.ndarray] = []
        self.targets: List[np.ndarray] = []
        self.shown_inputs: List[np.ndarray] = []
        self.shown_recon: List[np.ndarray] = []
        self.done = 0

    def add(self, recon: torch.Tensor, targets: Optional[torch.Tensor]) -> None:
        images = image_store.to_uint8(recon)
        for i, image in enumerate(images):
            _write_png(image, self.outputs[self.done + i])
        room = max(0, self.sheet_max - sum(len(r) for r in self.shown_recon))
        self.shown_recon.append(images[:room])
        if targets is not None:
            truth = image_store.to_uint8(targets)
            self.shown_inputs.append(truth[:room])
            if self.keep_targets:
                self.targets.append(truth)
            if self.error:
                self.distances.append(metrics.normalised_error(recon, targets, 1.0))
                self.psnr.append(metrics.psnr(recon, targets))
                self.ssim.append(metrics.ssim(recon, targets))
        self.done += len(images)

    def finish(self, sheet: Optional[Path], normaliser: Optional[str], seed: int) -> InvertResult:
        shown = np.concatenate(self.shown_recon)
        inputs = np.concatenate(self.shown_inputs) if self.shown_inputs else None
        if sheet is not None:
            write_sheet(inputs, shown, sheet, f"{self.decoder.label}: inputs above reconstructions")
        result = InvertResult(outputs=list(self.outputs), sheet=sheet, names=list(self.names))
        if not self.error:
            return result
        targets = np.concatenate(self.targets) if self.targets else None
        value, source, rows = resolve_normaliser(normaliser, self.decoder, targets)
        errors = np.concatenate(self.distances) / value
        result.errors = pd.DataFrame({"input": self.names, "output": [str(p) for p in self.outputs], "error": errors,
                                      "psnr": np.concatenate(self.psnr), "ssim": np.concatenate(self.ssim)})
        result.summary = metrics.error_summary(errors, seed, count_key="n", normaliser=value, normaliser_source=source,
                                               eval_size=self.decoder.image_size)
        result.reference = rows
        return result


def _write_errors(result: InvertResult, folder: Path, tag: str) -> None:
    if result.errors is not None:
        result.errors_csv = _confined(folder / f"errors_{tag}.csv", folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_files.write_csv(result.errors, result.errors_csv)


# --------------------------------------------------------------------------- images


def _resolve_input(name: str) -> str:
    """An image file, or a photograph inside a package named as the builtin data source names them
    (``skimage:camera.png``, ``matplotlib:grace_hopper.jpg``: :func:`preimage.data.resolve_builtin_photo`)."""
    from preimage.data import DataError, resolve_builtin_photo

    if Path(name).exists() or name.partition(":")[0] not in ("skimage", "matplotlib"):
        return name
    try:
        return os.fspath(resolve_builtin_photo(name))
    except DataError as err:
        raise InvertError(f"cannot read image {name}: {err}") from None


def _check_readable(path: str) -> None:
    """An :class:`InvertError` naming ``path`` unless it is a file whose header is an image's."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise InvertError(f"cannot read image {path}: no such file")
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InvertError(f"cannot read image {path}: {type(err).__name__}: {err}") from None


def _needs_targets(decoder: TrainedDecoder, error: bool, normaliser: Optional[str]) -> bool:
    """Whether the normaliser is the inputs' mean distance (so every input must be kept)."""
    if not error:
        return False
    if normaliser in (None, "auto"):
        return evaluate_rows(decoder.path.parent / "error.csv", decoder.image_size) is None
    return normaliser == "inputs"


def _batches(items: Sequence[Any], size: int) -> Iterator[Tuple[int, Sequence[Any]]]:
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


def invert_images(decoder: TrainedDecoder, paths: Sequence[str | os.PathLike], out_dir: Optional[str | os.PathLike] = None,
                  weights: Optional[str | os.PathLike] = None, batch_size: int = 16, error: bool = False,
                  normaliser: Optional[str] = None, sheet: bool = True, sheet_max: int = 64, progress: bool = True,
                  seed: int = 0) -> InvertResult:
    """Reconstruct the image files ``paths`` with ``decoder`` (module docstring); a path may also
    name a photograph inside scikit-image or matplotlib (``skimage:camera.png``).

    Writes ``<stem>_<tag>.png`` per image (:func:`output_tag`) into ``out_dir`` (default: beside
    each input), ``sheet_<tag>.png`` (the first ``sheet_max`` images) and, with ``error``,
    ``errors_<tag>.csv`` into ``out_dir`` (default: the first input's folder).

    Parameters
    ----------
    decoder : TrainedDecoder
        The trained decoder; its provenance says how Φ is computed anew.
    paths : sequence of str or os.PathLike
        Image files (or ``skimage:<file>`` / ``matplotlib:<file>``), prepared as the data stage does.
    out_dir : str or os.PathLike, optional
        Output folder (None: beside each input; required for photographs inside packages).
    weights : str or os.PathLike, optional
        A weights file for Φ instead of the recorded one (its identity must match the record).
    batch_size : int, default 16
        Images decoded at a time.
    error : bool, default False
        Also compute the normalised error of §5.1 against the inputs (and write ``errors_<tag>.csv``).
    normaliser : str, optional
        The error's normaliser N: ``auto`` (None; the ``error.csv`` beside the decoder, else the
        inputs), ``inputs``, a number, or the path of an ``error.csv`` (:func:`resolve_normaliser`).
    sheet : bool, default True
        Write the contact sheet ``sheet_<tag>.png``.
    sheet_max : int, default 64
        Images on the sheet (the first ones).
    progress : bool, default True
        Show a progress bar (on a terminal).
    seed : int, default 0
        Seed of the bootstrap interval of the error.
    """
    if not paths:
        raise InvertError("no images given")
    names = [os.fspath(p) for p in paths]
    files = [_resolve_input(name) for name in names]
    if out_dir is None and files != names:
        raise InvertError("photos inside packages (skimage:…, matplotlib:…) need an output folder (-o)")
    _check_output_folder(Path(out_dir) if out_dir is not None else None)
    record = decoder.provenance
    size = int(record["image_size"])
    for file in files:  # every file is an image before anything is computed
        _check_readable(file)
    representation = decoder.representation(weights)
    tag = output_tag(decoder)
    folder = Path(out_dir) if out_dir is not None else None
    outputs = _output_paths([(file, None) for file in files], folder, tag)
    collector = _Collector(decoder, names, outputs, error, _needs_targets(decoder, error, normaliser), sheet_max)
    with _progress(len(names), f"invert {tag}", progress) as bar:
        for _, chunk in _batches(files, batch_size):
            images = np.stack([read_image(file, size) for file in chunk])
            recon = decoder(decoder.features(representation, images), batch_size=batch_size)
            collector.add(recon, decoder.targets(images))
            bar.update(len(chunk))
    home = folder if folder is not None else Path(files[0]).parent
    result = collector.finish(_confined(home / f"sheet_{tag}.png", home) if sheet else None, normaliser, seed)
    _write_errors(result, home, tag)
    return result


# --------------------------------------------------------------------------- stored features


def _check_cache(decoder: TrainedDecoder, features: FeatureStore) -> None:
    """The cache holds the decoder's representation: same name and weights (when the decoder
    records them) and the shape the decoder takes."""
    attrs = features.attrs
    decoder.shape_check(tuple(features.shape), f"{features.path} holds")
    record = decoder.provenance
    if attrs.get("representation") != record["representation"]:
        raise InvertError(f"{features.path} holds {attrs.get('representation')} features, but {decoder.path} was "
                          f"trained on {record['representation']} features")
    identity = attrs.get("identity") if isinstance(attrs.get("identity"), dict) else {}
    expected, found = record.get("weights"), identity.get("weights")
    if expected != found:
        raise WeightsMismatch(f"{features.path} was computed with weights {found}, but {decoder.path} was trained on "
                              f"features of weights {expected}")


def invert_features(decoder: TrainedDecoder, features_path: str | os.PathLike, out_dir: str | os.PathLike,
                    images_path: Optional[str | os.PathLike] = None, limit: Optional[int] = None,
                    batch_size: int = 64, error: bool = False, normaliser: Optional[str] = None, sheet: bool = True,
                    sheet_max: int = 64, progress: bool = True, seed: int = 0) -> InvertResult:
    """Decode the first ``limit`` rows (all by default) of the feature cache ``features_path``.

    The inputs shown on the sheet and compared with (``error``) are the cache's images: the
    image store ``images_path``, by default the one the cache records, when it exists (its sha256
    must match the cache's record). Writes ``<cache stem>_<row>_<tag>.png`` per row,
    ``sheet_<tag>.png`` and ``errors_<tag>.csv`` into ``out_dir``.

    Parameters
    ----------
    decoder : TrainedDecoder
        The trained decoder; the cache must hold its representation, weights and feature shape.
    features_path : str or os.PathLike
        A feature cache (or recompute recipe) written by the feature stage.
    out_dir : str or os.PathLike
        Output folder.
    images_path : str or os.PathLike, optional
        The cache's image store (None: the one the cache records, when it exists).
    limit : int, optional
        Decode only the first this many rows (None: all).
    batch_size : int, default 64
        Images decoded at a time.
    error : bool, default False
        Also compute the normalised error of §5.1 against the inputs (and write ``errors_<tag>.csv``).
    normaliser : str, optional
        The error's normaliser N: ``auto`` (None; the ``error.csv`` beside the decoder, else the
        inputs), ``inputs``, a number, or the path of an ``error.csv`` (:func:`resolve_normaliser`).
    sheet : bool, default True
        Write the contact sheet ``sheet_<tag>.png``.
    sheet_max : int, default 64
        Images on the sheet (the first ones).
    progress : bool, default True
        Show a progress bar (on a terminal).
    seed : int, default 0
        Seed of the bootstrap interval of the error.
    """
    path = Path(features_path)
    if not path.is_file():
        raise InvertError(f"cannot read features {path}: no such file")
    out = Path(out_dir)
    _check_output_folder(out)
    tag = output_tag(decoder)
    with FeatureStore(path) as features:
        _check_cache(decoder, features)
        count = len(features) if limit is None else min(int(limit), len(features))
        if count < 1:
            raise InvertError(f"{path} holds no features to decode")
        images = _cache_images(features, images_path, needed=error)
        names = [f"{path}#{i:05d}" for i in range(count)]
        outputs = _output_paths([(os.fspath(path), i) for i in range(count)], out, tag)
        collector = _Collector(decoder, names, outputs, error, _needs_targets(decoder, error, normaliser), sheet_max)
        try:
            with _progress(count, f"invert {tag}", progress) as bar:
                for start in range(0, count, batch_size):
                    stop = min(start + batch_size, count)
                    recon = decoder.decode(features.read(start, stop))
                    truth = decoder.targets(images.read(start, stop)) if images is not None else None
                    collector.add(recon, truth)
                    bar.update(stop - start)
        finally:
            if images is not None:
                images.close()
    result = collector.finish(_confined(out / f"sheet_{tag}.png", out) if sheet else None, normaliser, seed)
    _write_errors(result, out, tag)
    return result


def _cache_images(features: FeatureStore, images_path: Optional[str | os.PathLike],
                  needed: bool) -> Optional[image_store.ImageStore]:
    """The image store a feature cache was computed from (checked by sha256), or None when it is
    not at hand and not ``needed``."""
    recorded = features.attrs.get("images")
    candidate = Path(images_path) if images_path is not None else (Path(recorded) if recorded else None)
    if candidate is None or not candidate.is_file():
        if needed or images_path is not None:
            raise InvertError(f"the errors of {features.path} need the images it was computed from "
                              f"({recorded or 'not recorded'}): pass --images <image store>"
                              if candidate is None or images_path is None
                              else f"cannot read image store {candidate}: no such file")
        return None
    expected = features.attrs.get("images_sha256")
    if expected and image_store.image_store_digest(candidate) != expected:
        raise InvertError(f"{features.path} was computed from another image store than {candidate} "
                          "(sha256 differs)")
    images = image_store.ImageStore(candidate)
    if len(images) < len(features):
        images.close()
        raise InvertError(f"{candidate} holds {len(images)} images but {features.path} {len(features)} rows")
    return images
