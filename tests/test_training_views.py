"""Several training crops per photograph (data.crops_per_image) from a folder of photographs."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from preimage import data, train
from preimage.image_store import ImageStore

SIZE = 32


def _params(root, **overrides):
    params = dict(source="folder", root=str(root), val_labels=None, size=SIZE, seed=0, classes=None,
                  train_per_class=4, test_per_class=2, min_side=16, extensions=list(data.IMAGE_EXTENSIONS),
                  builtin={}, crops_per_image=5, crop_min_scale=0.5)
    params.update(overrides)
    return params


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six photographs of 96×64 px, each with a gradient, so crops and mirrors differ."""
    root = tmp_path_factory.mktemp("photos") / "flat"
    root.mkdir()
    yy, xx = np.mgrid[0:64, 0:96]
    for i in range(6):
        array = np.stack([xx * 2 + i * 10, yy * 3, (xx + yy + 40 * i) % 256], -1).clip(0, 255).astype(np.uint8)
        Image.fromarray(array).save(root / f"p{i}.png")
    return root


def _extract(out, params, threads=1):
    paths = {"train": out / "train.h5", "test": out / "test.h5"}
    data.extract(params, paths, threads=threads)
    return ImageStore(paths["train"]), ImageStore(paths["test"])


def test_each_training_photograph_gives_its_centre_crop_and_random_views(photos, tmp_path):
    train_store, test_store = _extract(tmp_path, _params(photos))
    assert len(train_store) == 4 * 5 and len(test_store) == 2  # test images are never augmented
    assert train_store.attrs["crops_per_image"] == 5 and test_store.attrs["crops_per_image"] == 1
    names = train_store.paths
    sources = [n.split("#")[0] for n in names]
    assert [n.split("#view=")[1] for n in names] == [str(k) for _ in range(4) for k in range(5)]
    assert not set(sources) & set(test_store.paths)
    images = train_store.read(0, len(train_store))
    for k in range(4):
        # view 0 is the paper's view: exactly what a test image of that photograph would be
        centre = data.resize_center_crop(data.open_rgb(sources[5 * k]), SIZE)
        assert np.array_equal(images[5 * k], centre)
        views = images[5 * k: 5 * k + 5].reshape(5, -1)
        assert len({v.tobytes() for v in views}) == 5  # every view differs


def test_views_are_reproducible_from_the_seed_whatever_the_workers(photos, tmp_path):
    one, _ = _extract(tmp_path / "a", _params(photos))
    two, _ = _extract(tmp_path / "b", _params(photos), threads=2)
    other, _ = _extract(tmp_path / "c", _params(photos, seed=1))
    assert one.paths == two.paths and np.array_equal(one.read(0, 20), two.read(0, 20))
    assert not np.array_equal(one.read(0, 20), other.read(0, 20))


def test_view_boxes_lie_inside_the_photograph_at_the_configured_scales():
    views = data.TrainingViews(200, 0.4, 3)
    boxes = views.boxes("any/photo.jpg", 300, 200)
    assert boxes[0] == ((50, 0, 200), False)
    sides = np.array([side for (_, _, side), _ in boxes[1:]])
    assert sides.min() >= 0.4 * 200 - 1 and sides.max() <= 200
    assert all(0 <= left and left + side <= 300 and 0 <= top and top + side <= 200
               for (left, top, side), _ in boxes)
    flips = [flip for _, flip in boxes[1:]]
    assert 0.35 < np.mean(flips) < 0.65
    assert views.boxes("any/photo.jpg", 300, 200) == boxes and views.boxes("other.jpg", 300, 200) != boxes


def test_validation_holds_out_whole_photographs_of_a_store_with_views(photos, tmp_path):
    train_store, _ = _extract(tmp_path, _params(photos))
    groups = train.photo_groups(train_store)
    train_idx, val_idx = train.split_train_val(len(train_store), 0.25, 0, groups)
    assert len(val_idx) == 5  # one photograph of four, with its five views
    assert not set(groups[train_idx]) & set(groups[val_idx])


def test_the_builtin_source_refuses_views():
    params = {**_params(Path(".")), "source": "builtin", "root": None}
    with pytest.raises(data.DataError, match="crops_per_image applies to the folder and imagenet sources"):
        data.training_views(params)


def test_the_configuration_refuses_views_of_the_builtin_source_before_any_job():
    from preimage.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match="data.crops_per_image: applies to the folder and imagenet sources"):
        validate_config({"data": {"source": "builtin", "crops_per_image": 4}})
