"""A single-node SLURM on this machine, from Debian's packages, for the cluster tests.

Started as root without systemd: munged, slurmctld and slurmd with a configuration at
``/etc/slurm/slurm.conf`` (the jobstep plugin strips ``SLURM_CONF``, so the default path is the only
one every SLURM command sees). The node declares two fake GPUs in ``gres.conf``, each on a character
device (a GPU line without ``File=`` is silently dropped), so jobs asking for ``--gpus=1`` get a
GPU allocated and ``CUDA_VISIBLE_DEVICES`` set by SLURM. No slurmdbd: the workflow queries job
states with ``squeue`` and submits without an account.
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Optional

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "munged", "sbatch", "squeue", "sinfo", "scontrol"]
CONF_DIR = Path("/etc/slurm")
MARKER = "# written by preimage's tests/slurm_cluster.py"


def why_not_available() -> Optional[str]:
    """None when a test cluster can be started here, else the reason (for pytest.skip)."""
    if os.name != "posix" or os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing and shutil.which("apt-get"):
        result = subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], capture_output=True, text=True,
                                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
        if result.returncode != 0:
            return f"apt-get install {' '.join(PACKAGES)} failed: {result.stderr.strip()[-300:]}"
        missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing) and there is no apt-get to install it"
    conf = CONF_DIR / "slurm.conf"
    if conf.exists() and MARKER not in conf.read_text():
        return f"{conf} exists and was not written by these tests: not touching a real cluster's configuration"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return 'snakemake-executor-plugin-slurm is not installed (pip install -e ".[slurm]")'
    return None


class LocalSlurm:
    """Start/stop the daemons; ``gpus`` fake GPUs, ``cpus`` declared CPUs (overcommitted on purpose:
    the cluster profile asks for 8 CPUs per GPU)."""

    def __init__(self, workdir: Path, gpus: int = 2, cpus: int = 16, memory_mb: int = 64000) -> None:
        self.workdir = Path(workdir)
        self.gpus, self.cpus, self.memory_mb = gpus, cpus, memory_mb
        self.host = socket.gethostname().split(".")[0]
        self.spool = self.workdir / "spool"

    # -- configuration ------------------------------------------------------------------
    def _write_config(self) -> None:
        devices = self.workdir / "dev"
        devices.mkdir(parents=True, exist_ok=True)
        for i in range(self.gpus):
            path = devices / f"fakegpu{i}"
            if not path.exists():
                os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # same numbers as /dev/null
        for sub in ("ctld", "d", "log"):
            (self.spool / sub).mkdir(parents=True, exist_ok=True)
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        log = self.spool / "log"
        (CONF_DIR / "slurm.conf").write_text(f"""{MARKER}
ClusterName=preimage-test
SlurmctldHost={self.host}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={self.spool / 'ctld'}
SlurmdSpoolDir={self.spool / 'd'}
SlurmctldPidFile={self.spool / 'slurmctld.pid'}
SlurmdPidFile={self.spool / 'slurmd.pid'}
SlurmctldLogFile={log / 'slurmctld.log'}
SlurmdLogFile={log / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
GresTypes=gpu
MinJobAge=3600
NodeName={self.host} CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName=cpu Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={self.host} MaxTime=INFINITE State=UP
""")
        (CONF_DIR / "gres.conf").write_text(MARKER + "\n" + "".join(
            f"NodeName={self.host} Name=gpu File={devices / f'fakegpu{i}'}\n" for i in range(self.gpus)))

    # -- daemons --------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> None:
        self.stop()
        self._write_config()
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create", "--force"], check=True, capture_output=True)
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force"], check=True, capture_output=True)
        subprocess.run(["slurmctld", "-c", "-i"], check=True, capture_output=True)
        subprocess.run(["slurmd", "-c"], check=True, capture_output=True)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
            state = result.stdout.strip()
            if result.returncode == 0 and state.startswith("idle"):
                return
            if "down" in state or "drain" in state:
                subprocess.run(["scontrol", "update", f"NodeName={self.host}", "State=RESUME"], capture_output=True)
            time.sleep(1)
        raise RuntimeError(f"the test SLURM did not become idle (state {state!r}); logs: {self.logs()}")

    def logs(self) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.spool / "log" / name
            if path.exists():
                out.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-30:]))
        return "\n".join(out)

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True)
        for daemon in ("slurmd", "slurmctld", "munged"):
            subprocess.run(["pkill", "-x", daemon], capture_output=True)
        for _ in range(50):
            alive = subprocess.run(["pgrep", "-x", "slurmctld|slurmd|munged"], capture_output=True).returncode == 0
            if not alive:
                break
            time.sleep(0.2)

    def cleanup(self) -> None:
        self.stop()
        for name in ("slurm.conf", "gres.conf"):
            path = CONF_DIR / name
            if path.exists() and MARKER in path.read_text():
                path.unlink()
