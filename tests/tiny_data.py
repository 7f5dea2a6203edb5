"""Small data and feature stores made by the library's own stages, for tests that train or decode."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Mapping, Sequence, Tuple

from preimage import data
from preimage.config import validate_config
from preimage.features.cache import compute_cache


def builtin_stores(root: Path, size: int, train_per_class: int, test_per_class: int,
                   caches: Iterable[Tuple[str, Mapping, str]] = (),
                   splits: Sequence[str] = ("train", "test")) -> Dict[str, Path]:
    """Builtin crops at ``size`` px in ``root``/train.h5 and test.h5 (returned by split), and for each
    (representation, parameters, stem) of ``caches`` its CPU feature cache ``root``/{stem}_{split}.h5
    of every split in ``splits``."""
    params = validate_config({"data": {"size": size, "train_per_class": train_per_class,
                                       "test_per_class": test_per_class}})["data"]
    paths = {"train": root / "train.h5", "test": root / "test.h5"}
    data.extract(params, paths)
    for representation, options, stem in caches:
        for split in splits:
            compute_cache(representation, options, paths[split], root / f"{stem}_{split}.h5", batch_size=16,
                          device="cpu")
    return paths


def assert_same_decoder_weights(path_a: Path, path_b: Path) -> None:
    """The decoders saved at ``path_a`` and ``path_b`` hold the same parameters, bit for bit."""
    import torch

    a = torch.load(path_a, weights_only=True)["state_dict"]
    b = torch.load(path_b, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def h5_contents(path: Path) -> tuple:
    """Every dataset (values, dtype, chunking, compression) and every attribute of an HDF5 file:
    ``({name: (values, dtype, chunks, compression)}, attrs)``."""
    import h5py

    with h5py.File(path, "r") as handle:
        datasets = {name: (handle[name][:], handle[name].dtype, handle[name].chunks, handle[name].compression)
                    for name in handle}
        return datasets, dict(handle.attrs)
