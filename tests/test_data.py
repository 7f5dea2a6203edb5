"""Subset extraction: the three sources, bad input, determinism, atomic writes."""
import io
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from preimage import data
from preimage.image_store import ImageStore

SIZE = 32


def _params(**overrides):
    params = dict(
        source="folder",
        root=None,
        val_labels=None,
        size=SIZE,
        seed=0,
        classes=None,
        train_per_class=2,
        test_per_class=1,
        min_side=16,
        extensions=list(data.IMAGE_EXTENSIONS),
        builtin={},
    )
    params.update(overrides)
    return params


def _photo(seed, width=80, height=60):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(1, 1, 3))
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.integers(0, 256, size=(1, 1, 3))
    return np.clip(base * 0.5 + ramp * 0.5 + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)


def _save(path, array, fmt="JPEG", mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


def _extract(tmp_path, params, threads=1):
    out = {"train": tmp_path / "out" / "train.h5", "test": tmp_path / "out" / "test.h5"}
    report = data.extract(params, out, threads=threads)
    return report, ImageStore(out["train"]), ImageStore(out["test"])


# --------------------------------------------------------------------------- decoding


def test_resize_center_crop_shorter_side_then_centre():
    array = np.zeros((40, 80, 3), np.uint8)
    array[:, 20:60] = 255  # a white band in the centre 40 columns
    out = data.resize_center_crop(Image.fromarray(array), 20)
    assert out.shape == (3, 20, 20) and out.dtype == np.uint8
    assert out[:, :, 1:-1].min() == 255 and out.min() > 128  # the central band (edges: antialias filter)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "I;16"])
def test_open_rgb_converts_modes(tmp_path, mode):
    array = _photo(1)
    if mode == "I;16":
        path = tmp_path / "x.png"
        Image.fromarray((array[..., 0].astype(np.uint16) * 257)).save(path)
    else:
        fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
        path = _save(tmp_path / f"x.{fmt.lower()}", array, fmt=fmt, mode=mode)
    image = data.open_rgb(path)
    assert image.mode == "RGB" and image.size == (80, 60)


def test_cmyk_jpeg_keeps_its_colours(tmp_path):
    array = np.zeros((40, 40, 3), np.uint8)
    array[..., 0] = 200  # a red image
    path = _save(tmp_path / "cmyk.jpg", array, mode="CMYK")
    rgb = np.asarray(data.open_rgb(path)).astype(int)
    assert abs(rgb[..., 0].mean() - 200) < 12 and rgb[..., 1].mean() < 20 and rgb[..., 2].mean() < 20


def test_png_named_jpeg_is_decoded_by_content(tmp_path):
    path = _save(tmp_path / "really_png.JPEG", _photo(2), fmt="PNG")
    assert np.array_equal(np.asarray(data.open_rgb(path)), _photo(2))


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty"])
def test_bad_files_raise_badimage(tmp_path, kind):
    good = io.BytesIO()
    Image.fromarray(_photo(3, 200, 200)).save(good, format="JPEG")
    payload = {
        "corrupt": np.random.default_rng(0).bytes(5000),
        "truncated": good.getvalue()[: len(good.getvalue()) // 3],
        "empty": b"",
    }[kind]
    path = tmp_path / f"{kind}.JPEG"
    path.write_bytes(payload)
    with pytest.raises(data.BadImage):
        data.open_rgb(path)


# --------------------------------------------------------------------------- folder source


def test_folder_with_bad_inputs_extracts_the_rest(tmp_path):
    """The issue's acceptance case: corrupt, CMYK, grayscale and tiny files in one folder."""
    root = tmp_path / "photos"
    _save(root / "good.jpg", _photo(10))
    _save(root / "cmyk.jpg", _photo(11), mode="CMYK")
    _save(root / "gray.jpg", _photo(12), mode="L")
    _save(root / "tiny.png", _photo(13, 24, 18), fmt="PNG")  # smaller than S=32: upscaled
    _save(root / "png_named.JPEG", _photo(14), fmt="PNG")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    report, train, test = _extract(tmp_path, _params(root=str(root), train_per_class=4, test_per_class=1))
    kept = {Path(p).name for p in train.paths + test.paths}
    assert kept == {"good.jpg", "cmyk.jpg", "gray.jpg", "tiny.png", "png_named.JPEG"}
    assert len(report.skipped) == 1 and "corrupt.jpg" in report.skipped[0]
    assert train.attrs["skipped"] == report.skipped
    assert train.read(0, len(train)).shape == (4, 3, SIZE, SIZE)
    gray = (train.paths + test.paths).index(str(root / "gray.jpg"))
    images = np.concatenate([train.read(0, len(train)), test.read(0, len(test))])
    assert np.array_equal(images[gray][0], images[gray][1])  # grayscale replicated into RGB


def test_too_few_images_is_a_clear_error_and_leaves_no_output(tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        _save(root / f"{i}.jpg", _photo(i))
    (root / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(data.DataError, match=r"more usable image\(s\) needed"):
        _extract(tmp_path, _params(root=str(root), train_per_class=3, test_per_class=1))
    assert not (tmp_path / "out" / "train.h5").exists() and not list((tmp_path / "out").glob("*.tmp-*"))


def test_too_small_images_are_skipped(tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        _save(root / f"{i}.jpg", _photo(i))
    _save(root / "speck.png", _photo(9, 6, 5), fmt="PNG")
    report, train, test = _extract(tmp_path, _params(root=str(root), train_per_class=2, test_per_class=1))
    assert len(train) == 2 and len(test) == 1
    assert "speck.png" not in str(train.paths + test.paths)
    assert all("too small" in s for s in report.skipped if "speck.png" in s)
    with pytest.raises(data.BadImage, match="too small: 6x5"):
        data.load_item(data.Item(str(root / "speck.png"), 0, "train", ("train", 0)), SIZE, min_side=16)


def test_folder_classes_split_is_disjoint_and_seeded(tmp_path):
    root = tmp_path / "classes"
    for c in ("cat", "dog", "eel"):
        for i in range(5):
            _save(root / c / f"{c}{i}.jpg", _photo(hash((c, i)) % 1000))
    params = _params(root=str(root), classes=2, train_per_class=3, test_per_class=2)
    _, train, test = _extract(tmp_path, params)
    assert len(train.classes) == 2 and len(train) == 6 and len(test) == 4
    assert not set(train.paths) & set(test.paths)
    for path, label in zip(train.paths, train.labels):
        assert Path(path).parent.name == train.classes[label]
    (tmp_path / "again").mkdir()
    _, train2, _ = _extract(tmp_path / "again", params)
    assert train2.paths == train.paths
    assert np.array_equal(train2.read(0, 6), train.read(0, 6))


def test_parallel_extraction_equals_serial(tmp_path):
    root = tmp_path / "photos"
    for i in range(8):
        _save(root / f"{i}.jpg", _photo(i))
    _, serial, _ = _extract(tmp_path / "a", _params(root=str(root), train_per_class=6, test_per_class=2))
    _, parallel, _ = _extract(tmp_path / "b", _params(root=str(root), train_per_class=6, test_per_class=2), threads=2)
    assert serial.paths == parallel.paths
    assert np.array_equal(serial.read(0, 6), parallel.read(0, 6))


# --------------------------------------------------------------------------- imagenet source


def _fake_imagenet(root, wnids=("n01", "n02", "n03"), per_class=4, flat_val=None):
    for k, wnid in enumerate(wnids):
        for i in range(per_class):
            _save(root / "train" / wnid / f"{wnid}_{i}.JPEG", _photo(100 * k + i))
    lines = []
    for k, wnid in enumerate(wnids):
        for i in range(2):
            name = f"ILSVRC2012_val_{k * 2 + i:08d}.JPEG"
            if flat_val is None:
                _save(root / "val" / wnid / name, _photo(500 + k * 2 + i))
            else:
                _save(root / "val" / name, _photo(500 + k * 2 + i))
                lines.append((name, wnid))
    if flat_val == "csv":
        body = "ImageId,PredictionString\n" + "".join(f"{n[:-5]},{w} 1 2 3 4 {w} 5 6 7 8\n" for n, w in lines)
        (root / "LOC_val_solution.csv").write_text(body)
    elif flat_val == "txt":
        (root / "val_labels.txt").write_text("".join(f"{n} {w}\n" for n, w in lines))


@pytest.mark.parametrize("layout", [None, "csv", "txt"])
def test_imagenet_train_from_train_and_test_from_val(tmp_path, layout):
    root = tmp_path / "ILSVRC2012"
    _fake_imagenet(root, flat_val=layout)
    labels = {"csv": "LOC_val_solution.csv", "txt": "val_labels.txt", None: None}[layout]
    params = _params(source="imagenet", root=str(root), classes=2, train_per_class=3, test_per_class=2, val_labels=labels)
    _, train, test = _extract(tmp_path, params)
    assert len(train) == 6 and len(test) == 4
    assert all("/train/" in p for p in train.paths) and all("/val/" in p for p in test.paths)
    assert set(train.classes) <= {"n01", "n02", "n03"} and len(train.classes) == 2
    for path, label in zip(train.paths, train.labels):
        assert Path(path).parent.name == train.classes[label]


def test_imagenet_explicit_wnids_and_flat_val_without_labels(tmp_path):
    root = tmp_path / "ILSVRC2012"
    _fake_imagenet(root, flat_val="txt")
    with pytest.raises(data.DataError, match="val_labels"):
        _extract(tmp_path, _params(source="imagenet", root=str(root), classes=["n02"]))
    _, train, _ = _extract(tmp_path, _params(source="imagenet", root=str(root), classes=["n03"], val_labels="val_labels.txt"))
    assert train.classes == ["n03"]
    with pytest.raises(data.DataError, match="n99"):
        _extract(tmp_path, _params(source="imagenet", root=str(root), classes=["n99"], val_labels="val_labels.txt"))


def test_imagenet_train_per_class_all_takes_every_training_image(tmp_path):
    root = tmp_path / "ILSVRC2012"
    _fake_imagenet(root, per_class=5)
    (root / "train" / "n02" / "n02_broken.JPEG").write_bytes(b"\xff\xd8 truncated")
    _, train, test = _extract(tmp_path, _params(source="imagenet", root=str(root), train_per_class="all",
                                                test_per_class=1))
    assert len(train) == 15 and len(test) == 3  # 3 classes x 5 readable images; the broken one skipped
    assert sorted(Path(p).name for p in train.paths) == sorted(
        f"{w}_{i}.JPEG" for w in ("n01", "n02", "n03") for i in range(5))
    assert any("n02_broken" in s for s in train.attrs["skipped"])


def test_folder_train_per_class_all_takes_what_the_test_split_leaves(tmp_path):
    root = tmp_path / "classes"
    for c, n in (("cat", 4), ("dog", 6)):
        for i in range(n):
            _save(root / c / f"{c}{i}.jpg", _photo(hash((c, i)) % 1000))
    (root / "dog" / "dog_bad.jpg").write_bytes(b"not an image")
    _, train, test = _extract(tmp_path, _params(root=str(root), train_per_class="all", test_per_class=2))
    assert len(test) == 4 and len(train) == (4 - 2) + (6 - 2)
    assert not set(train.paths) & set(test.paths)


def test_builtin_refuses_train_per_class_all(tmp_path):
    with pytest.raises(data.DataError, match="all"):
        _extract(tmp_path, _params(source="builtin", train_per_class="all"))


# --------------------------------------------------------------------------- builtin source


def _crop_boxes(image_store):
    """{photo: [(x0, y0, x1, y1), …]} from the store's ``paths`` (``spec#crop=left,top,side[,flip]``)."""
    boxes = {}
    for path in image_store.paths:
        spec, _, crop = path.partition("#crop=")
        left, top, side = (int(v) for v in crop.split(",")[:3])
        boxes.setdefault(spec, []).append((left, top, left + side, top + side))
    return boxes


def test_builtin_regions_never_share_a_pixel_between_splits(tmp_path):
    params = _params(source="builtin", train_per_class=12, test_per_class=6)
    report, train, test = _extract(tmp_path, params)
    train_boxes, test_boxes = _crop_boxes(train), _crop_boxes(test)
    assert set(train_boxes) == set(test_boxes) == set(data.BUILTIN_PHOTOS)
    assert len(train) == 12 * len(data.BUILTIN_PHOTOS) and len(test) == 6 * len(data.BUILTIN_PHOTOS)
    for photo in data.BUILTIN_PHOTOS:
        for a in train_boxes[photo]:
            for b in test_boxes[photo]:
                overlap_x = min(a[2], b[2]) - max(a[0], b[0])
                overlap_y = min(a[3], b[3]) - max(a[1], b[1])
                assert overlap_x <= 0 or overlap_y <= 0, (photo, a, b)
    # the same range of scales in both splits: every side within [min_scale, 1] × the strip's side
    sides = {split: [b[2] - b[0] for boxes in s.values() for b in boxes] for split, s in (("train", train_boxes), ("test", test_boxes))}
    assert max(sides["train"]) <= 2 * max(sides["test"])
    assert report.skipped == []
    assert train.read(0, len(train)).std() > 20  # real photographs, not blank crops
    assert train.attrs["seed"] == 0 and train.attrs["params"]["size"] == SIZE and "preimage_version" in train.attrs
    assert list(train.labels[:12]) == [0] * 12 and sorted(set(test.labels)) == list(range(len(data.BUILTIN_PHOTOS)))


def test_new_test_crops_come_from_the_held_out_strips(tmp_path):
    params = _params(source="builtin", train_per_class=12, test_per_class=3)
    _, train, test = _extract(tmp_path, params)
    train_boxes = _crop_boxes(train)
    crops = data.new_builtin_test_crops(train.attrs["params"], per_class=4, seed=7)
    assert len(crops) == 4 * len(data.BUILTIN_PHOTOS) and all(item.split == "test" for item in crops)
    assert not {item.display for item in crops} & set(test.paths)  # new images, not the test split's
    for item in crops:
        left, top, side = item.box
        for a in train_boxes[item.name]:  # inside the held-out strip: no pixel of a training crop
            assert min(a[2], left + side) <= max(a[0], left) or min(a[3], top + side) <= max(a[1], top)
    assert [i.display for i in data.new_builtin_test_crops(train.attrs["params"], 4, seed=7)] == [i.display for i in crops]
    with pytest.raises(data.DataError, match="regions"):
        data.new_builtin_test_crops({**params, "builtin": {"split": "photos"}}, 1, seed=0)


def test_builtin_region_of_a_landscape_and_a_portrait_photograph():
    box, side = data.builtin_region(600, 400, 0.4, strip_at_end=True, split="test")
    assert box == (360, 0, 600, 400) and side == 240
    box, _ = data.builtin_region(600, 400, 0.4, strip_at_end=True, split="train")
    assert box == (0, 0, 360, 400)
    box, side = data.builtin_region(300, 500, 0.4, strip_at_end=False, split="test")
    assert box == (0, 0, 300, 200) and side == 200
    box, _ = data.builtin_region(300, 500, 0.4, strip_at_end=False, split="train")
    assert box == (0, 200, 300, 500)
    with pytest.raises(data.DataError, match="test_fraction"):
        data.builtin_region(20, 10, 0.1, strip_at_end=False, split="test")


def test_builtin_photos_split_tests_on_unseen_photographs(tmp_path):
    params = _params(source="builtin", train_per_class=3, test_per_class=2, builtin={"split": "photos"})
    report, train, test = _extract(tmp_path, params)
    train_photos = {p.split("#")[0] for p in train.paths}
    test_photos = {p.split("#")[0] for p in test.paths}
    assert train_photos == set(data.BUILTIN_TRAIN_PHOTOS)
    assert test_photos == set(data.BUILTIN_TEST_PHOTOS)
    assert len(train) == 3 * len(data.BUILTIN_TRAIN_PHOTOS) and len(test) == 2 * len(data.BUILTIN_TEST_PHOTOS)


def test_builtin_is_deterministic_in_the_seed(tmp_path):
    a = _extract(tmp_path / "a", _params(source="builtin", train_per_class=2, test_per_class=1))[1]
    b = _extract(tmp_path / "b", _params(source="builtin", train_per_class=2, test_per_class=1))[1]
    c = _extract(tmp_path / "c", _params(source="builtin", seed=1, train_per_class=2, test_per_class=1))[1]
    assert np.array_equal(a.read(0, len(a)), b.read(0, len(b)))
    assert not np.array_equal(a.read(0, len(a)), c.read(0, len(c)))


def test_builtin_rejects_overlapping_photographs(tmp_path):
    photos = {"split": "photos", "train_photos": ["skimage:coffee.png"], "test_photos": ["skimage:coffee.png"]}
    with pytest.raises(data.DataError, match="both training and test"):
        _extract(tmp_path, _params(source="builtin", builtin=photos))


def test_store_layout(tmp_path):
    _, train, _ = _extract(tmp_path, _params(source="builtin", train_per_class=2, test_per_class=1))
    with h5py.File(train.path) as handle:
        assert handle["images"].dtype == np.uint8 and handle["images"].chunks == (1, 3, SIZE, SIZE)
        assert handle["labels"].shape == handle["paths"].shape == (len(train),)
    batches = list(train.batches(5))
    assert [offset for offset, _ in batches] == list(range(0, len(train), 5))
    assert np.array_equal(np.concatenate([b for _, b in batches]), train.read(0, len(train)))
    order = [3, 0, 7]
    assert np.array_equal(train.take(order), train.read(0, len(train))[order])
