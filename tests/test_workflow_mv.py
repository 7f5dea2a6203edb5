"""Mahendran & Vedaldi's parts in the shared tiny run (tests/conftest.py: tiny_run): DSIFT and HOGb
inverted by the decoder and by optimisation, several reconstructions per code, and the locality
analysis."""
import h5py
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

#: baselines.mahendran_vedaldi.representations of .test/config-tiny.yaml
MV = {"hog", "hogb", "dsift"}


@pytest.fixture(scope="module")
def results(tiny_run):
    return tiny_run.results


def test_dsift_and_hogb_invert_by_both_methods(results):
    with h5py.File(results / "features/dsift/test.h5") as handle:
        assert handle["features"].shape == (3 * 2, 128, 5, 5)  # (31 - 12) // 4 + 1 = 5 descriptors a side
    with h5py.File(results / "features/hogb/test.h5") as handle:
        assert handle["features"].shape == (3 * 2, 31, 4, 4)
    table = pd.read_csv(results / "tables/mahendran_vedaldi.csv")
    assert set(table["representation"]) == MV
    assert set(table["method"]) == {"decoder", "mahendran_vedaldi"}
    assert table["mv_error"].notna().all() and table["feature_error"].notna().all()
    mv = table[table.method == "mahendran_vedaldi"].set_index("representation")
    assert mv.loc["dsift", "sigma"] == 0.3 and mv.loc["hogb", "sigma"] == 0.27  # per-representation σ
    assert mv.loc["hog", "sigma"] == 0.27
    assert table["mv_claim"].isna().all()  # the "≤ 20 %" is about CNN layers
    for rep in ("hogb", "dsift"):
        assert (results / rep / "error.csv").exists()


def test_three_restarts_give_three_different_reconstructions_and_a_diversity(results):
    table = pd.read_csv(results / "tables/mahendran_vedaldi.csv")
    mv = table[table.method == "mahendran_vedaldi"]
    assert (mv["restarts"] == 3).all() and (mv["diversity"] > 0).all()
    assert table[table.method == "decoder"]["diversity"].isna().all()
    with h5py.File(results / "hogb/mahendran_vedaldi.h5") as handle:
        samples = handle["mahendran_vedaldi_samples"][:]
        assert samples.shape == (3, 3, 3, 32, 32)
        assert (samples[:, 0] == handle["mahendran_vedaldi"][:]).all()
    for i in range(3):
        assert len({samples[i, k].tobytes() for k in range(3)}) == 3
    for rep in ("hogb", "dsift"):
        assert (results / f"figures/mahendran_vedaldi_samples_{rep}.png").stat().st_size > 0
    assert "diversity" in (results / "tables/mahendran_vedaldi.md").read_text()
    assert "Several pre-images per code" in (results / "findings.md").read_text()


def test_locality_table_and_figure(results):
    table = pd.read_csv(results / "tables/locality.csv")
    assert table["variant"].tolist() == ["all", "all", "window", "window", "channels", "channels"]
    assert table["method"].tolist() == ["decoder", "mahendran_vedaldi"] * 3
    assert table.loc[table.variant == "all", "active_fraction"].tolist() == [1.0, 1.0]
    assert table.loc[table.variant == "window", "active_fraction"].iloc[0] == pytest.approx(4 / 16)
    assert (results / "figures/locality_hogb.png").stat().st_size > 0
