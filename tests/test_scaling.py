"""The data-scaling curve: nested subsets, the power-law fit and its bootstrap, per-image errors."""
import numpy as np
import pandas as pd
import pytest

from preimage import scaling, train
from tiny_data import builtin_stores


def test_subsets_are_nested_and_take_whole_photographs():
    groups = np.repeat(np.arange(40), 3)
    indices = np.arange(120)[groups % 5 != 0]  # some photographs held out for validation
    subsets = [train.nested_subset(indices, groups, f, seed=2) for f in (0.125, 0.25, 0.5, 1.0)]
    assert [len(np.unique(groups[s])) for s in subsets] == [4, 8, 16, 32]
    for small, large in zip(subsets, subsets[1:]):
        assert set(small) <= set(large)
    assert np.array_equal(subsets[-1], indices)
    for s in subsets:  # every crop of a chosen photograph comes along
        assert len(s) == 3 * len(np.unique(groups[s]))
    assert not np.array_equal(subsets[0], train.nested_subset(indices, groups, 0.125, seed=3))
    with pytest.raises(ValueError, match="fraction in"):
        train.nested_subset(indices, groups, 0.0, seed=0)


def test_power_law_fit_recovers_a_known_exponent():
    n = np.array([100, 200, 400, 800])
    b, c = scaling.fit_power_law(n, 2.0 * n ** -0.3)
    assert b == pytest.approx(2.0) and c == pytest.approx(0.3)
    with pytest.raises(ValueError, match="two or more"):
        scaling.fit_power_law([100, 100], [0.5, 0.4])


def _per_image(tmp_path, name, n_train, errors, fraction):
    path = tmp_path / f"{name}_{n_train}.csv"
    pd.DataFrame({"image": np.arange(len(errors)), "error": errors, "n_train": n_train, "fraction": fraction,
                  "label": name}).to_csv(path, index=False)
    return str(path)


def test_table_intervals_cover_the_law_the_errors_were_drawn_from(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [50, 100, 200, 400]
    paths = [_per_image(tmp_path, "hog", n, 1.5 * n ** -0.25 * rng.lognormal(0, 0.2, 300), n / 400) for n in sizes]
    flat = [_per_image(tmp_path, "lbp", n, rng.normal(0.7, 0.05, 300), n / 400) for n in sizes]
    curve, fit = scaling.scaling_table({"hog": paths, "lbp": flat}, extrapolate_to=1_281_167, n_boot=300)
    assert curve[curve.representation == "hog"].n_train.tolist() == sizes
    assert (curve.ci_low <= curve.error).all() and (curve.error <= curve.ci_high).all()
    hog, lbp = fit.set_index("representation").loc["hog"], fit.set_index("representation").loc["lbp"]
    assert hog.exponent_low < 0.25 < hog.exponent_high and hog.exponent_low > 0  # falls, significantly
    mean_factor = np.exp(0.2 ** 2 / 2)  # the mean of the lognormal noise
    assert hog.predicted_low < 1.5 * mean_factor * 1_281_167 ** -0.25 < hog.predicted_high
    assert lbp.exponent_low < 0 < lbp.exponent_high  # no trend: the interval holds zero
    assert hog.decades_beyond_data == pytest.approx(np.log10(1_281_167 / 400))
    md = scaling.scaling_markdown(curve, fit)
    assert "| hog | 400 |" in md and "decades beyond the data" in md


def test_per_image_errors_of_a_subset_decoder(tmp_path):
    builtin_stores(tmp_path, 32, 4, 1, caches=[("hog", {"cell_size": 8}, "hog")])
    cfg = dict(epochs=1, batch_size=8, width=0.125, device="cpu", seed=0, val_fraction=0.1)
    result = train.train_decoder("hog", str(tmp_path / "hog_train.h5"), str(tmp_path / "train.h5"),
                                 str(tmp_path / "half.pt"), str(tmp_path / "half.csv"), str(tmp_path / "ck.pt"), cfg,
                                 subset=0.5)
    meta = result["meta"]
    assert meta["subset"] == 0.5 and meta["n_train"] == meta["n_train_sources"] == 16  # half of 36 − 4 validation
    table = scaling.test_errors(str(tmp_path / "half.pt"), str(tmp_path / "hog_test.h5"), str(tmp_path / "test.h5"),
                                str(tmp_path / "errors.csv"), device="cpu")
    assert len(table) == 9 and (table.error > 0).all() and (table.n_train == 16).all()
    # the CSV keeps six significant digits
    assert pd.read_csv(tmp_path / "errors.csv").error.tolist() == pytest.approx(table.error.tolist(), rel=1e-5)


def test_findings_say_whether_error_falls_with_more_data():
    from preimage.findings import scaling as scaling_section

    fit = pd.DataFrame([
        {"representation": "hog", "exponent": 0.2, "exponent_low": 0.1, "exponent_high": 0.3,
         "extrapolate_to": 1281167, "predicted": 0.1, "predicted_low": 0.05, "predicted_high": 0.2,
         "decades_beyond_data": 3.5},
        {"representation": "fc", "exponent": 0.01, "exponent_low": -0.05, "exponent_high": 0.07,
         "extrapolate_to": 1281167, "predicted": 0.6, "predicted_low": 0.4, "predicted_high": 0.9,
         "decades_beyond_data": 3.5}])
    text = "\n".join(scaling_section(fit))
    assert "`hog`: error ∝ n^-0.20" in text and "it falls with more data" in text
    assert "`fc`" in text and "no significant fall with more data" in text
