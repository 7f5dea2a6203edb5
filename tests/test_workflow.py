"""A tiny end-to-end run of the real Snakefile, plus dry-run checks of what reruns."""
import h5py
import pytest

from workflow import planned_rules, snakemake, write_config

pytestmark = pytest.mark.slow

TINY = {
    "data": {"source": "builtin", "size": 32, "seed": 0, "train_per_class": 4, "test_per_class": 3},
    "representations": [],
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    configfile = write_config(workdir / "tiny.yaml", TINY)
    snakemake(workdir, "all", configfile=configfile)
    return workdir, configfile


def test_all_builds_the_data_stage(finished_run):
    workdir, _ = finished_run
    with h5py.File(workdir / "results/data/train.h5") as handle:
        assert handle["images"].shape == (4 * 7, 3, 32, 32)
    with h5py.File(workdir / "results/data/test.h5") as handle:
        assert handle["images"].shape == (3 * 2, 3, 32, 32)
    assert (workdir / "results/logs/data/extract.log").read_text().count("done:") == 1


def test_finished_run_has_nothing_to_do(finished_run):
    workdir, configfile = finished_run
    assert planned_rules(workdir, configfile=configfile) == set()


def test_changing_the_seed_reruns_extraction(finished_run):
    workdir, configfile = finished_run
    assert "extract_data" in planned_rules(workdir, "--config", "data={seed: 7}", configfile=configfile)


def test_downstream_only_change_does_not_rerun_extraction(finished_run):
    workdir, configfile = finished_run
    assert "extract_data" not in planned_rules(workdir, "--config", "representations=[hog]", configfile=configfile)


def test_bad_config_gives_one_clear_message(finished_run):
    workdir, configfile = finished_run
    result = snakemake(workdir, "-n", "--config", "data={size: 3}", configfile=configfile, check=False)
    assert result.returncode != 0
    assert "data.size: 3 is less than the minimum of 16" in result.stderr
    assert "Traceback" not in result.stderr
