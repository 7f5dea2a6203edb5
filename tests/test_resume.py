"""A training job killed mid-way (as by a cluster's time limit) resumes from its checkpoint when the
workflow is rerun, and ends with the same weights as an uninterrupted run: the plain decoder, and the
-gan variant of Appendix A (whose checkpoint also holds the discriminator and its optimiser).

One uninterrupted run (``.test/config-resume.yaml``) is the reference; each test copies it, removes
the decoder it retrains, and kills and reruns that training job in the copy."""
import os
import shutil
import signal
import time

import pytest
import torch

from workflow import FinishedRun, config_path, snakemake, start_snakemake

pytestmark = pytest.mark.slow

TARGET = "results/hog-gan/decoder.pt"  # needs results/hog/decoder.pt: the GAN starts from the pixel decoder


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    snakemake(workdir, TARGET, configfile=config_path("resume"))
    return FinishedRun(workdir, config_path("resume"))


@pytest.mark.parametrize("rep", ["hog", "hog-gan"], ids=["pixel", "gan"])
def test_killed_training_resumes_to_the_same_weights(reference, tmp_path, rep):
    target = f"results/{rep}/decoder.pt"
    run = reference.copy(tmp_path / "interrupted")
    interrupted, configfile = run.workdir, run.configfile
    shutil.rmtree(interrupted / "results" / rep)  # the decoder and its training log: this job reruns
    (interrupted / f"results/logs/train/{rep}.log").unlink()

    checkpoint = interrupted / f"results/checkpoints/{rep}/train.pt"
    process = start_snakemake(interrupted, target, configfile=configfile, log=tmp_path / "interrupted.log")
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole job, as a scheduler does at the time limit
    process.wait()
    assert checkpoint.exists(), "training ended before its first checkpoint: make the run longer"
    assert not (interrupted / target).exists()

    snakemake(interrupted, "--unlock", configfile=configfile)
    snakemake(interrupted, target, configfile=configfile)
    log = (interrupted / f"results/logs/train/{rep}.log").read_text()
    assert "resuming hog from" in log
    a = torch.load(reference.workdir / target, weights_only=True)["state_dict"]
    b = torch.load(interrupted / target, weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert not checkpoint.exists()  # removed once the decoder is written
