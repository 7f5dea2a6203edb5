"""A training job killed mid-way (as by a cluster's time limit) resumes from its checkpoint when the
workflow is rerun, and ends with the same weights as an uninterrupted run."""
import os
import signal
import subprocess
import time

import pytest
import torch

from workflow import ENV, snakemake, snakemake_command, write_config

pytestmark = pytest.mark.slow

CONFIG = {
    "data": {"source": "builtin", "size": 32, "seed": 0, "train_per_class": 8, "test_per_class": 2},
    "representations": ["hog"],
    "features": {"hog": {"cell_size": 8}},
    "decoder": {"width": 0.125},
    "train": {"epochs": 25, "batch_size": 8, "device": "cpu", "threads": 1},
}
TARGET = "results/hog/decoder.pt"


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    for workdir in (reference, interrupted):
        workdir.mkdir()
        write_config(workdir / "tiny.yaml", CONFIG)
    snakemake(reference, TARGET, configfile=reference / "tiny.yaml")

    checkpoint = interrupted / "results/checkpoints/hog/train.pt"
    process = subprocess.Popen(snakemake_command(interrupted, TARGET, configfile=interrupted / "tiny.yaml"),
                               cwd=interrupted, env=ENV, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole job, as a scheduler does at the time limit
    process.wait()
    assert checkpoint.exists(), "training ended before its first checkpoint: make the run longer"
    assert not (interrupted / TARGET).exists()

    snakemake(interrupted, "--unlock", configfile=interrupted / "tiny.yaml")
    snakemake(interrupted, TARGET, configfile=interrupted / "tiny.yaml")
    log = (interrupted / "results/logs/train/hog.log").read_text()
    assert "resuming hog from" in log
    a = torch.load(reference / TARGET, weights_only=True)["state_dict"]
    b = torch.load(interrupted / TARGET, weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert not checkpoint.exists()  # removed once the decoder is written
