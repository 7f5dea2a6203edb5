"""Tables, Figure 7 with variants and perturbations, and the generated "what we found" summary."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from preimage import figures, tables
from preimage.findings import write_findings

LAYERS = ["conv1", "conv5", "fc6"]


def _errors():
    rows = []
    for i, rep in enumerate(["hog", *LAYERS, "fc6-ae", "fc6-random"]):
        error = 0.3 + 0.05 * i
        for method, value in (("decoder", error), ("mean_image", 0.7), ("nearest_neighbour", 0.9 if rep != "conv1" else 0.3)):
            rows.append({"representation": rep, "method": method, "label": rep, "error": value, "ci_low": value - 0.01,
                         "ci_high": value + 0.01, "psnr": 20.0, "ssim": 0.5, "n_test": 10, "normaliser": 30.0})
    return pd.DataFrame(rows)


def _perturbations():
    rows = []
    for rep in [*LAYERS, "fc6-ae"]:
        for k, kind in enumerate(["none", "binarise", "dropout", "drop_small_binarise", "drop_random_binarise"]):
            rows.append({"representation": rep, "perturbation": kind, "error": 0.4 + 0.02 * k, "ci_low": 0.3,
                         "ci_high": 0.5, "n": 10, "fraction": 0.5, "feature_change": 0.1 * k})
    return pd.DataFrame(rows)


def test_error_by_layer_draws_variants_and_perturbations(tmp_path):
    plain = figures.error_by_layer(_errors(), tmp_path / "plain.png")
    assert plain == ["our decoder", "nearest neighbour in feature space", "mean training image", "autoencoder",
                     "untrained AlexNet (control)"]
    full = figures.error_by_layer(_errors(), tmp_path / "full.png", perturbations=_perturbations())
    assert full[:5] == plain and "binarised" in full and "dropout 50 % (autoencoder)" in full and len(full) == 13
    assert Image.open(tmp_path / "full.png").size[0] > 0


def test_figure7_title_names_the_weights():
    table = _errors()
    table.loc[table.representation.isin(LAYERS), "label"] = "AlexNet (untrained, random:0)"
    assert figures.figure7_title(table) == "Reconstruction error by layer of AlexNet (untrained, random:0) (cf. paper Figure 7)"
    table.loc[table.representation == "conv1", "label"] = "AlexNet (imagenet, sha256:ab12)"
    assert figures.figure7_title(table) == "Reconstruction error by layer of AlexNet (cf. paper Figure 7)"


def test_markdown_table_renders_every_row():
    text = tables.markdown_table(pd.DataFrame({"a": ["x", "y"], "b": [0.123456, np.nan]}))
    lines = text.strip().splitlines()
    assert lines[0] == "| a | b |" and lines[2] == "| x | 0.1235 |" and lines[3] == "| y |  |"
    assert tables.markdown_table(pd.DataFrame()) == "(no rows)\n"


def test_findings_are_computed_from_the_tables(tmp_path):
    paths = {"errors": tmp_path / "errors.csv", "perturbation": tmp_path / "perturbation.csv",
             "mahendran_vedaldi": tmp_path / "mv.csv", "dark_knowledge": tmp_path / "dk.csv"}
    _errors().to_csv(paths["errors"], index=False)
    _perturbations().to_csv(paths["perturbation"], index=False)
    pd.DataFrame([
        {"representation": "hog", "method": "decoder", "error": 0.3, "feature_error": 0.5, "seconds_per_image": 0.002},
        {"representation": "hog", "method": "mahendran_vedaldi", "error": 0.6, "feature_error": 0.1, "seconds_per_image": 2.0},
    ]).to_csv(paths["mahendran_vedaldi"], index=False)
    pd.DataFrame([{"representation": "fc8", "variant": v, "k": 5, "error": e} for v, e in (("all", 0.5), ("top5", 0.7), ("all_but_top5", 0.55))]
                 ).to_csv(paths["dark_knowledge"], index=False)
    text = write_findings({k: str(v) for k, v in paths.items()}, str(tmp_path / "findings.md"))
    assert (tmp_path / "findings.md").read_text() == text
    # conv1's nearest neighbour (0.3) beats its decoder (0.35): reported, not hidden
    assert "5 of 6 decoders beat both" in text and "`conv1` 0.350" in text
    assert "from 0.350 at `conv1` to 0.450 at `fc6`" in text
    assert "Autoencoder vs the decoder of the fixed features: `fc6` 0.500 vs 0.450" in text
    assert "binarise 0.420 (+5 %)" in text
    assert "image error 0.300 (decoder) vs 0.600 (optimisation), decoder lower" in text
    assert "feature error 0.500 vs 0.100, optimisation lower" in text and "1,000× slower" in text
    assert "only the top 5 0.700" in text
    # fc6 0.450, its untrained control 0.550: training keeps more of the image there
    assert ("the trained network's features give the lower error at 1 of 1 representations: "
            "`fc6` 0.450 trained vs 0.550 untrained (-18 %)") in text


def test_findings_need_the_errors_table(tmp_path):
    with pytest.raises(KeyError):
        write_findings({}, str(tmp_path / "f.md"))


def test_error_by_layer_draws_another_networks_nodes_trained_and_untrained(tmp_path):
    rows = []
    for i, rep in enumerate(["net:a", "net:b", "net:a-random", "net:b-random"]):
        rows.append({"representation": rep, "method": "decoder", "label": rep, "error": 0.3 + 0.1 * i,
                     "ci_low": 0.2, "ci_high": 0.5})
    labels = figures.error_by_layer(pd.DataFrame(rows), tmp_path / "net.png", layers=["net:a", "net:b"],
                                    network="Net")
    assert labels == ["our decoder", "untrained Net (control)"]
    assert Image.open(tmp_path / "net.png").size[0] > 0


def _loss_rows(gan_feature, gan_sharpness, gan_error):
    """fc6 (simple decoder) and fc6-gan decoder rows with feature error and sharpness."""
    rows = []
    for rep, error, feature, sharp in (("fc6", 0.5, 0.8, 0.05), ("fc6-gan", gan_error, gan_feature, gan_sharpness)):
        rows.append({"representation": rep, "method": "decoder", "label": rep, "error": error, "ci_low": error,
                     "ci_high": error, "psnr": 15.0, "ssim": 0.3, "feature_error": feature, "sharpness": sharp,
                     "n_test": 10, "normaliser": 30.0})
        rows.append({"representation": rep, "method": "mean_image", "label": "mean", "error": 0.7, "ci_low": 0.7,
                     "ci_high": 0.7, "psnr": 12.0, "ssim": 0.2, "feature_error": np.nan, "sharpness": 0.0,
                     "n_test": 10, "normaliser": 30.0})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("gan, verdict", [
    ((0.6, 0.4, 0.6), "The paper's claim holds here: lower feature error and sharper images, at the price of image error."),
    ((0.6, 0.4, 0.45), "The paper's claim holds here: lower feature error and sharper images, without a higher image"),
    ((0.9, 0.4, 0.6), "The paper's claim does not hold here: the feature error is not lower."),
    ((0.9, 0.01, 0.6), "does not hold here: the feature error is not lower and the images are not sharper."),
])
def test_findings_state_whether_the_gan_claim_holds(tmp_path, gan, verdict):
    path = tmp_path / "errors.csv"
    _loss_rows(*gan).to_csv(path, index=False)
    mv = tmp_path / "mv.csv"
    pd.DataFrame([{"representation": "fc6", "method": "mahendran_vedaldi", "error": 0.9, "feature_error": 0.2,
                   "n": 8}]).to_csv(mv, index=False)
    text = write_findings({"errors": str(path), "mahendran_vedaldi": str(mv)}, str(tmp_path / "findings.md"))
    assert "## Feature-space and adversarial losses (Appendix A, Figures 12-13)" in text
    assert "`fc6-gan` (feature + adversarial loss) vs `fc6` (simple decoder)" in text
    assert verdict in text
    assert "Mahendran & Vedaldi on `fc6` (8 images): image error 0.900, feature error 0.200." in text


def test_findings_without_loss_variants_have_no_appendix_section(tmp_path):
    path = tmp_path / "errors.csv"
    _errors().to_csv(path, index=False)
    assert "Appendix A" not in write_findings({"errors": str(path)}, str(tmp_path / "findings.md"))


def test_errors_markdown_shows_feature_error_and_sharpness(tmp_path):
    table = tables.errors_table([_loss_rows(0.6, 0.4, 0.6)], tmp_path / "e.csv", tmp_path / "e.md")
    markdown = (tmp_path / "e.md").read_text()
    assert "| feature error | sharpness |" in markdown
    assert "| 0.600 | 0.400 |" in markdown and len(table) == 4


def test_error_by_layer_draws_the_loss_variants(tmp_path):
    rows = _errors()
    extra = rows[rows.representation == "fc6"].assign(representation="fc6-gan")
    labels = figures.error_by_layer(pd.concat([rows, extra]), tmp_path / "gan.png")
    assert "feature + adversarial loss (Appendix A)" in labels



def test_mahendran_vedaldi_table_sets_their_claim_beside_their_measure_for_cnn_layers(tmp_path):
    from preimage.findings import mahendran_vedaldi

    rows = []
    for rep, mv_error in (("hog", 0.05), ("conv5", 0.12), ("fc6", 0.35)):
        rows.append({"representation": rep, "method": "decoder", "error": 0.4, "ci_low": 0.3, "ci_high": 0.5,
                     "feature_error": 0.9, "mv_error": 1.5, "restarts": 1, "diversity": np.nan,
                     "seconds_per_image": 0.001})
        rows.append({"representation": rep, "method": "mahendran_vedaldi", "error": 0.6, "ci_low": 0.5,
                     "ci_high": 0.7, "feature_error": 0.2, "mv_error": mv_error, "restarts": 3, "diversity": 0.25,
                     "seconds_per_image": 1.0})
    paths = []
    for rep in ("hog", "conv5", "fc6"):
        paths.append(tmp_path / f"{rep}.csv")
        pd.DataFrame([r for r in rows if r["representation"] == rep]).to_csv(paths[-1], index=False)
    table = tables.mahendran_vedaldi_table([str(p) for p in paths], tmp_path / "mv.csv", tmp_path / "mv.md",
                                           networks=["conv5", "fc6"])
    claimed = table[table.mv_claim.notna()]
    assert claimed["representation"].tolist() == ["conv5", "fc6"] and (claimed["method"] == "mahendran_vedaldi").all()
    assert claimed["claim_holds"].tolist() == [True, False]
    markdown = (tmp_path / "mv.md").read_text()
    assert "≤ 0.20: holds" in markdown and "≤ 0.20: does not hold" in markdown and "0.250 (3)" in markdown
    text = "\n".join(mahendran_vedaldi(pd.read_csv(tmp_path / "mv.csv")))
    assert "holds at 1 of 2 layers here: `conv5` 12.0% (holds); `fc6` 35.0% (exceeds)" in text
    assert "`hog` 0.250 (3 restarts)" in text


def test_loss_variants_are_not_counted_against_the_reference_rows(tmp_path):
    path = tmp_path / "errors.csv"
    _loss_rows(0.6, 0.4, 0.9).to_csv(path, index=False)  # fc6-gan: image error 0.9 above the mean image's 0.7
    text = write_findings({"errors": str(path)}, str(tmp_path / "findings.md"))
    assert "- 1 of 1 decoders beat both the mean training image" in text
    assert "Not better than a reference row" not in text
    assert "- Not counted: `fc6-gan` (Appendix A's losses trade image error" in text
