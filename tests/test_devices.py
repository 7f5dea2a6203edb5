"""Device choice and local GPU slots (Snakemake sets no CUDA_VISIBLE_DEVICES for local jobs)."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from preimage import devices

HOLD = textwrap.dedent("""
    import os, sys, time
    from preimage import devices
    slot = devices.claim_gpu_slot(count=int(sys.argv[2]), lock_dir=sys.argv[1], wait_s=float(sys.argv[3]), poll_s=0.05)
    print(slot, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
    time.sleep(float(sys.argv[4]))
""")


def _hold(lock_dir, count, wait_s=0.5, sleep_s=30):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.Popen([sys.executable, "-c", HOLD, str(lock_dir), str(count), str(wait_s), str(sleep_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_concurrent_jobs_get_different_gpus_and_a_third_waits(tmp_path):
    first, second = _hold(tmp_path, 2), None
    try:
        assert first.stdout.readline().split() == ["0", "0"]
        second = _hold(tmp_path, 2)
        assert second.stdout.readline().split() == ["1", "1"]
        third = _hold(tmp_path, 2, wait_s=0.3, sleep_s=0)
        _, err = third.communicate(timeout=60)
        assert third.returncode != 0 and "no free GPU slot among 2" in err
    finally:
        for p in (first, second):
            if p is not None:
                p.kill()
                p.wait()
    # a killed job's lock is released by the OS: its GPU is free again
    again = _hold(tmp_path, 2, sleep_s=0)
    assert again.stdout.readline().split() == ["0", "0"]
    again.wait()


def test_existing_cuda_visible_devices_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # e.g. set by SLURM for the job's allocation
    assert devices.claim_gpu_slot(count=4, lock_dir=str(tmp_path)) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and not list(tmp_path.iterdir())


def test_no_gpu_no_slot(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.claim_gpu_slot(count=0, lock_dir=str(tmp_path)) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_job_environment_names_the_slurm_job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    line = devices.job_environment()
    assert "SLURM_JOB_ID=42" in line and "host=" in line and "torch_threads=" in line


def test_resolve_device():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert devices.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            devices.resolve_device("cuda")
