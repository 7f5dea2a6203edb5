"""Block checksums of every HDF5 dataset, verified on reading; datasets whose data would come from
another file refused when a store is opened."""
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from preimage import atomic_files, hdf5, image_store, logs, train
from preimage.evaluate import evaluate_decoder
from preimage.features.cache import FeatureStore, compute_cache, join_caches
from tiny_data import builtin_stores

SIZE = 32
SRC = Path(__file__).resolve().parents[1] / "src" / "preimage"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Builtin crops at 32 px, their HOG features (dense) and the training images' SIFT (sparse)."""
    root = tmp_path_factory.mktemp("checksums")
    paths = builtin_stores(root, SIZE, 4, 2, caches=[("hog", {"cell_size": 8}, "hog")])
    compute_cache("sift", {}, paths["train"], root / "sift_train.h5", batch_size=16, device="cpu")
    return root


def _copy(tiny, name, tmp_path) -> Path:
    target = tmp_path / name
    shutil.copy(tiny / name, target)
    return target


def _flip_byte(path, dataset, chunk=0, where=0.5) -> None:
    """Change one byte (xor 0x01) of the stored bytes of chunk ``chunk`` of ``dataset``."""
    with h5py.File(path, "r") as handle:
        info = handle[dataset].id.get_chunk_info(chunk)
    _xor(path, info.byte_offset + int(info.size * where))


def _xor(path, offset, mask=0x01) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ mask]))


def _in_global_heap(content: bytes, needle: bytes) -> int:
    """The offset of the middle of ``needle`` inside a global heap collection of an HDF5 file
    (signature ``GCOL``, version, three reserved bytes, the collection's size as 8 bytes)."""
    for start in (m.start() for m in re.finditer(b"GCOL", content)):
        size = int.from_bytes(content[start + 8:start + 16], "little")
        found = content.find(needle, start, start + size)
        if found >= 0:
            return found + len(needle) // 2
    raise AssertionError(f"{needle!r} is in no global heap")


def _damaged(path, dataset) -> str:
    return re.escape(f"{path} is damaged (checksum mismatch in dataset '{dataset}'); delete it and rerun")


def _all_checksummed(path) -> None:
    with h5py.File(path, "r") as handle:
        names = []
        handle.visit(names.append)
        for name in names:
            item = handle[name]
            if isinstance(item, h5py.Dataset) and not h5py.check_string_dtype(item.dtype):
                assert item.compression == "gzip" and item.compression_opts == hdf5.ZLIB_LEVEL, (path, name)
                assert item.chunks is not None, (path, name)
            elif isinstance(item, h5py.Dataset):
                assert item.attrs[hdf5.STRINGS_SHA256] == hdf5.strings_sha256(item[:]), (path, name)


# --------------------------------------------------------------------------- a changed byte is named


def test_a_flipped_byte_in_an_image_block_fails_the_read_naming_the_file(tiny, tmp_path):
    path = _copy(tiny, "train.h5", tmp_path)
    with image_store.ImageStore(path) as images:
        first, count = images.read(0, 1), len(images)
    _flip_byte(path, "images", chunk=1)  # the second image
    with image_store.ImageStore(path) as images:
        assert np.array_equal(images.read(0, 1), first)  # the other blocks still read
        with pytest.raises(atomic_files.DamagedFile, match=_damaged(path, "images")) as info:
            images.read(0, count)
        with pytest.raises(atomic_files.DamagedFile, match=_damaged(path, "images")):
            images.take([3, 1])
    assert "\n" not in logs.failure_summary(info.value)


@pytest.mark.parametrize("dataset", ["labels", "paths", "classes"])
def test_a_flipped_byte_in_labels_paths_or_classes_is_named(tiny, tmp_path, dataset):
    path = _copy(tiny, "train.h5", tmp_path)
    with image_store.ImageStore(path) as images:
        values = getattr(images, dataset)
    if dataset == "labels":
        _flip_byte(path, "labels")
    else:  # variable-length strings live in the file's global heap, outside any chunk
        _xor(path, _in_global_heap(path.read_bytes(), max(values, key=len).encode()))
    with image_store.ImageStore(path) as images:
        with pytest.raises(atomic_files.DamagedFile, match=_damaged(path, dataset)):
            getattr(images, dataset)


def test_a_flipped_byte_in_a_feature_block_fails_the_read_naming_the_file(tiny, tmp_path):
    path = _copy(tiny, "hog_train.h5", tmp_path)
    _flip_byte(path, "features", where=0.3)
    with FeatureStore(path) as features:
        with pytest.raises(atomic_files.DamagedFile, match=_damaged(path, "features")):
            features.read(0, len(features))


@pytest.mark.parametrize("dataset", ["table", "offsets"])
def test_a_flipped_byte_in_a_sparse_cache_is_named(tiny, tmp_path, dataset):
    path = _copy(tiny, "sift_train.h5", tmp_path)
    _flip_byte(path, dataset)
    with pytest.raises(atomic_files.DamagedFile, match=_damaged(path, dataset)):
        with FeatureStore(path) as features:  # the offsets are read when the cache opens
            features.read(0, len(features))


def test_a_block_overwritten_with_0xff_is_caught(tiny, tmp_path):
    """The whole stored block, checksum included, set to 0xFF (an image turned white): HDF5's
    Fletcher-32 cannot see this (0xFFFF and 0x0000 are the same to it); the zlib stream can."""
    path = _copy(tiny, "train.h5", tmp_path)
    with h5py.File(path, "r") as handle:
        info = handle["images"].id.get_chunk_info(2)
        images = handle["images"][:]
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset)
        handle.write(b"\xff" * info.size)
    with image_store.ImageStore(path) as store_images, pytest.raises(atomic_files.DamagedFile, match=_damaged(path, "images")):
        store_images.read(2, 3)
    fletcher = tmp_path / "fletcher32.h5"
    with h5py.File(fletcher, "w") as handle:
        handle.create_dataset("images", data=images, chunks=(1, *images.shape[1:]), fletcher32=True)
        info = handle["images"].id.get_chunk_info(2)
    with open(fletcher, "r+b") as handle:
        handle.seek(info.byte_offset)
        handle.write(b"\xff" * info.size)
    with h5py.File(fletcher, "r") as handle:
        assert (handle["images"][2] == 255).all()  # read back without a complaint


def test_training_on_a_damaged_cache_stops_naming_it(tiny, tmp_path):
    """Both ways training reads pairs: preloaded, and streamed by the background reader."""
    features = _copy(tiny, "hog_train.h5", tmp_path)
    with h5py.File(features, "r") as handle:
        chunks = handle["features"].id.get_num_chunks()
    _flip_byte(features, "features", chunk=chunks - 1)
    cfg = dict(epochs=1, batch_size=8, width=0.125, device="cpu", seed=0, val_fraction=0.1)
    for preload_mb in (4096, 0):
        with pytest.raises(atomic_files.DamagedFile, match=_damaged(features, "features")):
            train.train_decoder("hog", str(features), str(tiny / "train.h5"), str(tmp_path / f"d{preload_mb}.pt"),
                                str(tmp_path / f"d{preload_mb}.csv"), str(tmp_path / f"ckpt{preload_mb}.pt"),
                                {**cfg, "preload_mb": preload_mb})
        assert not (tmp_path / f"d{preload_mb}.pt").exists()


@pytest.mark.parametrize("damaged", ["features", "images"])
def test_the_streamed_reader_names_a_damaged_block(tiny, tmp_path, damaged):
    features, images = _copy(tiny, "hog_train.h5", tmp_path), _copy(tiny, "train.h5", tmp_path)
    path = features if damaged == "features" else images
    _flip_byte(path, damaged)
    paired = train.PairedData(str(features), str(images), np.arange(12), preload_mb=0)
    try:
        assert not paired.in_memory
        with pytest.raises(atomic_files.DamagedFile, match=_damaged(path, damaged)):
            list(paired.batches(4, np.random.default_rng(0)))
    finally:
        paired.close()


def test_joining_a_damaged_shard_names_it(tiny, tmp_path):
    parts = [tmp_path / f"part{i}.h5" for i in range(2)]
    for i, part in enumerate(parts):
        compute_cache("hog", {"cell_size": 8}, tiny / "train.h5", part, batch_size=8, device="cpu", shard=(i, 2))
    join_caches(parts, tmp_path / "joined.h5")
    _all_checksummed(tmp_path / "joined.h5")
    _flip_byte(parts[1], "features")
    with pytest.raises(atomic_files.DamagedFile, match=_damaged(parts[1], "features")):
        join_caches(parts, tmp_path / "again.h5")
    assert not (tmp_path / "again.h5").exists()


# --------------------------------------------------------------------------- every writer checksums


def test_every_dataset_written_carries_a_checksum(tiny, tmp_path):
    for name in ("train.h5", "test.h5", "hog_train.h5", "hog_test.h5", "sift_train.h5"):
        _all_checksummed(tiny / name)
    cfg = dict(epochs=1, batch_size=8, width=0.125, device="cpu", seed=0, val_fraction=0.1)
    train.train_decoder("hog", str(tiny / "hog_train.h5"), str(tiny / "train.h5"), str(tmp_path / "d.pt"),
                        str(tmp_path / "d.csv"), str(tmp_path / "ckpt.pt"), cfg)
    evaluate_decoder("hog", str(tmp_path / "d.pt"), str(tiny / "hog_test.h5"), str(tiny / "test.h5"),
                     str(tiny / "hog_train.h5"), str(tiny / "train.h5"), str(tmp_path / "error.csv"),
                     str(tmp_path / "recon.h5"), device="cpu")
    _all_checksummed(tmp_path / "recon.h5")


def test_no_dataset_is_created_outside_the_helper():
    """Every writer goes through hdf5.create_dataset (inside hdf5.create_h5), so none can forget
    the checksum; hdf5.create_h5 also refuses a file holding a dataset made another way."""
    offenders = []
    for path in SRC.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"(?<!hdf5)\.create_dataset\(|require_dataset\(", line) and path.name != "hdf5.py":
                offenders.append(f"{path.relative_to(SRC)}:{number}")
            if re.search(r"h5py\.File\([^)]*[\"'][wax]", line) and path.name != "hdf5.py":
                offenders.append(f"{path.relative_to(SRC)}:{number}")
    assert not offenders


def test_a_dataset_made_without_the_helper_is_refused_when_written(tmp_path):
    with pytest.raises(ValueError, match="dataset 'x' was created without a checksum"):
        with atomic_files.atomic_path(tmp_path / "out.h5") as tmp, hdf5.create_h5(tmp) as handle:
            handle.create_dataset("x", data=np.arange(4))
    assert not (tmp_path / "out.h5").exists()
    with pytest.raises(ValueError, match="scalar"):
        with hdf5.create_h5(tmp_path / "scalar.h5") as handle:
            hdf5.create_dataset(handle, "n", data=3)


def test_small_and_empty_datasets_are_checksummed_too(tmp_path):
    path = tmp_path / "small.h5"
    with atomic_files.atomic_path(path) as tmp, hdf5.create_h5(tmp) as handle:
        hdf5.create_dataset(handle, "one", data=np.array([7]))
        hdf5.create_dataset(handle, "empty", data=np.zeros((0, 2)))
        hdf5.create_dataset(handle, "names", data=np.array(["a", "é"], dtype=object), dtype=hdf5.STRING_DTYPE)
    _all_checksummed(path)
    with hdf5.reading(path) as handle:
        assert handle["one"][:].tolist() == [7] and handle["empty"].shape == (0, 2)
    with hdf5.open_h5(path) as handle:
        assert hdf5.read_strings(path, handle, "names") == ["a", "é"]


# --------------------------------------------------------------------------- data from another file


def _store_like(path, tiny, images_kwargs):
    """An image store like ``tiny``/train.h5 whose ``images`` dataset is made by ``images_kwargs``."""
    with h5py.File(tiny / "train.h5", "r") as source, h5py.File(path, "w") as handle:
        for key, value in source.attrs.items():
            handle.attrs[key] = value
        for name in ("labels", "paths", "classes"):
            source.copy(name, handle)
        images_kwargs(handle, source["images"])


def test_a_dataset_with_external_storage_is_refused_when_opened(tiny, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(range(256)) * 64)

    def external(handle, images):
        handle.create_dataset("images", shape=(4, 3, 4, 4), dtype=np.uint8, external=[(str(secret), 0, 192)])

    path = tmp_path / "external.h5"
    _store_like(path, tiny, external)
    message = re.escape(f"{path} is damaged (dataset 'images' has external storage: its data would be read from ")
    for reader in (image_store.ImageStore, FeatureStore, hdf5.reading, hdf5.open_h5):
        with pytest.raises(atomic_files.DamagedFile, match=message + ".*secret.bin"):
            with reader(path):
                pass


def test_a_virtual_dataset_is_refused_when_opened(tiny, tmp_path):
    other = _copy(tiny, "test.h5", tmp_path)

    def virtual(handle, images):
        with h5py.File(other, "r") as source:
            shape = source["images"].shape
        layout = h5py.VirtualLayout(shape=shape, dtype=np.uint8)
        layout[:] = h5py.VirtualSource(str(other), "images", shape=shape)
        handle.create_virtual_dataset("images", layout)

    path = tmp_path / "virtual.h5"
    _store_like(path, tiny, virtual)
    with pytest.raises(atomic_files.DamagedFile, match=re.escape(f"{path} is damaged (dataset 'images' is virtual")):
        image_store.ImageStore(path)


def test_an_external_link_is_refused_when_opened(tiny, tmp_path):
    other = _copy(tiny, "test.h5", tmp_path)
    path = tmp_path / "linked.h5"
    _store_like(path, tiny, lambda handle, images: handle.__setitem__("images", h5py.ExternalLink(str(other),
                                                                                                   "images")))
    with pytest.raises(atomic_files.DamagedFile, match=re.escape(f"{path} is damaged ('images' is a link to another file")):
        image_store.ImageStore(path)


def test_a_store_without_checksums_is_refused_when_opened(tiny, tmp_path):
    """A store written before the checksums (lzf, no checksum) cannot be verified: it is named."""
    path = tmp_path / "old.h5"
    _store_like(path, tiny, lambda handle, images: handle.create_dataset("images", data=images[:],
                                                                         chunks=(1, *images.shape[1:]),
                                                                         compression="lzf"))
    with pytest.raises(atomic_files.DamagedFile, match=re.escape(f"{path} is damaged (dataset 'images' carries no checksum")):
        image_store.ImageStore(path)
