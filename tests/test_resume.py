"""A training job killed mid-way (as by a cluster's time limit) resumes from its checkpoint when the
workflow is rerun, and ends with the same weights as an uninterrupted run: the plain decoder, and the
-gan variant of Appendix A (whose checkpoint also holds the discriminator and its optimiser)."""
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
GAN_CONFIG = {**CONFIG, "variants": {"gan": ["hog"]}, "train": {**CONFIG["train"], "epochs": 12}}


@pytest.mark.parametrize("config, rep", [(CONFIG, "hog"), (GAN_CONFIG, "hog-gan")], ids=["pixel", "gan"])
def test_killed_training_resumes_to_the_same_weights(tmp_path, config, rep):
    target = f"results/{rep}/decoder.pt"
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    for workdir in (reference, interrupted):
        workdir.mkdir()
        write_config(workdir / "tiny.yaml", config)
    snakemake(reference, target, configfile=reference / "tiny.yaml")

    checkpoint = interrupted / f"results/checkpoints/{rep}/train.pt"
    process = subprocess.Popen(snakemake_command(interrupted, target, configfile=interrupted / "tiny.yaml"),
                               cwd=interrupted, env=ENV, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole job, as a scheduler does at the time limit
    process.wait()
    assert checkpoint.exists(), "training ended before its first checkpoint: make the run longer"
    assert not (interrupted / target).exists()

    snakemake(interrupted, "--unlock", configfile=interrupted / "tiny.yaml")
    snakemake(interrupted, target, configfile=interrupted / "tiny.yaml")
    log = (interrupted / f"results/logs/train/{rep}.log").read_text()
    assert "resuming hog from" in log
    a = torch.load(reference / target, weights_only=True)["state_dict"]
    b = torch.load(interrupted / target, weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert not checkpoint.exists()  # removed once the decoder is written
