"""Where a run's time goes: wall time and peak memory per stage, representation or job.

Every benchmarked rule writes one Snakemake benchmark file (the ``benchmark:`` directive) under
``<results>/benchmarks/<stage>/<representation>[/<job>].tsv``: ``features/fc6/train.tsv``,
``train/hog.tsv``, ``tables/errors.tsv``. Its header names the columns (``s``, ``h:m:s``,
``max_rss``, ``max_vms``, ``max_uss``, ``max_pss``, ``io_in``, ``io_out``, ``mean_load``,
``cpu_time``, and more with ``--benchmark-extended``); each row is one run of the job (more than one
with Snakemake's ``repeat()``). Memory columns are in MB, as Snakemake writes them; a value it
could not measure (a job shorter than its sampling interval) is ``-`` or ``NA``.

:func:`read_costs` reads every file into one :class:`JobCost`; :func:`summarise` adds them up by
stage (the first folder under ``benchmarks/``), by representation (the name after the stage: the
folder, or the file for ``<stage>/<name>.tsv``) or leaves them per job; :func:`costs_markdown`
renders that as a Markdown table sorted by wall time, with a total row. The summed wall time is
job-seconds: a run on several cores takes less wall-clock time than the sum of its jobs.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = ["GROUPINGS", "CostRow", "JobCost", "costs_markdown", "read_benchmark", "read_costs", "summarise"]

#: The ways :func:`summarise` groups jobs.
GROUPINGS = ("stage", "representation", "job")
_MISSING = {"", "-", "NA", "nan", "NaN", "None"}


@dataclass(frozen=True)
class JobCost:
    """One benchmarked job: its file under ``benchmarks/`` and what Snakemake measured."""

    job: str  #: the file's path under ``benchmarks/`` without ``.tsv``: ``features/fc6/train``
    seconds: float  #: wall time (mean of the file's rows)
    max_rss_mb: Optional[float]  #: peak resident memory over the rows (MB), None when never measured
    cpu_seconds: Optional[float]  #: CPU time (mean of the rows), None when never measured

    @property
    def stage(self) -> str:
        """The first folder under ``benchmarks/``: ``data``, ``features``, ``train``, ``evaluate`` …"""
        return self.job.split("/", 1)[0]

    @property
    def representation(self) -> str:
        """The name after the stage (``features/fc6/train`` → ``fc6``, ``train/hog`` → ``hog``,
        ``tables/errors`` → ``errors``); the stage itself for a file directly in ``benchmarks/``."""
        parts = self.job.split("/")
        return parts[1] if len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class CostRow:
    """Jobs added up under one key of a grouping."""

    key: str
    jobs: int
    seconds: float  #: summed wall time (job-seconds)
    cpu_seconds: Optional[float]  #: summed CPU time of the jobs that report one
    max_rss_mb: Optional[float]  #: the largest peak of any of the jobs
    stages: tuple  #: the stages the jobs belong to, in order of first appearance


def _number(value: Optional[str], path: Path, column: str) -> Optional[float]:
    if value is None or value.strip() in _MISSING:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{path}: column {column!r} holds {value!r}, not a number") from None


def read_benchmark(path: str | os.PathLike, job: str) -> JobCost:
    """One Snakemake benchmark file as a :class:`JobCost` named ``job``."""
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: no benchmark rows (a header and one row per run expected)")
    if "s" not in rows[0]:
        raise ValueError(f"{path}: no column 's' (wall seconds); is this a Snakemake benchmark file?")
    seconds = [_number(r["s"], path, "s") for r in rows]
    if any(s is None for s in seconds):
        raise ValueError(f"{path}: a row has no wall time in column 's'")
    rss = [v for v in (_number(r.get("max_rss"), path, "max_rss") for r in rows) if v is not None]
    cpu = [v for v in (_number(r.get("cpu_time"), path, "cpu_time") for r in rows) if v is not None]
    return JobCost(job=job, seconds=sum(seconds) / len(seconds), max_rss_mb=max(rss) if rss else None,
                   cpu_seconds=sum(cpu) / len(cpu) if cpu else None)


def read_costs(results: str | os.PathLike) -> List[JobCost]:
    """Every ``<results>/benchmarks/**/*.tsv`` as a :class:`JobCost`, in path order."""
    folder = Path(results) / "benchmarks"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (is {results} a results folder of a finished run?)")
    files = sorted(folder.rglob("*.tsv"))
    if not files:
        raise FileNotFoundError(f"{folder}: no benchmark files (*.tsv)")
    return [read_benchmark(p, p.relative_to(folder).with_suffix("").as_posix()) for p in files]


def _sum(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _max(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def summarise(costs: Sequence[JobCost], by: str = "stage") -> List[CostRow]:
    """The jobs added up per ``by`` (one of :data:`GROUPINGS`), the most expensive first (ties by key)."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}; expected one of {', '.join(GROUPINGS)}")
    groups: Dict[str, List[JobCost]] = {}
    for cost in costs:
        groups.setdefault(getattr(cost, by), []).append(cost)
    rows = [CostRow(key=key, jobs=len(group), seconds=sum(c.seconds for c in group),
                    cpu_seconds=_sum([c.cpu_seconds for c in group]), max_rss_mb=_max([c.max_rss_mb for c in group]),
                    stages=tuple(dict.fromkeys(c.stage for c in group)))
            for key, group in groups.items()]
    return sorted(rows, key=lambda r: (-r.seconds, r.key))


def _duration(seconds: float) -> str:
    """``75.3`` → ``1:15``; under a minute ``42.0 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _mb(value: Optional[float]) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.0f}"


def costs_markdown(costs: Sequence[JobCost], by: str = "stage") -> str:
    """A Markdown table of :func:`summarise`: jobs, wall seconds, share of the total, wall time as
    m:ss, CPU seconds, peak memory (and the stages a representation's jobs belong to), then the total."""
    rows = summarise(costs, by)
    total = sum(r.seconds for r in rows)
    show_stages = by == "representation"
    head = f"| {by} | jobs | wall s | share | wall | CPU s | peak RSS MB |" + (" stages |" if show_stages else "")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|" + ("---|" if show_stages else "")]
    for r in rows:
        share = 100 * r.seconds / total if total > 0 else 0.0
        cpu = "–" if r.cpu_seconds is None else f"{r.cpu_seconds:.1f}"
        line = (f"| {r.key} | {r.jobs} | {r.seconds:.1f} | {share:.1f} % | {_duration(r.seconds)} | {cpu} | "
                f"{_mb(r.max_rss_mb)} |")
        lines.append(line + (f" {', '.join(r.stages)} |" if show_stages else ""))
    cpu_total = _sum([r.cpu_seconds for r in rows])
    lines.append(f"| **total** | {sum(r.jobs for r in rows)} | {total:.1f} | 100.0 % | {_duration(total)} | "
                 f"{'–' if cpu_total is None else f'{cpu_total:.1f}'} | {_mb(_max([r.max_rss_mb for r in rows]))} |"
                 + (" |" if show_stages else ""))
    return "\n".join(lines) + "\n"
