"""Image subset extraction into the HDF5 image store (first stage of the DAG).

The paper trains on ImageNet (ILSVRC2012 train) and tests on images from the validation set,
preprocessed by resizing the shorter side to S and taking the central S×S crop (§4: 256 px;
AlexNet then sees 227×227 centre crops). This module builds such a subset, deterministically
from a seed, from one of three sources:

``imagenet``
    An ILSVRC2012-style root: ``train/<wnid>/*.JPEG``; ``val/<wnid>/*.JPEG`` or a flat ``val/``
    with a labels file (``data.val_labels``: Kaggle's ``LOC_val_solution.csv`` or a text file
    of ``<file name> <wnid>`` lines). Training images come from ``train``, test images from ``val``.
``folder``
    Any folder of images, with class subfolders or flat (one class); each class is shuffled with
    the seed and split into disjoint test and training images.
``builtin``
    The embedded default, needing no download: colour photographs that ship inside scikit-image and
    matplotlib (:data:`BUILTIN_PHOTOS`), expanded into many crops at random positions and scales.
    Each photograph is a class. By default (``split: regions``) a strip of every photograph is held
    out and test crops come only from it, training crops only from the rest, so no test pixel is
    ever seen in training while test and training images show the same scenes (as ImageNet's
    validation images show the training set's classes). ``split: photos`` instead tests on whole
    photographs never used for training (:data:`BUILTIN_TRAIN_PHOTOS`, :data:`BUILTIN_TEST_PHOTOS`).

Bad files (corrupt, truncated, unreadable) are skipped, logged and listed in the store's
``skipped`` attribute, and replaced by the next candidate of the same class; CMYK, grayscale,
palette, 16-bit and alpha images are converted to RGB; images whose shorter side is below
``min_side`` are skipped, smaller ones up to S are upscaled; images of more than ``max_pixels``
pixels are skipped before they are decoded (:data:`DEFAULT_MAX_PIXELS`). If a class runs out of
candidates the run stops with an error instead of producing fewer images than asked.

Decoding runs in a process pool of ``threads`` workers and images are written in chunks, so
memory does not grow with the number of images.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import math
import multiprocessing
import os
import random
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from preimage import hdf5, image_store

log = logging.getLogger("preimage.data")

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")

#: Colour photographs of the ``builtin`` source, as ``package:file``; with ``split: regions`` (the
#: default) each is a class with a held-out test strip.
BUILTIN_PHOTOS = (
    "skimage:astronaut.png",
    "skimage:coffee.png",
    "skimage:chelsea.png",
    "skimage:motorcycle_left.png",
    "skimage:rocket.jpg",
    "matplotlib:grace_hopper.jpg",
    "skimage:hubble_deep_field.jpg",
    "skimage:retina.jpg",
    "skimage:ihc.png",
)
#: With ``split: photos``: training crops come from these…
BUILTIN_TRAIN_PHOTOS = (
    "skimage:astronaut.png",
    "skimage:coffee.png",
    "skimage:motorcycle_left.png",
    "skimage:hubble_deep_field.jpg",
    "skimage:retina.jpg",
    "skimage:ihc.png",
    "skimage:rocket.jpg",
)
#: …and test crops only from these, which no training crop ever sees.
BUILTIN_TEST_PHOTOS = (
    "skimage:chelsea.png",
    "matplotlib:grace_hopper.jpg",
)


class DataError(RuntimeError):
    """A problem with the data source that stops extraction (with a message for the user)."""


class BadImage(Exception):
    """One image could not be used; the reason ends up in the log and the ``skipped`` attribute."""


# --------------------------------------------------------------------------- decoding


#: ``data.max_pixels``: the largest image (width × height as stored in the file) that is decoded.
#: 80 megapixels admits photographs of cameras up to 61 MP (9504 × 6336) and stays below Pillow's
#: own decompression-bomb warning (``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 MP); decoding an 8-bit RGB
#: PNG of that size takes about 320 MB, as Pillow keeps RGB at 4 bytes a pixel
#: (docs/reliability-images.md).
DEFAULT_MAX_PIXELS = 80_000_000


def open_rgb(path: str | os.PathLike, draft_size: Optional[int] = None,
             max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` into an RGB PIL image, whatever its format or extension claims.

    The format is sniffed from the content (a PNG named ``.JPEG`` decodes as PNG). CMYK JPEGs
    (ImageNet has a few, some Adobe-inverted; Pillow undoes the inversion) and grayscale, palette,
    alpha and 16-bit images are converted to 8-bit RGB. With ``draft_size`` a JPEG is decoded at the
    smallest DCT scale whose sides are still ≥ ``draft_size`` (much faster for large photos, same
    result after the antialiased resize to that size up to rounding, and 1/64 of the memory at
    scale 1/8).

    An image of more than ``max_pixels`` pixels (width × height in the file's header, before any
    reduction) is refused with :class:`BadImage` before a pixel is decoded: memory stays bounded
    and decompression bombs (small files that inflate to gigabytes) are harmless. Pillow's own
    limit still applies above it (it refuses more than ``2 * PIL.Image.MAX_IMAGE_PIXELS``).
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(f"too large: {width}x{height} = {width * height:,} pixels > data.max_pixels "
                               f"{max_pixels:,} (raise data.max_pixels to decode it)")
            if draft_size is not None and image.format == "JPEG" and image.mode in ("RGB", "L"):
                image.draft(image.mode, (draft_size, draft_size))
            image.load()
            return _to_rgb(image)  # the decoded pixels stay valid once the file is closed
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImage(f"{type(err).__name__}: {err}") from err


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of a decoded image, holding few copies of its pixels: an RGB image is returned as
    it is, an RGBA one is composited over white without a copy of its own."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(_to_8bit(np.asarray(image), image.mode), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def _to_8bit(array: np.ndarray, mode: str) -> np.ndarray:
    """Grey levels of a 16-bit, 32-bit integer or float image as uint8: ``round(v / peak * 255)``
    clipped to ``[0, 255]``, with ``peak`` 65535 for 16-bit images and for others whose maximum
    exceeds 255, else 255. Integers are scaled exactly in uint32 (4 bytes a pixel, not float64's 8
    and its temporaries), with the float64 formula's result: ``v * 255 / peak`` of an integer ``v``
    is never within float64 rounding of a half."""
    peak = 65535 if mode.startswith("I;16") or array.max() > 255 else 255
    if array.dtype.kind == "f":
        scaled = array.astype(np.float64)
        scaled /= peak
        scaled *= 255.0
        scaled += 0.5
        return np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)
    scaled = array.astype(np.uint32) if array.dtype.kind == "u" else np.clip(array, 0, None).astype(np.uint32)
    np.minimum(scaled, peak, out=scaled)
    scaled *= 2 * 255
    scaled += peak
    scaled //= 2 * peak
    return scaled.astype(np.uint8)


def resize_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (antialiased bilinear), crop the centre: uint8 (3, S, S)."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


@dataclass(frozen=True)
class Item:
    """One image to produce: a file (and, for the builtin source, a crop box in that file)."""

    path: str
    label: int
    split: str
    key: Tuple[str, int]  # the (split, class) queue it came from, for replacements
    box: Optional[Tuple[int, int, int]] = None  # (left, top, side) of a square crop
    flip: bool = False
    jitter: Optional[Tuple[float, float, float]] = None  # (hue shift, saturation ×, value ×)
    name: Optional[str] = None  # how to show the source (builtin: ``skimage:astronaut.png``)
    views: Optional["TrainingViews"] = None  # several training crops of one photograph (folder, imagenet)

    @property
    def display(self) -> str:
        if self.box is None:
            return self.path
        left, top, side = self.box
        return f"{self.name or self.path}#crop={left},{top},{side}{',flip' if self.flip else ''}"


@functools.lru_cache(maxsize=4)
def _cached_photo(path: str) -> Image.Image:
    return open_rgb(path)


def load_file(path: str | os.PathLike, size: int, min_side: int = 1,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as the data stage stores it: uint8 (3, S, S), RGB, shorter side resized to
    ``size`` and centre-cropped (§4); a JPEG is decoded at reduced scale (:func:`open_rgb`).
    Raises :class:`BadImage` for an unreadable file, one above ``max_pixels`` or one whose shorter
    side is below ``min_side``."""
    image = open_rgb(path, draft_size=size, max_pixels=max_pixels)
    if min(image.size) < min_side:
        raise BadImage(f"too small: {image.size[0]}x{image.size[1]} < min_side {min_side}")
    return resize_center_crop(image, size)


@dataclass(frozen=True)
class TrainingViews:
    """``count`` training crops of one photograph (``data.crops_per_image``; ours, the paper is
    silent on augmentation): the first is the centre crop every test image gets, the others
    random squares whose side is uniform in [``min_scale``, 1] × the shorter side, at a uniform
    position, mirrored with probability ½. The draws depend only on ``seed`` and the file's path,
    so a run is reproduced from its seed whatever order the workers decode in."""

    count: int
    min_scale: float
    seed: int

    def boxes(self, path: str, width: int, height: int) -> List[Tuple[Tuple[int, int, int], bool]]:
        """((left, top, side), flip) of every view of a ``width × height`` photograph."""
        rng = np.random.default_rng([self.seed, zlib.crc32(path.encode())])
        shorter = min(width, height)
        views = [(((width - shorter) // 2, (height - shorter) // 2, shorter), False)]
        for _ in range(self.count - 1):
            views.append(_random_crop(rng, (0, 0, width, height), shorter, self.min_scale, True))
        return views


def load_views(item: Item, size: int, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Every training view of a photograph (:class:`TrainingViews`) as uint8 (V, 3, S, S)."""
    views = item.views
    # decoded so that the smallest crop still has ≥ size pixels a side (JPEG draft scale)
    image = open_rgb(item.path, draft_size=int(math.ceil(size / views.min_scale)), max_pixels=max_pixels)
    if min(image.size) < min_side:
        raise BadImage(f"too small: {image.size[0]}x{image.size[1]} < min_side {min_side}")
    out = []
    for (left, top, side), flip in views.boxes(item.path, *image.size):
        crop = image.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=None)
        if flip:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1))
    return np.stack(out)


def load_item(item: Item, size: int, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode and preprocess one :class:`Item` into uint8 (3, S, S), or (V, 3, S, S) for an item
    with several training views; raises :class:`BadImage`."""
    if item.views is not None:
        return load_views(item, size, min_side, max_pixels)
    if item.box is not None:
        photo = _cached_photo(item.path)
        left, top, side = item.box
        image = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        if item.flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if item.jitter is not None:
            image = colour_jitter(image, *item.jitter)
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
    return load_file(item.path, size, min_side, max_pixels)


def colour_jitter(image: Image.Image, hue: float, saturation: float, value: float) -> Image.Image:
    """Rotate the hue by ``hue`` turns and scale saturation and value (HSV, 8 bit)."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue * 256.0) % 256.0
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * value, 0, 255)
    return Image.fromarray(hsv.round().astype(np.uint8), "HSV").convert("RGB")


def _worker(args: Tuple[Item, int, int, int]) -> Tuple[Item, Optional[np.ndarray], Optional[str]]:
    item, size, min_side, max_pixels = args
    try:
        return item, load_item(item, size, min_side, max_pixels), None
    except BadImage as err:
        return item, None, str(err)
    except Exception as err:  # noqa: BLE001 - one bad file must never kill the run
        return item, None, f"{type(err).__name__}: {err}"


# --------------------------------------------------------------------------- selection


@dataclass
class Selection:
    """What to extract: class names, and per (split, class) a queue of candidates and a count.

    Queues may be shared between splits (folder source): the test split draws first. A count of
    :data:`ALL` (``train_per_class: all``, the paper's whole training set) takes every candidate
    left once the counted splits are complete; its unreadable files are skipped, not replaced.
    """

    classes: List[str]
    needs: Dict[Tuple[str, int], Any]
    queues: Dict[Tuple[str, int], Deque[Item]]
    notes: Dict[str, Any] = field(default_factory=dict)

    @property
    def take_all(self) -> set:
        return {key for key, need in self.needs.items() if need == ALL}

    def expected_total(self) -> int:
        """Images the extraction will write if nothing is skipped."""
        counted = {key: need for key, need in self.needs.items() if need != ALL}
        total = sum(counted.values())
        for key in self.take_all:
            queue = self.queues[key]
            total += max(0, len(queue) - sum(n for k, n in counted.items() if self.queues[k] is queue))
        return total

    def expected(self, split: str) -> str:
        """The planned count of one split, for the log ("all" where a split takes every image)."""
        keys = [key for key in self.needs if key[0] == split]
        if any(self.needs[key] == ALL for key in keys):
            return "all"
        return str(sum(self.needs[key] for key in keys))


#: ``data.train_per_class`` value that takes every image of each class (paper §3: the whole set)
ALL = "all"


def list_images(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[Path]:
    """Image files directly inside ``folder``, sorted (extension match is case-insensitive).

    One directory listing (``os.scandir``: no stat per file on most file systems, which matters
    for the 1.28 M files of ImageNet's train/ on a network file system)."""
    exts = {e.lower() for e in extensions}
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if os.path.splitext(e.name)[1].lower() in exts and e.is_file()]
    return [Path(folder) / name for name in sorted(names)]


def _choose_classes(available: Sequence[str], classes: Any, rng: random.Random, where: str) -> List[str]:
    available = sorted(available)
    if not available:
        raise DataError(f"no classes found in {where}")
    if classes is None:
        return available
    if isinstance(classes, int):
        if classes > len(available):
            raise DataError(f"data.classes = {classes} but {where} has only {len(available)} classes")
        return sorted(rng.sample(available, classes))
    missing = [c for c in classes if c not in set(available)]
    if missing:
        raise DataError(f"data.classes names classes not in {where}: {', '.join(missing[:10])}")
    return list(classes)


def _shuffled(paths: Iterable[Path], rng: random.Random) -> List[Path]:
    paths = list(paths)
    rng.shuffle(paths)
    return paths


def select_imagenet(params: Mapping[str, Any]) -> Selection:
    """Training images from ``train/<wnid>``, test images from ``val`` (paper §4)."""
    root = Path(params["root"])
    train_dir, val_dir = root / "train", root / "val"
    for folder in (train_dir, val_dir):
        if not folder.is_dir():
            raise DataError(f"data.root = {root} is not an ILSVRC2012-style root: {folder} is missing")
    rng = random.Random(params["seed"])
    wnids = [p.name for p in train_dir.iterdir() if p.is_dir()]
    classes = _choose_classes(wnids, params.get("classes"), rng, str(train_dir))
    val_by_class = _imagenet_val_files(val_dir, params.get("val_labels"), root, set(classes))
    needs, queues = {}, {}
    for label, wnid in enumerate(classes):
        train_files = _shuffled(list_images(train_dir / wnid, params["extensions"]), rng)
        test_files = _shuffled(val_by_class.get(wnid, []), rng)
        for split, files, count in (("test", test_files, params["test_per_class"]), ("train", train_files, params["train_per_class"])):
            key = (split, label)
            needs[key] = count
            queues[key] = collections.deque(Item(str(p), label, split, key) for p in files)
    return Selection(classes, needs, queues)


def _imagenet_val_files(val_dir: Path, labels_file: Optional[str], root: Path, wanted: set) -> Dict[str, List[Path]]:
    subdirs = [p for p in val_dir.iterdir() if p.is_dir()]
    if subdirs:
        return {p.name: list_images(p) for p in subdirs if p.name in wanted}
    if not labels_file:
        raise DataError(
            f"{val_dir} is flat (no <wnid>/ folders): set data.val_labels to a labels file "
            "(Kaggle's LOC_val_solution.csv, or lines '<file name> <wnid>')"
        )
    path = Path(labels_file)
    if not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise DataError(f"data.val_labels: {path} does not exist")
    by_class: Dict[str, List[Path]] = collections.defaultdict(list)
    with open(path) as handle:
        first = handle.readline()
        if "ImageId" in first and "PredictionString" in first:
            rows = (line.strip().split(",", 1) for line in handle)
            pairs = ((name + ".JPEG", pred.split()[0]) for name, pred in rows if pred.strip())
        else:
            handle.seek(0)
            pairs = (tuple(line.split()[:2]) for line in handle if line.strip())
        for name, wnid in pairs:
            if wnid in wanted:
                by_class[wnid].append(val_dir / name)
    return {k: sorted(v) for k, v in by_class.items()}


def select_folder(params: Mapping[str, Any]) -> Selection:
    """Class subfolders (or one flat class), each shuffled with the seed; test draws first."""
    root = Path(params["root"])
    if not root.is_dir():
        raise DataError(f"data.root = {root} is not a folder")
    rng = random.Random(params["seed"])
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and list_images(p, params["extensions"]))
    if subdirs:
        by_name = {p.name: p for p in subdirs}
        classes = _choose_classes(list(by_name), params.get("classes"), rng, str(root))
        folders = [by_name[c] for c in classes]
    else:
        if params.get("classes") not in (None, 1):
            raise DataError(f"data.classes = {params['classes']!r} but {root} is flat (one class)")
        classes, folders = [root.name], [root]
    needs, queues = {}, {}
    for label, folder in enumerate(folders):
        shared: Deque[Item] = collections.deque()
        for path in _shuffled(list_images(folder, params["extensions"]), rng):
            shared.append(Item(str(path), label, "?", ("?", label)))
        for split, count in (("test", params["test_per_class"]), ("train", params["train_per_class"])):
            needs[(split, label)] = count
            queues[(split, label)] = shared
    return Selection(classes, needs, queues)


def resolve_builtin_photo(spec: str) -> Path:
    """``skimage:astronaut.png`` / ``matplotlib:grace_hopper.jpg`` → the file inside that package."""
    package, _, name = spec.partition(":")
    if package == "skimage":
        import skimage

        path = Path(skimage.__file__).parent / "data" / name
    elif package == "matplotlib":
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / name
    else:
        raise DataError(f"builtin photo {spec!r}: package must be 'skimage' or 'matplotlib'")
    if not path.is_file():
        raise DataError(f"builtin photo {spec!r} not found at {path} (is the package installed completely?)")
    return path


def select_builtin(params: Mapping[str, Any]) -> Selection:
    """Random square crops (position, scale, flip) of the bundled photographs; each photograph is one
    class, ``train_per_class`` training and ``test_per_class`` test crops per class.

    ``split: regions`` (default): every photograph of ``photos`` is cut across its longer side into
    a held-out strip of ``test_fraction`` of that side (at the start or the end, chosen with the
    seed) and the rest; test crops lie inside the strip, training crops inside the rest, so they
    never share a pixel. Crop sides are uniform in [min_scale, 1] × the strip's shorter side for
    both, so both splits see the same scales. ``split: photos``: training crops of
    ``train_photos``, test crops of ``test_photos`` (disjoint lists), sides uniform in
    [min_scale, 1] × the photograph's shorter side.

    With ``colour_jitter`` = s > 0, training crops (never test crops) get a random hue rotation of
    up to ±s/2 turns and saturation and value scaled by up to e^(±0.7s) and e^(±0.4s).
    """
    options = params.get("builtin") or {}
    if ALL in (params["train_per_class"], params["test_per_class"]):
        raise DataError("data.train_per_class/test_per_class: 'all' needs a finite image source (folder or "
                        "imagenet); the builtin source draws random crops, give a count")
    split_mode = options.get("split", "regions")
    min_scale, fraction, flip = _crop_options(options)
    if split_mode == "regions":
        photos = _region_photos(params)
        # (photo, label, split): every photograph gives both splits
        plan = [(spec, label, split) for label, spec in enumerate(photos) for split in ("train", "test")]
        notes: Dict[str, Any] = {"split": "regions", "photos": photos, "test_fraction": fraction}
    elif split_mode == "photos":
        train = list(options.get("train_photos") or BUILTIN_TRAIN_PHOTOS)
        test = list(options.get("test_photos") or BUILTIN_TEST_PHOTOS)
        overlap = set(train) & set(test)
        if overlap:
            raise DataError(f"data.builtin: photos used for both training and test: {sorted(overlap)}")
        if isinstance(params.get("classes"), int):
            train = train[: params["classes"]]
        photos = train + test
        plan = [(spec, label, "train" if label < len(train) else "test") for label, spec in enumerate(photos)]
        notes = {"split": "photos", "train_photos": train, "test_photos": test}
    else:
        raise DataError(f"data.builtin.split: {split_mode!r}; use 'regions' or 'photos'")
    jitter = float(options.get("colour_jitter", 0.0))
    rng = np.random.default_rng(params["seed"])
    classes = [spec.partition(":")[2].rsplit(".", 1)[0] for spec in photos]
    strip_at_end = _strips_at_end(photos, rng)
    needs, queues = {}, {}
    for spec, label, split in plan:
        count = params["train_per_class"] if split == "train" else params["test_per_class"]
        path = resolve_builtin_photo(spec)
        with Image.open(path) as image:
            width, height = image.size
        if split_mode == "regions":
            region, shorter = builtin_region(width, height, fraction, strip_at_end[spec], split)
        else:
            region, shorter = (0, 0, width, height), min(width, height)
        key = (split, label)
        items = collections.deque()
        for _ in range(count):
            box, flipped = _random_crop(rng, region, shorter, min_scale, flip)
            change = None
            if split == "train" and jitter > 0:
                change = (float(rng.uniform(-0.5, 0.5) * jitter), float(np.exp(rng.uniform(-1, 1) * jitter * 0.7)),
                          float(np.exp(rng.uniform(-1, 1) * jitter * 0.4)))
            items.append(Item(str(path), label, split, key, box=box, flip=flipped, jitter=change, name=spec))
        needs[key], queues[key] = count, items
    return Selection(classes, needs, queues, notes)


def _crop_options(options: Mapping[str, Any]) -> Tuple[float, float, bool]:
    """(min_scale, test_fraction, flip) of ``data.builtin``, with their defaults."""
    return (float(options.get("min_scale", 0.35)), float(options.get("test_fraction", 0.4)),
            bool(options.get("flip", True)))


def _region_photos(params: Mapping[str, Any]) -> List[str]:
    """The photographs of ``split: regions``, each a class: ``builtin.photos`` (default all of
    :data:`BUILTIN_PHOTOS`), the first ``classes`` of them when that is a number."""
    photos = list((params.get("builtin") or {}).get("photos") or BUILTIN_PHOTOS)
    return photos[: params["classes"]] if isinstance(params.get("classes"), int) else photos


def _strips_at_end(photos: Sequence[str], rng: np.random.Generator) -> Dict[str, bool]:
    """Whether each photograph's held-out strip lies at the end of its longer side: the first draws
    of the data stage's generator."""
    return {spec: bool(rng.integers(2)) for spec in photos}


def _random_crop(rng: np.random.Generator, region: Tuple[int, int, int, int], shorter: int, min_scale: float,
                 flip: bool) -> Tuple[Tuple[int, int, int], bool]:
    """One square crop box (left, top, side) inside ``region`` and whether it is mirrored."""
    x0, y0, x1, y1 = region
    side = max(8, int(round(shorter * rng.uniform(min_scale, 1.0))))
    left = int(rng.integers(x0, x1 - side + 1))
    top = int(rng.integers(y0, y1 - side + 1))
    return (left, top, side), flip and bool(rng.integers(2))


def new_builtin_test_crops(params: Mapping[str, Any], per_class: int, seed: int) -> List[Item]:
    """``per_class`` crops per photograph drawn as the builtin source draws its test crops under
    ``split: regions`` (same photographs, same held-out strips, same scales and mirroring), but
    from a generator seeded with ``seed``: images from the test distribution that neither training
    nor evaluation used. ``params`` are the data stage's (as recorded in its stores)."""
    options = params.get("builtin") or {}
    if params.get("source", "builtin") != "builtin" or options.get("split", "regions") != "regions":
        raise DataError("new test crops exist only for the builtin source with split: regions")
    photos = _region_photos(params)
    min_scale, fraction, flip = _crop_options(options)
    strip_at_end = _strips_at_end(photos, np.random.default_rng(params["seed"]))  # as the data stage drew them
    rng = np.random.default_rng(seed)
    items = []
    for label, spec in enumerate(photos):
        path = resolve_builtin_photo(spec)
        with Image.open(path) as image:
            region, shorter = builtin_region(*image.size, fraction, strip_at_end[spec], "test")
        for _ in range(per_class):
            box, flipped = _random_crop(rng, region, shorter, min_scale, flip)
            items.append(Item(str(path), label, "test", ("test", label), box=box, flip=flipped, name=spec))
    return items


def builtin_region(width: int, height: int, fraction: float, strip_at_end: bool,
                   split: str) -> Tuple[Tuple[int, int, int, int], int]:
    """The box (x0, y0, x1, y1) of a photograph that ``split`` draws its crops from under
    ``split: regions`` (the held-out strip for ``test``, the rest for ``train``; the cut runs across
    the longer side), and the largest crop side both splits use: the shorter side of the smaller
    of the two parts."""
    longer = max(width, height)
    cut = int(round(longer * fraction))
    if not 8 <= cut <= longer - 8:
        raise DataError(f"data.builtin.test_fraction {fraction}: leaves no room for crops in a {width}×{height} photograph")
    lo, hi = (longer - cut, longer) if strip_at_end else (0, cut)
    if split == "train":
        lo, hi = (0, longer - cut) if strip_at_end else (cut, longer)
    box = (lo, 0, hi, height) if width >= height else (0, lo, width, hi)
    return box, min(cut, longer - cut, width, height)


SOURCES = {"imagenet": select_imagenet, "folder": select_folder, "builtin": select_builtin}


def candidate_shortfalls(params: Mapping[str, Any], limit: int = 5) -> List[str]:
    """Classes with fewer candidate files than they need, found by listing (nothing is decoded).

    For ``folder`` a class needs ``train_per_class + test_per_class`` files (both splits draw
    from its one folder); for ``imagenet`` ``train_per_class`` in ``train/<wnid>`` and
    ``test_per_class`` among its ``val`` images. Each message names the config key and the class;
    at most ``limit`` classes are listed. A :class:`DataError` of the selection itself (a
    missing class, a flat ``val`` without labels) is returned as a message too. Bad files among
    the candidates can still leave a class short during extraction (then extraction says so).
    """
    source = params.get("source")
    if source not in ("folder", "imagenet"):
        return []
    try:
        selection = SOURCES[source](params)
    except DataError as err:
        return [f"data: {err}"]
    short: List[str] = []
    counted = {key: need for key, need in selection.needs.items() if need != ALL}  # "all" needs no minimum
    if source == "folder":
        need = sum(int(params[k]) for k in ("train_per_class", "test_per_class") if params[k] != ALL)
        for label, name in enumerate(selection.classes):
            have = len(selection.queues[("test", label)])
            if have < need:
                short.append(f"data.train_per_class + data.test_per_class: class {name!r} has {have} candidate "
                             f"image file(s), fewer than {need} ({params['train_per_class']} + "
                             f"{params['test_per_class']})")
    else:
        for (split, label), need in counted.items():
            have = len(selection.queues[(split, label)])
            if have < need:
                folder = "train" if split == "train" else "val"
                short.append(f"data.{split}_per_class: class {selection.classes[label]!r} has {have} candidate image "
                             f"file(s) in {folder}/, fewer than {need}")
    if len(short) > limit:
        short = short[:limit] + [f"data: {len(short) - limit} more class(es) short of images"]
    return short


# --------------------------------------------------------------------------- shards


def label_weights(selection: Selection) -> Dict[int, int]:
    """Images each class (label) is expected to contribute, both splits together (a class whose
    split takes ``all`` counts every candidate its queue holds beyond the counted draws)."""
    weights: Dict[int, int] = collections.defaultdict(int)
    counted = {key: need for key, need in selection.needs.items() if need != ALL}
    for key, need in counted.items():
        weights[key[1]] += int(need)
    for key in selection.take_all:
        queue = selection.queues[key]
        shared = sum(n for k, n in counted.items() if selection.queues[k] is queue)
        weights[key[1]] += max(0, len(queue) - shared)
    for key in selection.needs:
        weights.setdefault(key[1], 0)
    return dict(weights)


def shard_labels(selection: Selection, shards: int) -> List[List[int]]:
    """A stable partition of the selection's classes into ``shards`` contiguous label ranges of
    nearly equal expected image counts (:func:`label_weights`); some are empty when there are
    fewer classes than shards.

    Sharding by class keeps every draw of a class in one shard: a file skipped as unreadable is
    replaced from its own class's queue exactly as without shards (and the folder source's test
    and training images, drawn from one queue per class, stay together), so the shards hold the
    same images as one extraction job.
    """
    if shards < 1:
        raise ValueError(f"data.shards must be at least 1, not {shards}")
    weights = label_weights(selection)
    labels = sorted(weights)
    total = sum(weights.values())
    parts: List[List[int]] = [[] for _ in range(shards)]
    before = 0
    for k, label in enumerate(labels):
        w = weights[label]
        if total > 0:
            index = min(shards - 1, int((before + w / 2) * shards // total))
        else:
            index = min(shards - 1, k * shards // max(1, len(labels)))
        parts[index].append(label)
        before += w
    return parts


def shard_selection(selection: Selection, index: int, shards: int) -> Selection:
    """The part of ``selection`` that shard ``index`` of ``shards`` extracts (:func:`shard_labels`):
    the same class list (labels keep their meaning), the draws of its classes only. Works on the
    selection of any source."""
    if not 0 <= index < shards:
        raise ValueError(f"shard {index} of {shards}")
    mine = set(shard_labels(selection, shards)[index])
    needs = {key: need for key, need in selection.needs.items() if key[1] in mine}
    queues = {key: queue for key, queue in selection.queues.items() if key[1] in mine}
    return Selection(selection.classes, needs, queues, selection.notes)


def planned_image_count(params: Mapping[str, Any], enough: Optional[int] = None) -> int:
    """Images an extraction of ``params`` (the ``data`` section) is expected to write, both splits
    together, found without decoding anything (:meth:`Selection.expected_total`).

    The builtin and folder sources are counted from their selection. For ``imagenet`` a split with
    a count takes (classes × count) images, the number the configuration check guarantees; a split
    with ``all`` counts its candidate files by listing the class folders one by one, and with
    ``enough`` the listing stops once the total reaches it (the answer is then ``enough`` or more),
    so that a caller that only needs to know "at least this many" lists a bounded number of files
    of ImageNet's 1.28 M."""
    if params.get("source") != "imagenet":
        return SOURCES[params["source"]](params).expected_total()
    root = Path(params["root"])
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise DataError(f"data.root = {root} is not an ILSVRC2012-style root: train/ and val/ are needed")
    # the classes select_imagenet chooses, without listing their files
    wnids = [p.name for p in train_dir.iterdir() if p.is_dir()]
    classes = _choose_classes(wnids, params.get("classes"), random.Random(params["seed"]), str(train_dir))
    counted = sum(len(classes) * int(params[f"{split}_per_class"]) for split in ("train", "test")
                  if params[f"{split}_per_class"] != ALL)
    total = counted
    if params["test_per_class"] == ALL:
        total += sum(len(files) for files in _imagenet_val_files(val_dir, params.get("val_labels"), root,
                                                                 set(classes)).values())
    if params["train_per_class"] == ALL:
        for wnid in classes:
            if enough is not None and total >= enough:
                break
            total += len(list_images(train_dir / wnid, params["extensions"]))
    return total


def shard_count(params: Mapping[str, Any], shards: int, min_images: int) -> int:
    """The number of shards an extraction of ``params`` runs as: ``data.shards``, but no more than
    one per ``min_images`` images (:func:`planned_image_count`), and at least one. Our rule: a shard
    smaller than that costs more in job start-up and joining than it saves (three classes of
    ImageNet in 64 shards would be 64 jobs of a few images each, most of them empty)."""
    if shards < 1 or min_images < 1:
        raise ValueError(f"shards ({shards}) and min_images ({min_images}) must be at least 1")
    if shards == 1:
        return 1
    images = planned_image_count(params, enough=shards * min_images)
    return max(1, min(shards, math.ceil(images / min_images)))


def join_shards(parts: Mapping[str, Sequence[str | os.PathLike]], outputs: Mapping[str, str | os.PathLike],
                block: int = 256) -> Dict[str, int]:
    """Join shard stores into the image stores every later stage reads: ``parts[split]`` are the
    shard files of one split in shard order, ``outputs[split]`` the store to write. Images,
    labels and paths are copied in order (memory flat: ``block`` images at a time) into a store
    laid out as :func:`extract` lays out its own, so that later stages cannot tell a joined store
    from an unsharded one; its ``skipped`` attribute lists what every shard skipped, and its
    content digest is that of the unsharded store when the images are the same.

    A copy rather than an HDF5 virtual dataset over the shard files (our choice): the joined file
    is self-contained, so its digest identifies what it holds, it can be moved or copied alone,
    the shard files can be deleted once it exists, and a missing or moved shard can never be
    read back silently as the virtual dataset's fill value (zeros).
    """
    counts: Dict[str, int] = {}
    for split, out in outputs.items():
        paths = list(parts[split])
        stores = [image_store.ImageStore(p) for p in paths]
        try:
            metas = [s.attrs for s in stores]
            first = metas[0]
            for path, meta, part in zip(paths, metas, stores):
                if meta.get("shard", [None, len(paths)])[1] != len(paths) or part.classes != stores[0].classes \
                        or part.size != stores[0].size or meta.get("params") != first.get("params"):
                    raise DataError(f"{path} is not a shard of the same extraction as {paths[0]}; rerun the shards")
            shard_ids = [meta.get("shard", [None])[0] for meta in metas]
            if shard_ids != list(range(len(paths))):
                raise DataError(f"shards {shard_ids} where 0..{len(paths) - 1} were expected, in order")
            attrs = {k: v for k, v in first.items()
                     if k not in ("shard", "skipped", "n_images", "preimage_version", "content_sha256")}
            skipped = [entry for meta in metas for entry in meta.get("skipped", [])]
            with image_store.write_image_store(out, stores[0].size, stores[0].classes, attrs) as writer:
                for part in stores:
                    labels, names = part.labels, part.paths
                    for start in range(0, len(part), block):
                        stop = min(start + block, len(part))
                        writer.append(part.read(start, stop), labels[start:stop], names[start:stop])
                counts[split] = writer.count
                hdf5.write_attrs(writer.handle, {"skipped": list(dict.fromkeys(skipped)), "n_images": writer.count})
        finally:
            for part in stores:
                part.close()
        log.info("joined %d shards into %s: %d images", len(paths), out, counts[split])
    return counts


# --------------------------------------------------------------------------- extraction


@dataclass
class ExtractionReport:
    counts: Dict[str, int]
    skipped: List[str]
    seconds: float


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not sys.stderr.isatty(), dynamic_ncols=True)


def extract(
    params: Mapping[str, Any],
    outputs: Mapping[str, str | os.PathLike],
    threads: int = 1,
    chunk: int = 64,
    log_every: int = 500,
    shard: Optional[Tuple[int, int]] = None,
) -> ExtractionReport:
    """Build the image stores ``outputs = {"train": path, "test": path}`` from ``params`` (``data.*``).

    Rounds: every (split, class) draws as many candidates as it still needs; failures are
    recorded and replaced from the same queue in the next round; a queue running dry is an error.
    With ``shard = (i, N)`` only the classes of shard ``i`` are extracted (:func:`shard_selection`;
    the stores record ``shard``), to be joined by :func:`join_shards`.
    """
    source = params["source"]
    if source not in SOURCES:
        raise DataError(f"data.source = {source!r}; expected one of {', '.join(SOURCES)}")
    started = time.perf_counter()
    selection = SOURCES[source](params)
    if shard is not None:
        selection = shard_selection(selection, *shard)
    size, min_side = int(params["size"]), int(params.get("min_side", 16))
    max_pixels = int(params.get("max_pixels", DEFAULT_MAX_PIXELS))
    views = training_views(params)
    total = selection.expected_total()
    skipped: List[str] = []
    counts = {split: 0 for split in outputs}
    attrs = {
        "params": dict(params),
        "seed": params["seed"],
        "source": source,
        "size": size,
        **({"notes": selection.notes} if selection.notes else {}),
        **({"shard": list(shard)} if shard is not None else {}),
    }
    log.info("extracting %d images (%s) from source %r at %d px with %d workers%s", total,
             ", ".join(f"{s}: {selection.expected(s)}" for s in outputs),
             source, size, threads,
             f" (shard {shard[0] + 1} of {shard[1]}: {len({k[1] for k in selection.needs})} classes)" if shard else "")
    with contextlib.ExitStack() as stack:
        writers = {
            split: stack.enter_context(image_store.write_image_store(
                path, size, selection.classes,
                {**attrs, "split": split, "crops_per_image": views.count if views and split == "train" else 1}))
            for split, path in outputs.items()
        }
        buffers: Dict[str, List[Tuple[np.ndarray, int, str]]] = {split: [] for split in outputs}
        pool = stack.enter_context(multiprocessing.get_context("fork").Pool(threads)) if threads > 1 else None
        bar = stack.enter_context(_progress(total, f"data ({source})"))
        take_all = selection.take_all
        needs = {key: 0 if key in take_all else need for key, need in selection.needs.items()}
        done = 0
        while any(needs.values()) or take_all:
            if not any(needs.values()):
                # the counted splits are complete: the "all" splits take every candidate left
                for key in take_all:
                    needs[key] = len(selection.queues[key])
                take_all = set()
                continue
            batch = _draw(selection, needs)
            if views is not None:
                batch = [dataclasses.replace(item, views=views) if item.split == "train" else item for item in batch]
            work = ((item, size, min_side, max_pixels) for item in batch)
            results = _bounded_imap(pool, work, window=16 * threads) if pool else map(_worker, work)
            for item, image, error in results:
                split, label = item.key
                if error is not None:
                    if selection.needs[(split, label)] == ALL:
                        needs[(split, label)] -= 1  # every candidate is drawn already: nothing to replace it
                    skipped.append(f"{item.display}: {error}")
                    log.warning("skipped %s: %s", item.display, error)
                    continue
                needs[(split, label)] -= 1
                if item.views is None:
                    buffers[split].append((image, label, item.display))
                else:  # several training views of one photograph, named {file}#view={k}
                    buffers[split].extend((view, label, f"{item.display}#view={k}") for k, view in enumerate(image))
                if len(buffers[split]) >= chunk:
                    _flush(writers[split], buffers[split])
                done += 1
                bar.update(1)
                if done % log_every == 0 or done == total:
                    rate = done / max(time.perf_counter() - started, 1e-9)
                    log.info("%d/%d images (%.0f img/s)", done, total, rate)
        for split in outputs:
            _flush(writers[split], buffers[split])
            counts[split] = writers[split].count
            hdf5.write_attrs(writers[split].handle, {"skipped": skipped, "n_images": counts[split]})
    seconds = time.perf_counter() - started
    log.info("done: %s images in %.1f s; %d skipped", counts, seconds, len(skipped))
    return ExtractionReport(counts, skipped, seconds)


def training_views(params: Mapping[str, Any]) -> Optional[TrainingViews]:
    """The training views of ``data.crops_per_image`` (None for one view, the paper's protocol);
    test images are always the centre crop alone."""
    count = int(params.get("crops_per_image", 1))
    if count <= 1:
        return None
    if params["source"] == "builtin":
        raise DataError("data.crops_per_image applies to the folder and imagenet sources; the builtin source "
                        "draws data.train_per_class random crops of each photograph already")
    return TrainingViews(count, float(params.get("crop_min_scale", 0.5)), int(params["seed"]))


def _bounded_imap(pool, work: Iterable, window: int) -> Iterator:
    """Ordered ``pool.imap(_worker, work)`` with at most ``window`` results in flight.

    ``Pool.imap`` submits its whole input at once and buffers every finished result, so when the
    writer is slower than the decoders memory grows with the number of images; this does not.
    """
    pending: Deque = collections.deque()
    for args in work:
        pending.append(pool.apply_async(_worker, (args,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _draw(selection: Selection, needs: Dict[Tuple[str, int], int]) -> List[Item]:
    """Take the next candidates for every (split, class) still short of its count."""
    batch: List[Item] = []
    for (split, label), need in needs.items():
        if need <= 0:
            continue
        queue = selection.queues[(split, label)]
        if len(queue) < need:
            name = selection.classes[label]
            raise DataError(
                f"class {name!r} ({split}): {need} more usable image(s) needed but only {len(queue)} candidate(s) left "
                f"(too few images, or too many skipped); lower data.{split}_per_class or add images"
            )
        for _ in range(need):
            item = queue.popleft()
            if item.split == "?":  # shared queue of the folder source: bind the item to this split
                item = Item(item.path, item.label, split, (split, label), item.box, item.flip)
            batch.append(item)
    return batch


def _flush(writer: image_store.ImageStoreWriter, buffer: List[Tuple[np.ndarray, int, str]]) -> None:
    if buffer:
        images, labels, paths = zip(*buffer)
        writer.append(np.stack(images), labels, paths)
        buffer.clear()
