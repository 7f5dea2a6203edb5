"""Helpers to run the real Snakefile in a temporary working directory on the tests' configurations."""
from __future__ import annotations

import atexit
import dataclasses
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Sequence, Union

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: The tests' workflow configurations, one YAML file each (each runs by hand from the repository
#: root: ``snakemake --cores 2 all --configfile .test/config-<name>.yaml``; docs/testing.md).
TEST_CONFIGS = ROOT / ".test"


def config_path(name: str) -> Path:
    """The path of ``.test/config-<name>.yaml``."""
    path = TEST_CONFIGS / f"config-{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def config_dict(name: str) -> dict:
    """``.test/config-<name>.yaml`` as a dict, for a test that writes a variant of it."""
    return yaml.safe_load(config_path(name).read_text())


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def merged(config: dict, overrides: dict) -> dict:
    """``config`` with ``overrides`` merged in the way Snakemake merges config files: mappings key
    by key, anything else (lists included) replaced."""
    out = dict(config)
    for key, value in overrides.items():
        out[key] = merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


#: ``configfile`` of the helpers below: one file, several, or none
ConfigFiles = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], None]

ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def snakemake_arguments(workdir: Path, *args: str, configfile: ConfigFiles = None) -> list[str]:
    """The arguments of ``snakemake`` that run the project's Snakefile inside ``workdir``;
    ``configfile``: one file or several (merged in order, each over the ones before)."""
    arguments = ["-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    arguments += list(args)  # targets first: several options take a list of values
    if configfile is not None:
        files = [configfile] if isinstance(configfile, (str, os.PathLike)) else list(configfile)
        arguments += ["--configfile", *map(str, files)]
    return arguments


class ServedCommand:
    """A command line the :class:`SnakemakeServer` runs, as far as the tests use a Popen: ``pid`` (of
    a session of its own: ``os.killpg(pid, ...)`` ends it and its jobs), :meth:`poll`, :meth:`wait`."""

    def __init__(self, argv: Sequence[str], pid: int, answers: queue.Queue, server: "SnakemakeServer") -> None:
        self.args, self.pid, self._answers, self._server = list(argv), pid, answers, server
        self.returncode: Union[int, None] = None

    def wait(self, timeout: Union[float, None] = None) -> int:
        """Its exit status once it has ended; TimeoutExpired after ``timeout`` seconds."""
        if self.returncode is None:
            try:
                answer = self._answers.get(timeout=timeout)
            except queue.Empty:
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            if answer is None:
                raise RuntimeError(f"the Snakemake server ended; its log:\n{self._server.log.read_text()[-4000:]}")
            self.returncode = answer["returncode"]
        return self.returncode

    def poll(self) -> Union[int, None]:
        try:
            return self.wait(timeout=0)
        except subprocess.TimeoutExpired:
            return None


class SnakemakeServer:
    """Runs ``snakemake`` command lines in children forked from one process that has already imported
    Snakemake and what the Snakefile imports (tests/snakemake_server.py): each command is still
    Snakemake's own command line in a process of its own, with :data:`ENV`, but starts in a fraction
    of a second instead of the seconds an interpreter with torch takes. Several may run at once (the
    background runs beside the tests' own commands). One per test session."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="snakemake-server-"))
        self.log = self.folder / "server.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("snakemake_server.py"))],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                            env=ENV, cwd=ROOT)
        self.count = 0
        self.lock = threading.Lock()
        self.answers: dict = {}  # request id: the queue of the server's answers about it
        threading.Thread(target=self._read_answers, daemon=True).start()

    def _read_answers(self) -> None:
        for line in self.process.stdout:
            answer = json.loads(line)
            with self.lock:
                answers = self.answers[answer["id"]]
            answers.put(answer)
        with self.lock:  # the server ended: whoever still waits learns it
            for answers in self.answers.values():
                answers.put(None)

    def start(self, argv: Sequence[str], cwd: Path, stdout: Path, stderr: Path, niceness: int) -> ServedCommand:
        """Start ``python -m snakemake *argv`` in ``cwd`` (its output to the files ``stdout`` and
        ``stderr``, which may be one file; CPU priority ``niceness`` at the lowest) without waiting for it."""
        with self.lock:
            self.count += 1
            request = {"id": self.count, "argv": list(map(str, argv)), "cwd": str(cwd), "stdout": str(stdout),
                       "stderr": str(stderr), "niceness": niceness}
            answers = self.answers[self.count] = queue.Queue()
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        try:
            started = answers.get(timeout=600)  # the first waits for the server to import
        except queue.Empty:
            started = None
        if started is None:
            raise RuntimeError(f"the Snakemake server did not start the command; its log: {self.log}")
        return ServedCommand([sys.executable, "-m", "snakemake", *request["argv"]], started["pid"], answers, self)

    def _new_file(self, suffix: str) -> Path:
        """A new empty file of a unique name in the server's folder."""
        handle, path = tempfile.mkstemp(suffix=suffix, dir=self.folder)
        os.close(handle)
        return Path(path)

    def run(self, argv: Sequence[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        """``python -m snakemake *argv`` in ``cwd``, as :func:`subprocess.run` with ``capture_output``
        and ``text`` would run it (TimeoutExpired after ``timeout`` seconds, the command ended), at
        this process's CPU priority."""
        out, err = self._new_file(".out"), self._new_file(".err")
        command = self.start(argv, cwd, out, err, niceness=os.nice(0))
        try:
            command.wait(timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(command.pid, signal.SIGKILL)
            command.wait(60)
            timed_out = True
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        out.unlink()
        err.unlink()
        if timed_out:
            raise subprocess.TimeoutExpired(command.args, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command.args, command.returncode, stdout, stderr)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


_server: Union[SnakemakeServer, None] = None


def snakemake_server() -> SnakemakeServer:
    """The session's :class:`SnakemakeServer` (started on first use)."""
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = SnakemakeServer()
        atexit.register(_server.close)
    return _server


def run_snakemake(argv: Sequence[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m snakemake *argv`` in ``cwd`` with :data:`ENV` (through the session's
    :class:`SnakemakeServer`); the CompletedProcess, with its output as text."""
    return snakemake_server().run(argv, cwd, timeout)


def start_snakemake(workdir: Path, *args: str, configfile: ConfigFiles = None, log: Path,
                    niceness: Union[int, None] = None) -> ServedCommand:
    """Start ``snakemake`` on the project's Snakefile inside ``workdir`` without waiting for it (its
    output to ``log``; CPU priority ``niceness``, this process's by default)."""
    argv = snakemake_arguments(workdir, *args, configfile=configfile)
    return snakemake_server().start(argv, workdir, log, log, os.nice(0) if niceness is None else niceness)


def snakemake(workdir: Path, *args: str, configfile: ConfigFiles = None, check: bool = True, timeout: int = 600):
    """Run ``snakemake`` on the project's Snakefile inside ``workdir``; return the CompletedProcess."""
    result = run_snakemake(snakemake_arguments(workdir, *args, configfile=configfile), cwd=workdir, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


class BackgroundRun:
    """``snakemake`` on the project's Snakefile in ``workdir``, started without waiting for it (its
    output goes to ``log``): :meth:`wait` for it, :meth:`stop` it."""

    def __init__(self, workdir: Path, *args: str, configfile: ConfigFiles = None, log: Path, niceness: int = 0) -> None:
        """``niceness``: the run's CPU priority (os.nice; the Snakemake server's where that is lower)."""
        self.workdir, self.args, self.log = Path(workdir), args, Path(log)
        self.finished = FinishedRun(self.workdir, configfile)
        self.process = start_snakemake(self.workdir, *args, configfile=configfile, log=self.log, niceness=niceness)

    def wait(self, timeout: float) -> None:
        """Wait until it ends; AssertionError with the end of its output unless it succeeded."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"snakemake {' '.join(self.args)} in {self.workdir} took more than {timeout} s; "
                                 f"see {self.log}") from None
        if code != 0:
            raise AssertionError(f"snakemake {' '.join(self.args)} failed ({code}):\n{self.log.read_text()[-8000:]}")

    def stop(self) -> None:
        """End it and its jobs, if it still runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def planned_rules(workdir: Path, *args: str, configfile: ConfigFiles = None) -> set[str]:
    """Rules a dry run would execute."""
    return set(planned_jobs(workdir, *args, configfile=configfile))


def planned_jobs(workdir: Path, *args: str, configfile: ConfigFiles = None) -> dict[str, int]:
    """Jobs per rule a dry run would execute (parsed from the job-stats table of ``snakemake -n``)."""
    return job_counts(snakemake(workdir, "-n", *args, "--quiet=rules", configfile=configfile))


def job_counts(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule in the job-stats table a ``snakemake`` run or dry run printed."""
    rules = {}
    in_table = False
    for line in (result.stdout + result.stderr).splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if not parts or parts[0] == "total":
                break
            if parts[0].startswith("-"):
                continue
            rules[parts[0]] = int(parts[1])
    return rules


def fake_imagenet(root: Path, classes: int = 1000, train_per_class: int = 100, val_per_class: int = 2) -> Path:
    """An ILSVRC2012-shaped tree of empty ``.JPEG`` files (``train/<wnid>/``, ``val/<wnid>/``): enough for
    a dry run, whose config check counts the files of each class without decoding them. The files of a
    class are hard links to its first: a directory entry each instead of an inode each (about a tenth
    of the time for the default's 102,000 files; one inode per class stays far below a file system's
    limit on links)."""
    for k in range(classes):
        wnid = f"n{k:08d}"
        first = None
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                path = folder / f"{wnid}_{i}.JPEG"
                if first is None:
                    path.touch()
                    first = path
                else:
                    os.link(first, path)
    return root


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    """A workflow run that has finished: its working directory and config file."""

    workdir: Path
    configfile: ConfigFiles

    @property
    def results(self) -> Path:
        return self.workdir / "results"

    def copy(self, destination: Path) -> "FinishedRun":
        """The run copied to ``destination`` (timestamps and Snakemake's records kept, so that the
        copy has nothing to do either), for a test that reruns or changes it."""
        shutil.copytree(self.workdir, destination, symlinks=True)
        return FinishedRun(destination, self.configfile)


# --------------------------------------------------------------------------- the feature stage's jobs
# What the tests expect of the jobs that compute network (CNN) features, in one place: where the
# feature stage changes how it splits its work into jobs (rule names, jobs per network, logs), only
# this section changes. Networks are named as the catalog groups their nodes (``alexnet``,
# ``alexnet-random``, ``alexnet-fc6-ae``, ``resnet18``, ``vit_b_16``, ``efficientnet_lite0`` …).

#: The rules that compute every node of one network in one pass, for a whole split and for a shard of
#: the training split (data.shards > 1): ``network_features_<network>`` and
#: ``network_feature_shard_<network>``, one job per network and part.
NETWORK_FEATURES_RULE = "network_features_"
NETWORK_FEATURE_SHARD_RULE = "network_feature_shard_"


def is_network_feature_rule(rule: str, shard: bool = False) -> bool:
    """Whether ``rule`` computes network features (of whole splits, or with ``shard`` of shards)."""
    return rule.startswith(NETWORK_FEATURE_SHARD_RULE if shard else NETWORK_FEATURES_RULE)


def network_feature_jobs(planned: dict, shard: bool = False) -> dict:
    """The jobs of ``planned`` (:func:`planned_jobs`) that compute network features (of whole splits,
    or with ``shard`` of shards): ``{rule: jobs}``."""
    return {rule: count for rule, count in planned.items() if is_network_feature_rule(rule, shard)}


def without_network_feature_jobs(planned: dict) -> dict:
    """``planned`` without the jobs that compute network features."""
    return {rule: count for rule, count in planned.items()
            if not (is_network_feature_rule(rule) or is_network_feature_rule(rule, shard=True))}


def expected_network_feature_jobs(networks: dict, parts: int = 2, shard: bool = False) -> dict:
    """The jobs (as :func:`network_feature_jobs` gives them) that compute the caches of ``networks``
    (``{network: how many of its nodes}``) in ``parts`` parts each: the two splits, the test split
    alone, or (``shard``) the shards of the training split; one job per network and part, however
    many of its nodes it computes."""
    rule = NETWORK_FEATURE_SHARD_RULE if shard else NETWORK_FEATURES_RULE
    return {f"{rule}{network}": parts for network, nodes in networks.items() if nodes}


def network_feature_log(results: Path, network: str, slug: str, split: str) -> Path:
    """The log of the job that computed the features of node ``slug`` of ``network`` for ``split``."""
    return results / "logs" / "features" / network / f"{split}.log"


def network_feature_job_submitted(line: str, network: str, slug: str) -> bool:
    """Whether ``line`` of a cluster executor's output says that a job computing features of node
    ``slug`` of ``network`` was submitted (the SLURM executor names each job's log folder
    ``rule_<rule>/<wildcards>``)."""
    return "has been submitted" in line and f"rule_{NETWORK_FEATURES_RULE}{network}/" in line