"""The scorecard's measures (top-1/top-5 agreement with a trained classifier, cosine in
the representation's space) and the scorecard rows of every method, on tiny builtin data."""
import numpy as np
import pandas as pd
import pytest
import torch

from preimage import figures, findings, hdf5, image_store, scorecard as rec, train
from preimage.evaluate import evaluate_decoder
from preimage.features import create
from tiny_data import builtin_stores


SIZE = 32
CLASSIFIER = ("efficientnet_lite0:fc", {"weights": "imagenet", "crop": 96})


@pytest.fixture(scope="module")
def classifier():
    return rec.load_classifier(*CLASSIFIER, batch_size=8)


@pytest.fixture(scope="module")
def photos():
    """Six 96-px builtin test crops, float in [0, 1] (whole photographs, so the classifier sees objects)."""
    from preimage import data
    from preimage.config import validate_config
    import tempfile, pathlib

    with tempfile.TemporaryDirectory() as tmp:
        params = validate_config({"data": {"size": 96, "train_per_class": 1, "test_per_class": 1}})["data"]
        paths = {"train": pathlib.Path(tmp) / "train.h5", "test": pathlib.Path(tmp) / "test.h5"}
        data.extract(params, paths)
        with image_store.ImageStore(paths["test"]) as images:
            return image_store.to_float(images.read(0, len(images)))


def test_agreement_by_hand():
    ref = torch.tensor([[5.0, 1, 0, 0, 0, 0, 0], [0, 0, 9, 1, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7]])
    guess = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7], [0, 0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 1, 9]])
    # row 0: x's class 0 is the reconstruction's lowest score → neither
    # row 1: x's class 2 scores 1, the 5th highest of the reconstruction's (5, 4, 3, 2, 1) → top-5 only
    # row 2: both argmaxes are class 6 → both
    top1, top5 = rec.agreement(ref, guess)
    assert top1.tolist() == [0.0, 0.0, 1.0] and top5.tolist() == [0.0, 1.0, 1.0]
    assert rec.agreement(ref, ref)[0].tolist() == [1.0] * 3
    with pytest.raises(ValueError, match="one shape"):
        rec.agreement(ref, guess[:, :3])
    with pytest.raises(ValueError, match="k must be"):
        rec.agreement(ref, guess, k=0)


def test_cosine_by_hand_and_of_features_against_themselves():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [2.0, 2.0], [0.0, 0.0], [1.0, 0.0]])
    assert rec.feature_cosine(a, b) == pytest.approx([0.0, 1.0, 1.0, 0.0])
    features = create("hog", cell_size=8)(torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)))
    assert rec.feature_cosine(features, features) == pytest.approx(np.ones(3))
    assert rec.feature_cosine(features, -features) == pytest.approx(-np.ones(3))


def test_agreement_is_one_for_the_images_themselves_and_falls_for_noise(classifier, photos):
    scores = classifier(photos)
    assert scores.shape == (len(photos), 1000)
    top1, top5 = rec.agreement(scores, classifier(photos))
    assert top1.tolist() == [1.0] * len(photos) and top5.tolist() == [1.0] * len(photos)
    noise = torch.rand(photos.shape, generator=torch.Generator().manual_seed(0))
    noise_top1, noise_top5 = rec.agreement(scores, classifier(noise))
    assert noise_top1.mean() < 0.5 and noise_top5.mean() < 1.0
    assert noise_top1.mean() <= noise_top5.mean()


def test_summary_intervals_are_well_formed():
    values = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=float)
    mean, low, high = rec.summarise_agreement(values, seed=0)
    assert mean == pytest.approx(0.7) and 0.0 <= low <= mean <= high <= 1.0 and low < high
    assert rec.summarise_agreement(values, seed=0) == (mean, low, high)  # seeded
    assert rec.summarise_agreement(np.ones(5)) == (1.0, 1.0, 1.0)


def test_a_classifier_must_give_class_scores():
    with pytest.raises(ValueError, match="not class scores"):
        rec.load_classifier("efficientnet_lite0:stages.3", {"weights": "random", "crop": 32})


def test_the_own_network_of_trained_and_untrained_representations():
    trained = create("efficientnet_lite0:stages.3", weights="imagenet", crop=64)
    own = rec.own_classifier(trained, batch_size=4)
    assert own is not None and own(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 1000)
    assert rec.own_classifier(create("efficientnet_lite0:stages.3", weights="random", crop=64)) is None
    assert rec.own_classifier(create("hog", cell_size=8)) is None


# --------------------------------------------------------------------------- every method's row


@pytest.fixture(scope="module")
def scored(tmp_path_factory, classifier):
    """A briefly trained HOG decoder, evaluated; its reconstructions also stand for a -gan variant, and a
    Mahendran & Vedaldi store is made by hand (noisy test images) so that every method is scored."""
    root = tmp_path_factory.mktemp("scorecard")
    paths = builtin_stores(root, SIZE, 3, 2, caches=[("hog", {"cell_size": 8}, "hog")])
    (root / "hog").mkdir()
    train.train_decoder("hog", str(root / "hog_train.h5"), str(paths["train"]), str(root / "hog/decoder.pt"),
                        str(root / "hog/log.csv"), str(root / "ckpt.pt"),
                        dict(epochs=1, batch_size=8, width=0.125, device="cpu", seed=0))
    evaluate_decoder("hog", str(root / "hog/decoder.pt"), str(root / "hog_test.h5"), str(paths["test"]),
                     str(root / "hog_train.h5"), str(paths["train"]), str(root / "hog/error.csv"),
                     str(root / "hog/reconstructions.h5"), device="cpu")
    with image_store.ImageStore(paths["test"]) as images:
        truth = images.take([0, 3])
    noisy = np.clip(truth.astype(int) + np.random.default_rng(0).integers(-40, 40, truth.shape), 0, 255)
    with hdf5.create_h5(root / "hog/mahendran_vedaldi.h5") as handle:
        hdf5.create_dataset(handle, "indices", data=np.array([0, 3]))
        hdf5.create_dataset(handle, "mahendran_vedaldi", data=noisy.astype(np.uint8))
    pd.DataFrame([{"representation": "hog", "method": "mahendran_vedaldi", "error": 0.3, "ci_low": 0.2,
                   "ci_high": 0.4, "seconds_per_image": 1.5}]).to_csv(root / "hog/mahendran_vedaldi.csv", index=False)
    files = {"reconstructions": str(root / "hog/reconstructions.h5"), "errors": str(root / "hog/error.csv")}
    table = rec.score_representation(
        "hog", create("hog", cell_size=8), str(paths["test"]), str(paths["train"]),
        {"decoder": files, "decoder_gan": files}, classifier, str(root / "hog/scorecard.csv"),
        mahendran_vedaldi={"images": str(root / "hog/mahendran_vedaldi.h5"),
                           "table": str(root / "hog/mahendran_vedaldi.csv")}, batch_size=4)
    return root, table


def test_every_method_gets_a_row_with_the_ceiling_for_the_input(scored):
    root, table = scored
    assert table["method"].tolist() == ["input", "decoder", "decoder_gan", "mahendran_vedaldi", "nearest_neighbour",
                                        "mean_image"]
    assert pd.read_csv(root / "hog/scorecard.csv")["method"].tolist() == table["method"].tolist()
    x = table.set_index("method").loc["input"]
    assert (x.top1, x.top5, x.top1_low, x.top5_high) == (1.0, 1.0, 1.0, 1.0)
    assert x.feature_cosine == pytest.approx(1.0) and x.error == 0.0 and x.ssim == 1.0
    n_test = len(image_store.ImageStore(root / "test.h5"))
    assert table.set_index("method").loc["decoder", "n_images"] == n_test
    assert table.set_index("method").loc["mahendran_vedaldi", "n_images"] == 2
    for _, row in table.iterrows():
        assert 0.0 <= row.top1_low <= row.top1 <= row.top1_high <= 1.0
        assert 0.0 <= row.top5_low <= row.top5 <= row.top5_high <= 1.0
        assert row.top1 <= row.top5 and -1.0 <= row.feature_cosine <= 1.0 + 1e-9
        assert np.isnan(row.own_top1)  # HOG is no classifier
    assert (table[table.method != "input"].seconds_per_image > 0).all()


def test_pixel_columns_are_those_of_the_error_tables(scored):
    root, table = scored
    errors = pd.read_csv(root / "hog/error.csv").set_index("method")
    by = table.set_index("method")
    for method in ("decoder", "nearest_neighbour", "mean_image"):
        assert by.loc[method, "error"] == pytest.approx(errors.loc[method, "error"])
        assert by.loc[method, "ssim"] == pytest.approx(errors.loc[method, "ssim"])
    assert by.loc["mahendran_vedaldi", "error"] == 0.3 and by.loc["mahendran_vedaldi", "seconds_per_image"] == 1.5
    assert by.loc["mahendran_vedaldi", "ssim"] < 1.0
    for method in ("decoder", "nearest_neighbour", "mean_image"):  # the evaluation's timings, not measured again
        assert by.loc[method, "seconds_per_image"] == errors.loc[method, "seconds_per_image"] > 0


def test_the_scorecard_scores_the_neighbours_and_mean_image_the_evaluation_stored(scored, classifier, tmp_path):
    """Scored from reconstructions.h5: a neighbour index or mean image changed there changes the rows
    (nothing is searched or averaged again), and a file without them is refused by name."""
    root, table = scored
    changed = tmp_path / "reconstructions.h5"
    with hdf5.reading(root / "hog/reconstructions.h5") as handle:
        arrays = {key: np.asarray(handle[key]) for key in handle}
    with hdf5.create_h5(changed) as handle:
        for key, value in arrays.items():
            if key == "nearest_neighbour":
                value = np.zeros_like(value)  # every test image's neighbour: training image 0
            if key == "mean_image":
                value = np.zeros_like(value)  # a black mean image
            hdf5.create_dataset(handle, key, data=value)
    files = {"reconstructions": str(changed), "errors": str(root / "hog/error.csv")}
    with image_store.ImageStore(root / "train.h5") as train_images:
        first = image_store.to_float(train_images.take([0]))
    black = torch.zeros(1, 3, SIZE, SIZE)
    other = rec.score_representation("hog", create("hog", cell_size=8), str(root / "test.h5"), str(root / "train.h5"),
                                     {"decoder": files}, classifier, str(tmp_path / "scorecard.csv"), batch_size=4)
    by = other.set_index("method")
    assert by.loc["decoder", "top1"] == table.set_index("method").loc["decoder", "top1"]
    with image_store.ImageStore(root / "test.h5") as test_images:
        truth = image_store.to_float(test_images.read(0, len(test_images)))
    label = classifier(truth).argmax(1)
    assert by.loc["nearest_neighbour", "top1"] == pytest.approx(float((classifier(first).argmax(1) == label).double().mean()))
    assert by.loc["mean_image", "top1"] == pytest.approx(float((classifier(black).argmax(1) == label).double().mean()))
    with hdf5.create_h5(tmp_path / "old.h5") as handle:
        hdf5.create_dataset(handle, "reconstructions", data=arrays["reconstructions"])
    with pytest.raises(ValueError, match="has no nearest_neighbour or mean_image.*rerun the evaluation"):
        rec.score_representation("hog", create("hog", cell_size=8), str(root / "test.h5"), str(root / "train.h5"),
                                 {"decoder": {"reconstructions": str(tmp_path / "old.h5"),
                                              "errors": str(root / "hog/error.csv")}},
                                 classifier, str(tmp_path / "old.csv"), batch_size=4)


def test_the_scorecard_table_figure_and_findings(scored, tmp_path):
    root, _ = scored
    other = pd.read_csv(root / "hog/scorecard.csv").assign(representation="lbp")
    other.to_csv(tmp_path / "lbp.csv", index=False)
    table = rec.scorecard_table([str(root / "hog/scorecard.csv"), str(tmp_path / "lbp.csv")],
                                str(tmp_path / "scorecard.csv"), str(tmp_path / "scorecard.md"))
    pairs = set(zip(table.representation, table.method))
    assert pairs == {(r, m) for r in ("hog", "lbp") for m in rec.METHODS if m != "decoder_feature"}
    md = (tmp_path / "scorecard.md").read_text()
    assert md.count("| hog |") == 6 and "Mahendran & Vedaldi" in md and "x itself (ceiling)" in md
    figures.scorecard_figure(table, tmp_path / "scorecard.png")
    assert (tmp_path / "scorecard.png").stat().st_size > 0
    best = findings.most_recognisable(table)
    assert best["representation"].tolist() == ["hog", "lbp"] and "input" not in set(best["method"])
    lines = findings.scorecard(table)
    assert sum(line.startswith("- `hog`") for line in lines) == 1 and sum(line.startswith("- `lbp`") for line in lines) == 1


def test_findings_name_the_most_recognisable_method_from_the_table():
    def row(rep, method, top5, top1, error, n=10):
        return {"representation": rep, "method": method, "method_label": rec.METHOD_LABELS[method], "top5": top5,
                "top5_low": top5 / 2, "top5_high": top5,
                "top1": top1, "error": error, "n_images": n, "classifier": "efficientnet_lite0:fc"}

    table = pd.DataFrame([row("a", "input", 1, 1, 0), row("a", "decoder", 0.6, 0.3, 0.4),
                          row("a", "mahendran_vedaldi", 0.8, 0.5, 0.7, n=3), row("a", "mean_image", 0.0, 0.0, 0.6),
                          row("b", "input", 1, 1, 0), row("b", "decoder", 0.0, 0.0, 0.5),
                          row("b", "mean_image", 0.0, 0.0, 0.6)])
    lines = findings.scorecard(table)
    a = next(line for line in lines if line.startswith("- `a`"))
    assert "most recognisable Mahendran & Vedaldi, top-5 agreement 0.80" in a and "lowest error: decoder 0.400" in a
    assert "[3 images]" in a
    b = next(line for line in lines if line.startswith("- `b`"))
    assert "no method's reconstruction" in b and "decoder 0.500" in b
    assert "coincide for 0 of 1 representations" in lines[-2]


def test_the_most_recognisable_method_breaks_ties_by_top1_then_error():
    table = pd.DataFrame([
        {"representation": "a", "method": "input", "top5": 1.0, "top1": 1.0, "error": 0.0},
        {"representation": "a", "method": "decoder", "top5": 0.8, "top1": 0.5, "error": 0.4},
        {"representation": "a", "method": "nearest_neighbour", "top5": 0.8, "top1": 0.6, "error": 0.7},
        {"representation": "a", "method": "mean_image", "top5": 0.8, "top1": 0.6, "error": 0.6},
        {"representation": "b", "method": "decoder", "top5": 0.2, "top1": 0.1, "error": 0.4},
        {"representation": "b", "method": "mahendran_vedaldi", "top5": 0.3, "top1": 0.0, "error": 0.9},
    ])
    best = findings.most_recognisable(table)
    assert best[["representation", "method"]].values.tolist() == [["a", "mean_image"], ["b", "mahendran_vedaldi"]]


def test_the_plan_groups_loss_variants_under_their_base_and_checks_the_classifier():
    from preimage.config import ConfigError, validate_config
    from preimage.plan import Plan

    plan = Plan(validate_config({
        "results": "res", "representations": ["hog", "fc6", "efficientnet_lite0:fc"],
        "variants": {"gan": ["hog"], "feature": ["hog"], "autoencoder": ["fc6"]},
        "baselines": {"mahendran_vedaldi": {"representations": ["hog"]}}}))
    slugs = plan.scorecard_slugs()
    assert "hog-gan" not in slugs and "hog-feature" not in slugs
    assert {"hog", "fc6", "fc6-ae", "efficientnet_lite0@fc", "efficientnet_lite0@fc-random"} <= set(slugs)
    assert plan.scorecard_decoders("hog") == {"decoder": "hog", "decoder_feature": "hog-feature",
                                                 "decoder_gan": "hog-gan"}
    hog = plan.scorecard_inputs("hog")
    assert hog["reconstructions"] == ["res/hog/reconstructions.h5", "res/hog-feature/reconstructions.h5",
                                      "res/hog-gan/reconstructions.h5"]
    assert hog["errors"] == ["res/hog/error.csv", "res/hog-feature/error.csv", "res/hog-gan/error.csv"]
    assert hog["mv_images"] == "res/hog/mahendran_vedaldi.h5"
    assert not any("features" in str(v) for v in hog.values())  # neighbours and timings come from the evaluation
    ae = plan.scorecard_inputs("fc6-ae")
    assert ae["encoder"] == ["res/fc6-ae/encoder.pt"] and "mv_images" not in ae
    assert ae["reconstructions"] == ["res/fc6-ae/reconstructions.h5"]
    assert {"res/tables/scorecard.csv", "res/figures/scorecard.png"} <= set(plan.all_targets())
    assert plan.findings_inputs()["scorecard"] == "res/tables/scorecard.csv"
    off = Plan(validate_config({"results": "res", "representations": ["hog"], "analyses": {"scorecard": {"enabled": False}}}))
    assert "res/tables/scorecard.csv" not in off.all_targets() and "scorecard" not in off.findings_inputs()
    assert validate_config({"representations": ["hog"], "analyses": {"scorecard": {"classifier": "efficientnet_lite0:fc"}}})
    for classifier, message in (("hog", "is no network"), ("nonsense", "unknown representation")):
        with pytest.raises(ConfigError, match=f"analyses.scorecard.classifier: .*{message}"):
            validate_config({"representations": ["hog"], "analyses": {"scorecard": {"classifier": classifier}}})
