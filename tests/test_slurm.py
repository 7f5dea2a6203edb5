"""The workflow on a real (single-node, local) SLURM through profiles/slurm, against a local run (the
shared tiny run, tests/conftest.py: tiny_run; the cluster runs its HOG, HOG's GAN variant and fc6).

The cluster and its run start with the session (tests/conftest.py: slurm_run_started). Skips with
the reason where a test cluster cannot be started (not root, no SLURM and no apt-get, a real
cluster's configuration in /etc/slurm). `.ci/run` installs the packages.
"""
from pathlib import Path

import pandas as pd
import pytest

from workflow import (expected_network_feature_jobs, is_network_feature_rule, network_feature_job_submitted,
                      network_feature_log)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm_run(slurm_run_started):
    """The cluster run (started as the session started, tests/conftest.py), once it has ended:
    (working directory, its output)."""
    if slurm_run_started is None or isinstance(slurm_run_started, str):
        pytest.skip(slurm_run_started or "the cluster run was not started")
    cluster, workdir, run = slurm_run_started
    try:
        run.wait(timeout=1800)
    except AssertionError as err:
        raise AssertionError(f"SLURM run failed: {err}\n{cluster.logs()}") from None
    return workdir, run.log.read_text()


@pytest.fixture(scope="module")
def runs(slurm_run, tiny_run):
    """The local run (the shared tiny run, a superset of the cluster's config), the cluster run's
    folder and its output."""
    remote, output = slurm_run
    return tiny_run.workdir, remote, output


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
    fc6_features = network_feature_log(remote / "results", "alexnet", "fc6", "train")
    for log in [logs / "train/hog.log", logs / "train/fc6.log", fc6_features]:
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
        ignored = ["label", "seconds_per_image"]  # a label names its run; timings differ from run to run
        pd.testing.assert_frame_equal(a.drop(columns=ignored, errors="ignore"),
                                      b.drop(columns=ignored, errors="ignore"), atol=1e-6, rtol=0)


def test_gpu_jobs_are_not_serialised_by_the_local_gpu_cap(runs):
    # profiles/default caps local runs at one GPU job at a time; on SLURM both fc6 feature jobs
    # (train and test split) must be submitted together, before either finishes.
    _, _, output = runs
    lines = output.splitlines()
    submitted = [i for i, line in enumerate(lines) if network_feature_job_submitted(line, "alexnet", "fc6")]
    finished = [i for i, line in enumerate(lines) if "Finished jobid" in line and "(Rule: " in line
                and is_network_feature_rule(line.split("(Rule: ", 1)[1].rstrip(")"))]
    assert len(submitted) == sum(expected_network_feature_jobs({"alexnet": 1}).values())
    assert finished and max(submitted) < min(finished), "\n".join(lines[:80])
