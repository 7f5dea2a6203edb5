"""Helpers to run the real Snakefile in a temporary working directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def snakemake_command(workdir: Path, *args: str, configfile: Path | None = None) -> list[str]:
    """The command line that runs the project's Snakefile inside ``workdir``."""
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    command += list(args)  # targets first: several options take a list of values
    if configfile is not None:
        command.append(f"--configfile={configfile}")
    return command


def snakemake(workdir: Path, *args: str, configfile: Path | None = None, check: bool = True, timeout: int = 600):
    """Run ``snakemake`` on the project's Snakefile inside ``workdir``; return the CompletedProcess."""
    command = snakemake_command(workdir, *args, configfile=configfile)
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def planned_rules(workdir: Path, *args: str, configfile: Path | None = None) -> set[str]:
    """Rules a dry run would execute."""
    return set(planned_jobs(workdir, *args, configfile=configfile))


def planned_jobs(workdir: Path, *args: str, configfile: Path | None = None) -> dict[str, int]:
    """Jobs per rule a dry run would execute (parsed from the job-stats table of ``snakemake -n``)."""
    result = snakemake(workdir, "-n", *args, "--quiet=rules", configfile=configfile)
    text = result.stdout + result.stderr
    rules = {}
    in_table = False
    for line in text.splitlines():
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
    a dry run, whose config check counts the files of each class without decoding them."""
    for k in range(classes):
        wnid = f"n{k:08d}"
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{wnid}_{i}.JPEG").touch()
    return root
