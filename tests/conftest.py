"""Fixtures shared by several test modules: one torch thread for every test, the one end-to-end run of
``.test/config-tiny.yaml`` that the workflow checks share, one fake ILSVRC2012 tree and the dry runs
of the paper's configurations on it."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

# One BLAS thread in the test process too (set before NumPy loads OpenBLAS): beside the background
# runs a second one would spin waiting for a core, as torch's would (fixture one_torch_thread).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from workflow import ROOT, BackgroundRun, FinishedRun, config_path, fake_imagenet, job_counts, snakemake


#: Fixtures of the background runs (started as the session starts, :func:`tiny_run_started`).
BACKGROUND_RUNS = ("tiny_run", "slurm_run", "background_runs")


def pytest_collection_modifyitems(session, config, items):
    """Modules with a test that waits for a background run go last (each module's tests stay
    together, in their order): the library tests run beside the background runs instead of
    waiting for them, so that both cores stay busy."""
    def waits(item) -> bool:
        return any(name in getattr(item, "fixturenames", ()) for name in BACKGROUND_RUNS)

    waiting_modules = {item.module.__name__ for item in items if waits(item) and hasattr(item, "module")}
    items[:] = sorted(items, key=lambda item: getattr(getattr(item, "module", None), "__name__", "") in waiting_modules)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Every test runs torch on one thread. The shared tiny run (and other workflow runs) keep at
    least one core busy beside the tests; a second intra-op thread then spins waiting for a core
    instead of helping (the GAN checkpoint tests took 29 s of a busy suite with torch's default two
    threads, 1 s on their own), and the tiny tensors of the tests gain nothing from it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: A folder in which to keep the tiny run between test sessions (optional, for working on the tests):
#: each session still runs ``snakemake all`` there first, which reruns what Snakemake sees changed
#: (config, rules, scripts; not the library's code).
KEEP_TINY_RUN = "PREIMAGE_TEST_TINY_RUN"


@pytest.fixture(scope="session", autouse=True)
def tiny_run_started(request, tmp_path_factory):
    """Starts the tiny run (:func:`tiny_run`) in the background as the session starts, when a selected
    test uses it: it runs while the library tests do, which mostly keep one core busy, not two."""
    if not any("tiny_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    kept = os.environ.get(KEEP_TINY_RUN)
    workdir = Path(kept).resolve() if kept else tmp_path_factory.mktemp("tiny-run")
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = config_path("tiny")
    run = BackgroundRun(workdir, "all", configfile=configfile, log=tmp_path_factory.getbasetemp() / "tiny-run.log")
    yield run.finished, run
    run.stop()


@pytest.fixture(scope="session")
def tiny_run(tiny_run_started) -> FinishedRun:
    """``snakemake all`` on ``.test/config-tiny.yaml``, once per test session: every end-to-end check
    that only reads a finished run (or dry-runs against it) asserts on this one. Tests that rerun or
    change it work on :meth:`FinishedRun.copy`. With the environment variable
    ``PREIMAGE_TEST_TINY_RUN`` set to a folder, the run is made (or brought up to date) there."""
    finished, run = tiny_run_started
    run.wait(timeout=3600)
    return finished


#: The attribute by which a test module declares workflow runs that need no other run's results:
#: ``RUNS_STARTED_EARLY = {name: (args, config names)}``, each ``snakemake *args`` in a folder of its own
#: on ``.test/config-<name>.yaml`` of the names, merged in order. :func:`background_runs_started`
#: starts them as the session starts; fixture ``background_runs`` gives them, finished.
RUNS_STARTED_EARLY = "RUNS_STARTED_EARLY"


@pytest.fixture(scope="session", autouse=True)
def background_runs_started(request, tmp_path_factory, tiny_run_started):
    """The runs that the selected tests' modules declare in :data:`RUNS_STARTED_EARLY`, started in the
    background as the session starts, at the lowest CPU priority of all (:data:`EARLY_RUNS_NICENESS`):
    they take what the tiny run and the tests leave, mostly the minutes in which the test process waits
    for the tiny run, instead of running after the tiny run; ``{name: run}``."""
    declared = {}
    for module in dict.fromkeys(item.module for item in request.session.items if hasattr(item, "module")):
        declared.update(getattr(module, RUNS_STARTED_EARLY, {}))
    runs = {}
    for name, (args, configs) in declared.items():
        workdir = tmp_path_factory.mktemp(name)
        runs[name] = BackgroundRun(workdir, *args, configfile=[config_path(c) for c in configs],
                                   log=tmp_path_factory.getbasetemp() / f"{name}-run.log", niceness=EARLY_RUNS_NICENESS)
    yield runs
    for run in runs.values():
        run.stop()


@pytest.fixture(scope="session")
def background_runs(background_runs_started):
    """``background_runs(name)``: the run a module declared in :data:`RUNS_STARTED_EARLY`, waited for
    (a :class:`workflow.FinishedRun`; AssertionError with its output's end if it failed)."""
    def finished(name: str) -> FinishedRun:
        run = background_runs_started[name]
        run.wait(timeout=1800)
        return run.finished

    return finished


#: What the local test cluster needs beyond profiles/slurm: no accounting daemon, and status polls from
#: 2 s on instead of 40 s (a polite interval on a shared cluster, minutes of idling in a test).
SLURM_OVERRIDES = ("--slurm-no-account", "--slurm-status-command", "squeue", "--jobs", "4",
                   "--slurm-init-seconds-before-status-checks", "2")


#: What the cluster builds: the errors table, which takes the data stage, a CPU job (HOG features)
#: and the GPU jobs (fc6's features, the decoders and their evaluations) that tests/test_slurm.py
#: checks, without the figures of ``all``, which would add jobs of the kinds it has already run.
SLURM_TARGET = "results/tables/errors.csv"


@pytest.fixture(scope="session", autouse=True)
def slurm_run_started(request, tmp_path_factory):
    """The cluster run of tests/test_slurm.py (:data:`SLURM_TARGET` of ``.test/config-tiny.yaml`` with
    ``config-slurm.yaml`` on a local single-node SLURM through profiles/slurm), started in the
    background as the session starts when a selected test uses it (fixture ``slurm_run``): it spends
    most of its time waiting between SLURM's status polls, which the other tests fill. Yields the
    reason instead where no test cluster can be started here, else (cluster, working directory, run)."""
    if not any("slurm_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    from slurm_cluster import LocalSlurm, why_not_available

    reason = why_not_available()
    if reason:
        yield reason
        return
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    lower_priority_to(CLUSTER_NICENESS)  # the cluster and its jobs yield to the tiny run (it has minutes to spare)
    cluster.start()
    workdir = tmp_path_factory.mktemp("cluster")
    run = BackgroundRun(workdir, SLURM_TARGET, "--profile", str(ROOT / "profiles/slurm"), *SLURM_OVERRIDES,
                        configfile=[config_path("tiny"), config_path("slurm")],
                        log=tmp_path_factory.getbasetemp() / "slurm-run.log", niceness=CLUSTER_NICENESS)
    yield cluster, workdir, run
    run.stop()
    cluster.cleanup()


#: CPU priorities (os.nice) below the tiny run's: the cluster run's, which ends minutes before the
#: tiny run does, the tests' own, and the runs of :data:`RUNS_STARTED_EARLY`, which are short and
#: only needed by the last tests.
CLUSTER_NICENESS, TESTS_NICENESS, EARLY_RUNS_NICENESS = 5, 10, 15


def lower_priority_to(niceness: int) -> None:
    """Lower this process's CPU priority to ``niceness`` (never raise it); what it starts later inherits it."""
    current = os.nice(0)
    if niceness > current:
        os.nice(niceness - current)


@pytest.fixture(scope="session", autouse=True)
def tests_yield_to_background_runs(tiny_run_started, slurm_run_started, background_runs_started):
    """Once the background runs have started, this process (and whatever it starts later) takes a
    lower CPU priority than they have: the tests that wait for them (run last) are the session's
    longest path, and the library tests fill the cores around them instead of slowing them down."""
    cluster = slurm_run_started is not None and not isinstance(slurm_run_started, str)
    if tiny_run_started is not None or cluster or background_runs_started:
        lower_priority_to(TESTS_NICENESS)
    yield


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory) -> Path:
    """A fake ILSVRC2012 tree (1,000 classes of empty files, as many as config/paper.yaml and
    paper-lite.yaml ask for: the config check counts them), made once per test session."""
    return fake_imagenet(tmp_path_factory.mktemp("ILSVRC2012"))


@pytest.fixture(scope="session")
def paper_dry_run(imagenet_root, tmp_path_factory):
    """``paper_dry_run(name)``: ``snakemake -n all`` for ``config/<name>`` on the fake ILSVRC2012 tree
    (the CompletedProcess), each dry run made once per session."""
    runs = {}

    def dry_run(name: str) -> subprocess.CompletedProcess:
        if name not in runs:
            runs[name] = snakemake(tmp_path_factory.mktemp("plan"), "-n", "all", "--quiet=rules", "--configfile",
                                   str(ROOT / "config" / name), "--config", f"data={{root: {imagenet_root}}}")
        return runs[name]

    return dry_run


@pytest.fixture(scope="session")
def paper_plan(paper_dry_run):
    """``paper_plan(name)``: the jobs per rule that ``snakemake -n all`` plans for ``config/<name>``
    on the fake ILSVRC2012 tree (:func:`workflow.job_counts` of :func:`paper_dry_run`)."""
    return lambda name: job_counts(paper_dry_run(name))
