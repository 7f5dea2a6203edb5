"""Paper scale: sharded extraction and feature caches, the number of shards, features.store:
recompute, chunk-aware streaming. Library level, on tiny stores (and one dry run);
tests/test_workflow_scale.py runs the DAG."""
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from preimage import atomic_files, data, hdf5, image_store, streaming, train
from preimage.features.cache import FeatureStore, write_feature_store
from preimage.config import ConfigError, validate_config
from preimage.features.cache import Recomputer, compute_cache, join_caches, shard_rows, write_recipe
from preimage.representations import Catalog
from workflow import ROOT, job_counts, snakemake

SIZE = 32


def _datasets(path):
    with h5py.File(path, "r") as handle:
        return {name: handle[name][:] for name in ("images", "labels", "paths", "classes")}


def _same_store(a, b):
    da, db = _datasets(a), _datasets(b)
    for name in da:
        assert np.array_equal(da[name], db[name]), name
    with image_store.ImageStore(a) as sa, image_store.ImageStore(b) as sb:
        aa, ab = sa.attrs, sb.attrs
    assert aa["content_sha256"] == ab["content_sha256"]
    assert aa["params"] == ab["params"] and aa["n_images"] == ab["n_images"]


def _extract_sharded(params, folder: Path, shards: int):
    parts = {"train": [], "test": []}
    for i in range(shards):
        out = {split: folder / f"shard{i}" / f"{split}.h5" for split in ("train", "test")}
        data.extract(params, out, shard=(i, shards))
        for split in out:
            parts[split].append(out[split])
    joined = {split: folder / f"{split}.h5" for split in ("train", "test")}
    data.join_shards(parts, joined)
    return joined


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    """The embedded default at 32 px, extracted once whole and once in 3 shards."""
    root = tmp_path_factory.mktemp("builtin")
    params = validate_config({"data": {"size": SIZE, "train_per_class": 5, "test_per_class": 4}})["data"]
    params = {k: v for k, v in params.items() if k not in ("threads", "log_every", "shards")}
    whole = {split: root / "whole" / f"{split}.h5" for split in ("train", "test")}
    data.extract(params, whole)
    sharded = _extract_sharded(params, root / "sharded", 3)
    return root, whole, sharded


# --------------------------------------------------------------------------- sharded extraction


def test_shards_of_the_builtin_source_join_into_the_unsharded_stores(builtin):
    _, whole, sharded = builtin
    for split in ("train", "test"):
        _same_store(whole[split], sharded[split])
    with image_store.ImageStore(sharded["train"]) as joined:
        assert "shard" not in joined.attrs and len(joined) == len(data.BUILTIN_PHOTOS) * 5


def test_shard_labels_are_contiguous_balanced_and_cover_every_class():
    params = validate_config({"data": {"size": SIZE, "train_per_class": 3, "test_per_class": 2}})["data"]
    selection = data.select_builtin(params)
    parts = data.shard_labels(selection, 3)
    flat = [label for part in parts for label in part]
    assert flat == sorted(selection.classes.index(c) for c in selection.classes)  # each label once, in order
    weights = data.label_weights(selection)
    loads = [sum(weights[label] for label in part) for part in parts]
    assert max(loads) - min(loads) <= max(weights.values())
    assert data.shard_labels(selection, 3) == parts  # stable
    assert sum(1 for p in data.shard_labels(selection, 20) if p) == len(selection.classes)  # more shards than classes


def _photo(seed, width=70, height=50):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _fake_imagenet(root: Path, per_class: int = 4, classes=("n01", "n02", "n03", "n04")):
    for k, wnid in enumerate(classes):
        for i in range(per_class):
            path = root / "train" / wnid / f"{wnid}_{i}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_photo(100 * k + i)).save(path)
        val = root / "val" / wnid / f"{wnid}_val.JPEG"
        val.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_photo(1000 + k)).save(val)
    return root


def test_imagenet_all_with_a_broken_file_shards_to_the_same_stores(tmp_path):
    """The paper's setting (train_per_class: all): a skipped file leaves the same images, in the same
    order, whether one job or three extract them."""
    root = _fake_imagenet(tmp_path / "ILSVRC2012")
    (root / "train" / "n02" / "n02_broken.JPEG").write_bytes(b"\xff\xd8 truncated")
    params = dict(source="imagenet", root=str(root), val_labels=None, size=SIZE, seed=0, classes=None,
                  train_per_class="all", test_per_class=1, min_side=16, extensions=list(data.IMAGE_EXTENSIONS),
                  builtin={})
    whole = {split: tmp_path / "whole" / f"{split}.h5" for split in ("train", "test")}
    report = data.extract(params, whole)
    sharded = _extract_sharded(params, tmp_path / "sharded", 3)
    for split in ("train", "test"):
        _same_store(whole[split], sharded[split])
    with image_store.ImageStore(sharded["train"]) as joined:
        assert joined.attrs["skipped"] == report.skipped and len(joined) == 16


def test_join_refuses_shards_of_different_extractions(builtin, tmp_path):
    root, _, _ = builtin
    params = validate_config({"data": {"size": SIZE, "train_per_class": 5, "test_per_class": 4, "seed": 1}})["data"]
    params = {k: v for k, v in params.items() if k not in ("threads", "log_every", "shards")}
    other = {split: tmp_path / f"{split}.h5" for split in ("train", "test")}
    data.extract(params, other, shard=(1, 3))
    parts = {split: [root / "sharded" / "shard0" / f"{split}.h5", other[split], root / "sharded" / "shard2" / f"{split}.h5"]
             for split in ("train", "test")}
    with pytest.raises(data.DataError, match="not a shard of the same extraction"):
        data.join_shards(parts, {split: tmp_path / "joined" / f"{split}.h5" for split in parts})
    assert not (tmp_path / "joined" / "train.h5").exists()


def test_image_store_digest_is_the_recorded_content_digest(builtin):
    _, whole, _ = builtin
    digest = image_store.image_store_digest(whole["train"])
    assert digest.startswith("content-sha256:") and len(digest) == len("content-sha256:") + 64
    with image_store.ImageStore(whole["test"]) as s:
        assert image_store.image_store_digest(whole["test"]) == f"content-sha256:{s.attrs['content_sha256']}"
    assert image_store.image_store_digest(whole["train"]) != image_store.image_store_digest(whole["test"])


# --------------------------------------------------------------------------- sharded feature caches


def test_shard_rows_cover_every_row_once_on_batch_boundaries():
    for count, shards, align in ((35, 3, 8), (100, 7, 16), (5, 4, 64), (0, 3, 8), (64, 3, 1)):
        bounds = [shard_rows(count, i, shards, align) for i in range(shards)]
        assert bounds[0][0] == 0 and bounds[-1][1] == count
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(start % align == 0 for start, _ in bounds if start < count)
    with pytest.raises(ValueError):
        shard_rows(10, 3, 3)


@pytest.mark.parametrize("name, params", [("hog", {"cell_size": 8}), ("sift", {}),
                                          ("conv3", {"weights": "random", "crop": 32})])
def test_sharded_caches_join_into_the_unsharded_cache(builtin, tmp_path, name, params):
    _, whole, _ = builtin
    kwargs = dict(batch_size=8, device="cpu")
    compute_cache(name, params, whole["train"], tmp_path / "whole.h5", **kwargs)
    parts = [tmp_path / f"part{i}.h5" for i in range(3)]
    for i, part in enumerate(parts):
        compute_cache(name, params, whole["train"], part, shard=(i, 3), **kwargs)
    join_caches(parts, tmp_path / "joined.h5")
    with h5py.File(tmp_path / "whole.h5", "r") as a, h5py.File(tmp_path / "joined.h5", "r") as b:
        assert sorted(a) == sorted(b)
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].chunks == b[key].chunks
            assert np.array_equal(a[key][:], b[key][:]), key
        assert dict(a.attrs) == dict(b.attrs)


def test_join_refuses_a_missing_or_foreign_shard(builtin, tmp_path):
    _, whole, _ = builtin
    parts = [tmp_path / f"part{i}.h5" for i in range(3)]
    for i, part in enumerate(parts):
        compute_cache("hog", {"cell_size": 8}, whole["train"], part, batch_size=8, device="cpu", shard=(i, 3))
    with pytest.raises(ValueError, match="shard"):
        join_caches([parts[0], parts[2]], tmp_path / "joined.h5")
    compute_cache("hog", {"cell_size": 4}, whole["train"], tmp_path / "other.h5", batch_size=8, device="cpu",
                  shard=(1, 3))
    with pytest.raises(ValueError, match="differs from shard 0"):
        join_caches([parts[0], tmp_path / "other.h5", parts[2]], tmp_path / "joined.h5")
    assert not (tmp_path / "joined.h5").exists()


# --------------------------------------------------------------------------- recompute


@pytest.fixture(scope="module")
def conv3(builtin, tmp_path_factory):
    """conv3 of an untrained AlexNet on the training images: a float16 cache and a recompute recipe."""
    _, whole, _ = builtin
    root = tmp_path_factory.mktemp("conv3")
    params = {"weights": "random", "crop": 32}
    compute_cache("conv3", params, whole["train"], root / "cache.h5", batch_size=8, device="cpu")
    write_recipe("conv3", params, whole["train"], root / "recipe.h5", batch_size=8, device="cpu")
    return root, whole


def test_recompute_reads_like_the_cache(conv3):
    root, whole = conv3
    with FeatureStore(root / "cache.h5") as cache, FeatureStore(root / "recipe.h5") as recipe:
        assert recipe.recomputed and not cache.recomputed
        assert len(recipe) == len(cache) and recipe.shape == cache.shape
        for key in ("representation", "identity", "images_sha256", "target_size", "decoder_kind", "dtype"):
            assert recipe.attrs[key] == cache.attrs[key], key
        a, b = cache.read(0, len(cache)), recipe.read(0, len(recipe))
        assert a.dtype == b.dtype == np.float32
        # equal up to float16 rounding: both are rounded to float16 from the same float32 network
        assert np.allclose(a, b, rtol=2e-3, atol=1e-3 * float(np.abs(a).max()))
        assert np.array_equal(b, b.astype(np.float16).astype(np.float32))
        pick = [7, 2, 30, 2]
        assert np.allclose(recipe.take(pick), a[pick], rtol=2e-3, atol=1e-3 * float(np.abs(a).max()))
    with h5py.File(root / "recipe.h5", "r") as handle:
        assert len(handle) == 0  # no datasets: nothing cached


def test_recompute_refuses_other_images_or_weights(conv3, tmp_path):
    root, whole = conv3
    moved = tmp_path / "recipe.h5"
    moved.write_bytes((root / "recipe.h5").read_bytes())
    attrs = hdf5.read_attrs(h5py.File(moved, "r"))
    with pytest.raises(atomic_files.DamagedFile, match="weights changed"):
        Recomputer(moved, {**attrs, "params": {"weights": "random", "seed": 1, "crop": 32}})
    with pytest.raises(atomic_files.DamagedFile, match="other images"):
        Recomputer(moved, {**attrs, "images_sha256": "content-sha256:0"})
    with pytest.raises(FileNotFoundError):
        Recomputer(moved, {**attrs, "images_relative": "nowhere.h5", "images": str(tmp_path / "nowhere.h5")})


def test_training_on_a_recipe_matches_training_on_the_cache(conv3, tmp_path):
    root, whole = conv3
    cfg = dict(epochs=2, batch_size=8, width=0.125, device="cpu", seed=0, val_fraction=0.1)
    losses = {}
    for name in ("cache", "recipe"):
        result = train.train_decoder("conv3", str(root / f"{name}.h5"), str(whole["train"]),
                                     str(tmp_path / f"{name}.pt"), str(tmp_path / f"{name}.csv"),
                                     str(tmp_path / f"{name}.ckpt"), cfg)
        losses[name] = [row["train_loss"] for row in result["history"]]
    assert np.allclose(losses["cache"], losses["recipe"], rtol=1e-3)


# --------------------------------------------------------------------------- streaming


def test_plan_reads_whole_chunks_once_in_a_seeded_order():
    indices = np.setdiff1d(np.arange(200), [3, 50, 51, 199])
    a = streaming.plan(indices, chunk=8, buffer=40, rng=np.random.default_rng(5))
    b = streaming.plan(indices, chunk=8, buffer=40, rng=np.random.default_rng(5))
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    rows = np.concatenate([r for r, _ in a])
    assert np.array_equal(np.sort(rows), indices)  # every row once
    chunks = [set((r // 8).tolist()) for r, _ in a]
    assert sum(len(c) for c in chunks) == len(set().union(*chunks))  # no chunk in two buffers
    assert all(len(r) >= 40 for r, _ in a[:-1]) and all(sorted(p) == list(range(len(r))) for r, p in a)
    first = [r[p] for r, p in a]
    assert not np.array_equal(np.concatenate(first), indices)  # shuffled
    ordered = streaming.plan(indices, chunk=8, buffer=40, rng=None)
    assert np.array_equal(np.concatenate([r[p] for r, p in ordered]), indices)


def test_stream_serves_full_batches_and_every_pair_once(tmp_path):
    n = 50
    with image_store.write_image_store(tmp_path / "images.h5", 4, ["c"], {}) as writer:
        writer.append(np.repeat(np.arange(n, dtype=np.uint8), 48).reshape(n, 3, 4, 4), [0] * n, list(map(str, range(n))))
    with write_feature_store(tmp_path / "features.h5", n, (2,), "float16", {}) as writer:
        writer.append(np.stack([np.arange(n), 2 * np.arange(n)], 1).astype(np.float32))
    indices = np.arange(3, n)
    with image_store.ImageStore(tmp_path / "images.h5") as images, FeatureStore(tmp_path / "features.h5") as features:
        batches = list(streaming.stream_pairs(features, images, indices, 8, np.random.default_rng(0), buffer=10))
    sizes = [len(f) for f, _ in batches]
    assert all(s == 8 for s in sizes[:-1]) and sum(sizes) == len(indices)
    feats, imgs = np.concatenate([f for f, _ in batches]), np.concatenate([x for _, x in batches])
    assert feats.dtype == np.float16  # as stored
    assert sorted(feats[:, 0].astype(int)) == indices.tolist()
    assert np.array_equal(feats[:, 1], 2 * feats[:, 0])
    assert all(np.all(x == int(f[0])) for f, x in zip(feats, imgs))  # features stay paired with their images
    assert not np.array_equal(feats[:, 0], np.sort(feats[:, 0]))  # shuffled


def test_prefetch_reraises_and_stops_with_the_consumer():
    def failing():
        yield 1
        raise RuntimeError("read failed")

    with pytest.raises(RuntimeError, match="read failed"):
        list(streaming.prefetch(failing()))
    produced = []

    def endless():
        for i in range(10_000):
            produced.append(i)
            yield i

    for item in streaming.prefetch(endless(), depth=2):
        if item == 3:
            break
    assert len(produced) < 100  # the thread stopped with the consumer


def test_streamed_recomputed_pairs_equal_the_preloaded_ones(conv3):
    root, whole = conv3
    indices = np.arange(3, 35)
    kwargs = dict(crop=None)
    memory = train.PairedData(str(root / "recipe.h5"), str(whole["train"]), indices, preload_mb=100, **kwargs)
    streamed = train.PairedData(str(root / "recipe.h5"), str(whole["train"]), indices, preload_mb=0, **kwargs)
    assert memory.in_memory and not streamed.in_memory
    got = {}
    for name, source in (("memory", memory), ("streamed", streamed)):
        feats, imgs = zip(*source.batches(8, np.random.default_rng(0)))
        feats, imgs = np.concatenate(feats), np.concatenate(imgs)
        order = np.lexsort(imgs.reshape(len(imgs), -1).T)
        got[name] = feats[order], imgs[order]
        source.close()
    assert np.array_equal(got["memory"][1], got["streamed"][1])
    assert np.allclose(got["memory"][0], got["streamed"][0], rtol=2e-3, atol=1e-3 * float(np.abs(got["memory"][0]).max()))


# --------------------------------------------------------------------------- configuration


def test_feature_store_is_resolved_per_family_and_representation():
    config = validate_config({"representations": ["hog", "conv3", "fc6"], "variants": {"autoencoder": ["fc6"]},
                              "features": {"store": {"default": "cache", "alexnet": "recompute", "fc6-ae": "cache"}}})
    catalog = Catalog(config)
    assert {s: catalog.feature_store(s) for s in catalog.slugs} == {
        "hog": "cache", "conv3": "recompute", "fc6": "recompute", "fc6-ae": "cache", "conv3-random": "recompute",
        "fc6-random": "recompute"}
    assert Catalog(validate_config({"representations": ["hog"]})).feature_store("hog") == "cache"


@pytest.mark.parametrize("store_setting, message", [
    ({"alexnte": "recompute"}, "features.store.alexnte"),
    ("recompute", "sift stores keypoints"),
    ({"sift": "recompute"}, "sift stores keypoints"),
])
def test_feature_store_mistakes_are_config_errors(store_setting, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({"representations": ["hog", "sift", "conv3"], "features": {"store": store_setting}})


def test_shards_must_be_positive():
    with pytest.raises(ConfigError, match="data.shards"):
        validate_config({"data": {"shards": 0}})
    assert validate_config({})["data"]["shards"] == 1


def _empty_imagenet(root: Path, classes: int = 3, train: int = 5, val: int = 1) -> Path:
    """An ILSVRC2012-shaped tree of empty files: counting lists files, it decodes nothing."""
    for k in range(classes):
        for split, count in (("train", train), ("val", val)):
            folder = root / split / f"n{k:02d}"
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"n{k:02d}_{i}.JPEG").touch()
    return root


def test_shard_count_follows_the_number_of_images(tmp_path):
    root = _empty_imagenet(tmp_path / "ILSVRC2012")
    params = validate_config({"data": {"source": "imagenet", "root": str(root), "train_per_class": "all",
                                       "test_per_class": 1}})["data"]
    images = 3 * (5 + 1)
    assert data.planned_image_count(params) == data.select_imagenet(params).expected_total() == images
    assert data.shard_count(params, 64, 1000) == 1      # the paper's 64 shards on three classes: one job
    assert data.shard_count(params, 64, 4) == 5         # ceil(18 / 4)
    assert data.shard_count(params, 3, 4) == 3          # never more than data.shards
    assert data.shard_count(params, 1, 1) == 1
    # the listing stops once it has enough: the counted test split (3) and the first class (5)
    assert data.planned_image_count(params, enough=5) == 3 + 5
    counted = {**params, "train_per_class": 2, "classes": 2}
    assert data.planned_image_count(counted) == data.select_imagenet(counted).expected_total() == 2 * (2 + 1)
    builtin = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))["data"]
    assert data.planned_image_count(builtin) == data.select_builtin(builtin).expected_total() == 9 * (200 + 11)
    assert data.shard_count(builtin, 64, 1000) == 2  # the embedded default's nine photographs, 1,899 crops
    with pytest.raises(ValueError, match="at least 1"):
        data.shard_count(params, 4, 0)


def test_min_shard_images_is_validated_and_leaves_the_images_alone():
    assert validate_config({})["data"]["min_shard_images"] == 1000
    with pytest.raises(ConfigError, match="data.min_shard_images"):
        validate_config({"data": {"min_shard_images": 0}})


@pytest.mark.slow
def test_paper_config_on_three_classes_plans_one_extraction_job(tmp_path):
    """config/paper.yaml asks for 64 shards; on a tree of three classes (21 images) the dry run plans
    one extraction job and unsharded feature caches, and says why."""
    root = _empty_imagenet(tmp_path / "ILSVRC2012", val=2)
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = snakemake(workdir, "-n", "all", "--quiet=rules", "--configfile", str(ROOT / "config" / "paper.yaml"),
                       "--config", f"data={{root: {root}, classes: null}}")
    planned = job_counts(result)
    assert planned["extract_data"] == 1 and "extract_shard" not in planned and "join_data" not in planned
    assert not [rule for rule in planned if "shard" in rule]
    assert "data.shards: 1 shard(s)" in result.stderr
