"""The workflow on a real (single-node, local) SLURM through profiles/slurm, against a local run (the
shared tiny run, tests/conftest.py: tiny_run; the cluster runs its HOG, HOG's GAN variant and fc6).

Skips with the reason where a test cluster cannot be started (not root, no SLURM and no apt-get,
a real cluster's configuration in /etc/slurm). `.ci/run` installs the packages.
"""
from pathlib import Path

import pandas as pd
import pytest

from slurm_cluster import LocalSlurm, why_not_available
from workflow import (ROOT, config_path, expected_network_feature_jobs, is_network_feature_rule,
                      network_feature_job_submitted, network_feature_log, snakemake)

pytestmark = pytest.mark.slow

# Only what the local test cluster needs beyond the profile: no accounting daemon, and status polls
# every 2 s instead of 40 s (a polite interval on a shared cluster, minutes of idling in a test).
CLUSTER_OVERRIDES = ("--slurm-no-account", "--slurm-status-command", "squeue", "--jobs", "4",
                     "--slurm-init-seconds-before-status-checks", "2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = why_not_available()
    if reason:
        pytest.skip(reason)
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    slurm.start()
    yield slurm
    slurm.cleanup()


@pytest.fixture(scope="module")
def runs(cluster, tiny_run, tmp_path_factory):
    """The local run (the shared tiny run, a superset of the cluster's config), the cluster run's
    folder and its output."""
    remote = tmp_path_factory.mktemp("cluster")
    result = snakemake(remote, "all", "--profile", str(ROOT / "profiles/slurm"), *CLUSTER_OVERRIDES,
                       configfile=[tiny_run.configfile, config_path("slurm")], check=False, timeout=1200)
    if result.returncode != 0:
        raise AssertionError(f"SLURM run failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n{cluster.logs()}")
    return tiny_run.workdir, remote, result.stdout + result.stderr


def _environment(log: Path) -> dict:
    for line in log.read_text().splitlines():
        if "job environment:" in line:
            return dict(part.split("=", 1) for part in line.split("job environment:", 1)[1].split())
    raise AssertionError(f"{log} has no job environment line")


def _slurm_gpus(env: dict) -> list:
    """The GPUs SLURM says it allocated (the batch step sets SLURM_JOB_GPUS, an srun step SLURM_STEP_GPUS)."""
    ids = [env[k] for k in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS") if env.get(k)]
    return ids + ([env["SLURM_GPUS_ON_NODE"]] if env.get("SLURM_GPUS_ON_NODE", "0") != "0" else [])


def test_gpu_jobs_ran_as_slurm_jobs_with_a_gpu_each(runs):
    _, remote, output = runs
    assert "sbatch" in output or "SLURM" in output  # the executor plugin submitted the jobs
    logs = remote / "results/logs"
    jobs = {}
    for log in [logs / "train/hog.log", logs / "train/fc6.log", network_feature_log(remote / "results", "fc6", "train")]:
        env = _environment(log)
        assert "SLURM_JOB_ID" in env, f"{log.name} did not run under SLURM: {env}"
        assert env.get("CUDA_VISIBLE_DEVICES") in ("0", "1") and _slurm_gpus(env), env
        jobs[log] = env["SLURM_JOB_ID"]
    assert len(set(jobs.values())) == len(jobs)  # one SLURM job each
    hog_features = _environment(logs / "features/hog/train.log")
    assert "SLURM_JOB_ID" in hog_features and not _slurm_gpus(hog_features), hog_features  # CPU job, no GPU asked
    assert hog_features.get("CUDA_VISIBLE_DEVICES") not in ("0", "1"), hog_features


def test_cluster_results_match_a_local_run(runs):
    local, remote, _ = runs
    for table in ("results/tables/errors.csv", "results/hog/error.csv", "results/fc6/error.csv"):
        a, b = pd.read_csv(local / table), pd.read_csv(remote / table)
        if table.endswith("errors.csv"):  # the local run has more representations: the rows of the cluster's
            assert set(b["representation"]) == {"hog", "fc6", "hog-gan"}
            a = a[a["representation"].isin(b["representation"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(a.drop(columns=["label"], errors="ignore"),
                                      b.drop(columns=["label"], errors="ignore"), atol=1e-6, rtol=0)


def test_gpu_jobs_are_not_serialised_by_the_local_gpu_cap(runs):
    # profiles/default caps local runs at one GPU job at a time; on SLURM both fc6 feature jobs
    # (train and test split) must be submitted together, before either finishes.
    _, _, output = runs
    lines = output.splitlines()
    submitted = [i for i, line in enumerate(lines) if network_feature_job_submitted(line, "fc6")]
    finished = [i for i, line in enumerate(lines) if "Finished jobid" in line and "(Rule: " in line
                and is_network_feature_rule(line.split("(Rule: ", 1)[1].rstrip(")"))]
    assert len(submitted) == expected_network_feature_jobs(nodes=1, networks=1)
    assert finished and max(submitted) < min(finished), "\n".join(lines[:80])
