"""The analysis steps of preimage.analyses and preimage.locality (paper §4, §5.3-5.5, supplementary
Figure 17, M&V's locality experiment) on tiny stores and decoders: the numbers they write and how
they relate to decoding the unchanged features. The workflow runs (tests/test_workflow*.py) check
that each step runs as a job; here every step is checked on its own."""
import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from preimage import analyses, feature_ops, image_store, metrics, train
from preimage.baselines import MVConfig
from preimage.decoding import TrainedDecoder
from preimage.features import create
from preimage.features.cache import FeatureStore, write_feature_store
from preimage.locality import locality
from tiny_data import builtin_stores


SIZE = 32
HOG = ("hog", {"cell_size": 8})
FC8 = ("fc8", {"weights": "random", "seed": 0, "crop": 64})
TRAIN_PER_CLASS, TEST_PER_CLASS = 3, 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Builtin crops at 32 px, HOG and fc8 (untrained AlexNet) caches and a briefly trained decoder of each."""
    root = tmp_path_factory.mktemp("analyses")
    paths = builtin_stores(root, SIZE, TRAIN_PER_CLASS, TEST_PER_CLASS,
                           caches=[(name, params, name) for name, params in (HOG, FC8)])
    # the paper's protocol (last epoch, no mean-image start): decoders whose reconstructions follow the
    # features even on these few images, which the analyses' assertions look at
    cfg = dict(batch_size=8, width=0.125, device="cpu", seed=0, val_fraction=0.1, lr=0.003, keep="last",
               residual=False)
    # HOG's decoder long enough that its reconstructions follow the features (the brightness test)
    for (name, _), epochs in ((HOG, 10), (FC8, 2)):
        train.train_decoder(name, str(root / f"{name}_train.h5"), str(paths["train"]), str(root / f"{name}.pt"),
                            str(root / f"{name}.csv"), str(root / f"{name}.ckpt"), {**cfg, "epochs": epochs})
    return root


def _files(root, name):
    return {"decoder": str(root / f"{name}.pt"), "train": str(root / f"{name}_train.h5"),
            "test": str(root / f"{name}_test.h5"), "images": str(root / "test.h5")}


def _decoded(root, name):
    """Per-image errors of decoding the stored test features unchanged, and the mean distance
    between those reconstructions (how much they vary from image to image), both normalised."""
    files = _files(root, name)
    decoder = TrainedDecoder(files["decoder"], "cpu")
    with FeatureStore(files["test"]) as feats, decoder.images(files["images"]) as images:
        truth = image_store.to_float(images.read(0, len(images)))
        normaliser = metrics.mean_pairwise_distance(images.float_view())
        recon = decoder(torch.from_numpy(feats.read(0, len(feats))))
    return metrics.normalised_error(recon, truth, normaliser), metrics.mean_pairwise_distance(recon) / normaliser


@pytest.fixture
def grids(monkeypatch):
    """The rows and title of every figure the steps draw (the figures are still written)."""
    drawn = []
    draw = analyses.image_grid

    def record(rows, path, title=None):
        drawn.append({"rows": [(label, np.asarray(images)) for label, images in rows], "title": title, "path": path})
        draw(rows, path, title=title)

    monkeypatch.setattr(analyses, "image_grid", record)
    return drawn


# --------------------------------------------------------------------------- §5.4 perturbation


def test_perturbation_rows_and_the_unperturbed_row_is_plain_decoding(tiny, tmp_path, grids):
    files = _files(tiny, "fc8")
    csv, png = tmp_path / "perturbation.csv", tmp_path / "perturbation.png"
    table = analyses.perturbation("fc8", files["decoder"], files["test"], files["images"], str(csv), str(png),
                                  fraction=0.5, n_show=2, seed=0, device="cpu", batch_size=4)
    assert table["perturbation"].tolist() == ["none", *feature_ops.PERTURBATIONS]
    assert (table["representation"] == "fc8").all() and (table["fraction"] == 0.5).all()
    assert (table["n"] == 9 * TEST_PER_CLASS).all()
    pd.testing.assert_frame_equal(pd.read_csv(csv), table, check_dtype=False)
    errors, _ = _decoded(tiny, "fc8")
    none = table.set_index("perturbation").loc["none"]
    assert none["feature_change"] == 0 and none["error"] == pytest.approx(float(np.mean(errors)), rel=1e-5)
    assert (table.loc[table.perturbation != "none", "feature_change"] > 0).all()
    assert ((table["ci_low"] <= table["error"]) & (table["error"] <= table["ci_high"])).all()
    # the figure: the inputs, then one row per perturbation with its error, the two figure images each
    rows = grids[0]["rows"]
    assert [label.split("\n")[0] for label, _ in rows] == ["input", "none", *feature_ops.PERTURBATIONS]
    assert all(images.shape == (2, 3, SIZE, SIZE) for _, images in rows) and png.stat().st_size > 0
    # seeded: the same table again (batching does not change the draws' seeds per offset)
    again = analyses.perturbation("fc8", files["decoder"], files["test"], files["images"], str(tmp_path / "b.csv"),
                                  str(tmp_path / "b.png"), fraction=0.5, n_show=2, seed=0, device="cpu", batch_size=4)
    pd.testing.assert_frame_equal(again, table)


# --------------------------------------------------------------------------- §5.5 interpolation


def test_interpolation_strips_run_from_one_figure_image_to_the_other(tiny, tmp_path):
    files = _files(tiny, "fc8")
    h5, png = tmp_path / "interpolation.h5", tmp_path / "interpolation.png"
    strips = analyses.interpolation("fc8", files["decoder"], files["test"], str(h5), str(png), pairs=2, steps=4,
                                    n_show=2, device="cpu")
    assert strips.shape == (2, 4, 3, SIZE, SIZE) and strips.dtype == np.uint8
    decoder = TrainedDecoder(files["decoder"], "cpu")
    with FeatureStore(files["test"]) as feats:
        pick = [int(i) for i in analyses.show_indices(len(feats), 4)]
        ends = image_store.to_uint8(decoder(torch.from_numpy(feats.take(pick))))
    for p in range(2):  # the pairs are the figure images taken two by two; the ends decode them unchanged
        assert np.array_equal(strips[p, 0], ends[2 * p]) and np.array_equal(strips[p, -1], ends[2 * p + 1])
    with h5py.File(h5, "r") as handle:
        assert np.array_equal(handle["strips"][:], strips)
        assert handle["pairs"][:].tolist() == [[pick[0], pick[1]], [pick[2], pick[3]]]
    assert png.stat().st_size > 0


def test_interpolation_needs_two_test_images(tiny, tmp_path):
    one = tmp_path / "one.h5"
    with FeatureStore(_files(tiny, "fc8")["test"]) as feats:
        row, attrs, shape = feats.read(0, 1), dict(feats.attrs), feats.shape
    attrs = {k: v for k, v in attrs.items() if k not in ("shape", "storage")}
    with write_feature_store(one, 1, shape, "float16", attrs) as writer:
        writer.append(row)
    with pytest.raises(ValueError, match="fc8: interpolation needs at least two test images"):
        analyses.interpolation("fc8", _files(tiny, "fc8")["decoder"], str(one), str(tmp_path / "s.h5"),
                               str(tmp_path / "s.png"), pairs=1, steps=3, device="cpu")


# --------------------------------------------------------------------------- §5.5 random vectors


def test_random_samples_statistics_and_seed(tiny, tmp_path):
    files = _files(tiny, "fc8")
    kwargs = dict(count=3, alpha=2.0, fit_images=20, bins=8, seed=0, device="cpu")
    table = analyses.random_samples("fc8", files["decoder"], files["train"], str(tmp_path / "r.csv"),
                                    str(tmp_path / "r.png"), **kwargs)
    assert table["source"].tolist() == ["training features", "histograms", "truncated Gaussian"]
    assert table["count"].tolist() == [20, 3, 3] and table["alpha"].tolist() == [1.0, 2.0, 2.0]
    assert ((table["zero_fraction"] >= 0) & (table["zero_fraction"] <= 1)).all() and (table["mean_norm"] > 0).all()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "r.csv"), table, check_dtype=False)
    again = analyses.random_samples("fc8", files["decoder"], files["train"], str(tmp_path / "s.csv"),
                                    str(tmp_path / "s.png"), **kwargs)
    pd.testing.assert_frame_equal(again, table)
    other = analyses.random_samples("fc8", files["decoder"], files["train"], str(tmp_path / "t.csv"),
                                    str(tmp_path / "t.png"), **{**kwargs, "seed": 1})
    assert not np.allclose(other["mean_norm"][1:], table["mean_norm"][1:])


# --------------------------------------------------------------------------- §5.3 dark knowledge


def test_dark_knowledge_variants_and_the_whole_vector_is_plain_decoding(tiny, tmp_path, grids):
    files = _files(tiny, "fc8")
    table = analyses.dark_knowledge(files["decoder"], files["test"], files["images"], str(tmp_path / "d.csv"),
                                    str(tmp_path / "d.png"), categories=None, k=5, n_show=2, seed=0, device="cpu")
    assert table["variant"].tolist() == ["all", "top5", "all_but_top5"] and (table["k"] == 5).all()
    assert table["description"].tolist() == ["all activations", "only the 5 largest", "all but the 5 largest"]
    errors, _ = _decoded(tiny, "fc8")
    assert table.loc[0, "error"] == pytest.approx(float(np.mean(errors)), rel=1e-5)
    assert grids[0]["title"].startswith("fc8: dark knowledge; predictions: class ")  # no class names: numbers
    named = analyses.dark_knowledge(files["decoder"], files["test"], files["images"], str(tmp_path / "e.csv"),
                                    str(tmp_path / "e.png"), categories=[f"name{i}" for i in range(1000)], k=2,
                                    n_show=2, device="cpu")
    assert named["description"].tolist()[1] == "only the 2 largest"
    assert "predictions: name" in grids[1]["title"]


# --------------------------------------------------------------------------- §5.3 hue shift


def test_hue_shift_rows_and_the_unshifted_row(tiny, tmp_path):
    name, params = FC8
    files = _files(tiny, "fc8")
    table = analyses.hue_shift(create(name, **params), files["decoder"], files["images"], str(tmp_path / "h.csv"),
                               str(tmp_path / "h.png"), degrees=(120, 240), n_show=2, device="cpu")
    assert table["degrees"].tolist() == [0, 120, 240]
    unshifted = table.iloc[0]
    assert unshifted["same_top1_as_original"] == 1.0 and unshifted["error"] == unshifted["error_to_original"]
    errors, _ = _decoded(tiny, "fc8")  # fc8 computed anew (not rounded to float16): close, not equal
    assert unshifted["error"] == pytest.approx(float(np.mean(errors)), rel=1e-2)
    assert ((table["same_top1_as_original"] >= 0) & (table["same_top1_as_original"] <= 1)).all()
    assert (tmp_path / "h.png").stat().st_size > 0


# --------------------------------------------------------------------------- §4 brightness


def test_brightness_hog_reconstructions_hardly_change(tiny, tmp_path):
    name, params = HOG
    files = _files(tiny, "hog")
    table = analyses.brightness(create(name, **params), files["decoder"], files["images"], str(tmp_path / "b.csv"),
                                str(tmp_path / "b.png"), factors=(10.0, 0.1), n_show=2, device="cpu")
    assert table["factor"].tolist() == [1, 10, 0.1] and (table["representation"] == "hog").all()
    rows = table.set_index("factor")
    assert rows.loc[1.0, "distance_to_unscaled"] == 0
    errors, spread = _decoded(tiny, "hog")
    assert rows.loc[1.0, "error"] == pytest.approx(float(np.mean(errors)), rel=1e-2)
    # HOG's block normalisation: brighter or darker images give (almost) the same reconstructions,
    # far closer to each other than the reconstructions of different images are
    assert spread > 0.05
    assert rows.loc[10.0, "distance_to_unscaled"] < 0.02 * spread
    assert rows.loc[0.1, "distance_to_unscaled"] < 0.02 * spread


# --------------------------------------------------------------------------- Figure 17 single units


def test_single_units_decode_the_most_active_units(tiny, tmp_path, grids):
    files = _files(tiny, "fc8")
    recon = analyses.single_units("fc8", files["decoder"], files["train"], str(tmp_path / "u.png"), count=3,
                                  device="cpu")
    assert recon.shape == (3, 3, SIZE, SIZE) and recon.dtype == np.uint8
    with FeatureStore(files["train"]) as feats:
        peak = torch.from_numpy(feats.read(0, len(feats))).flatten(1).max(dim=0).values
    units = torch.argsort(peak, descending=True)[:3].tolist()
    assert grids[0]["rows"][0][0] == "; ".join(f"unit {u}" for u in units)
    decoder = TrainedDecoder(files["decoder"], "cpu")
    expected = image_store.to_uint8(decoder(feature_ops.single_unit_vectors(1000, units, [float(peak[u]) for u in units])))
    assert np.array_equal(recon, expected)
    categories = [f"name{i}" for i in range(1000)]
    analyses.single_units("fc8", files["decoder"], files["train"], str(tmp_path / "v.png"), count=3,
                          categories=categories, device="cpu")
    assert grids[1]["rows"][0][0] == "; ".join(f"{u}: name{u}" for u in units)  # class scores carry their names
    analyses.single_units("fc8", files["decoder"], files["train"], str(tmp_path / "w.png"), count=1,
                          categories=categories[:10], device="cpu")
    assert grids[2]["rows"][0][0] == f"unit {units[0]}"  # names only when there is one per unit


# --------------------------------------------------------------------------- locality (M&V)


def test_locality_variants_by_both_methods(tiny, tmp_path):
    name, params = HOG
    files = _files(tiny, "hog")
    table = locality("hog", create(name, **params), "hog", files["decoder"], files["images"], str(tmp_path / "l.csv"),
                     str(tmp_path / "l.png"), MVConfig(iterations=2), images=2, window=2, channels=0.5, n_show=2,
                     device="cpu")
    assert table["variant"].tolist() == ["all", "all", "window", "window", "channels", "channels"]
    assert table["method"].tolist() == ["decoder", "mahendran_vedaldi"] * 3 and (table["n"] == 2).all()
    fractions = table.groupby("variant", sort=False)["active_fraction"].first()
    assert fractions["all"] == 1.0 and fractions["window"] == pytest.approx(4 / 16)  # 2×2 of 4×4 cells
    assert fractions["channels"] == pytest.approx(16 / 31)  # ceil(31 / 2) of HOG's 31 channels
    whole = table[table.variant == "all"]
    assert (whole["feature_error"] == whole["feature_error_whole_code"]).all()  # nothing masked
    assert table[["error", "feature_error", "feature_error_whole_code"]].notna().all().all()
    assert (tmp_path / "l.png").stat().st_size > 0
