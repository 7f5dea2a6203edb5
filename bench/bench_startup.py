"""Start-up cost of every workflow script: seconds from process start to its library call.

    python bench/bench_startup.py                          # every script, median of 5
    python bench/bench_startup.py --baseline ../main       # beside another checkout, runs interleaved
    python bench/bench_startup.py --jobs                   # × the default run's jobs (from a dry run)
    python bench/bench_startup.py --only tables_errors findings --repeats 9

Snakemake runs each script of ``workflow/scripts/`` (rule ``script:``) in a new Python process: its
wrapper unpickles the job's ``snakemake`` object (importing ``snakemake.iocontainers`` and
``snakemake.logging``), then the script imports what it needs, enters
:func:`preimage.logs.job` (log file, threads, GPU slot) and calls the library. For every script this
bench runs that much in a fresh ``python -c``: the wrapper's imports, the script's own import
statements (read from its source, those inside its ``with logs.job(...)`` block included) and
``logs.job`` on a stand-in ``snakemake`` object (one thread, no GPU), and times it from just before
the process starts to the line before the library call; ``exit s`` is the time from the end of
the job's block (where the library call would return) to the end of the process: the
interpreter's shutdown, which :func:`preimage.logs.job` shortens by freezing the heap. Reference rows: an empty interpreter, the
wrapper's imports alone, ``import torch``. Columns say whether torch and matplotlib were loaded by
then. ``--baseline`` times the scripts and library of another checkout (its ``workflow/scripts``
with its ``src`` on PYTHONPATH) in alternation with this one, so load from other processes hits
both alike; ``--jobs`` multiplies each script's time by its jobs in ``snakemake -n all`` (the
default configuration) for the start-up and exit seconds of a whole run.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
#: What Snakemake's script wrapper imports before the script's first line (snakemake.script).
WRAPPER = "import pickle\nfrom snakemake.logging import logger\nfrom snakemake.iocontainers import Snakemake\n"
PROBE = "import json, sys, time\n"
REPORT = ("print(json.dumps({'t': time.time(), 'torch': 'torch' in sys.modules, "
          "'matplotlib': 'matplotlib' in sys.modules}))\n")
REFERENCES = {"(python, nothing imported)": "", "(Snakemake's script wrapper)": WRAPPER,
              "(import torch)": WRAPPER + "import torch\n"}


def script_imports(path: Path) -> tuple:
    """(import lines before ``with logs.job``, import lines at the start of its block) of a script."""
    tree = ast.parse(path.read_text(), filename=str(path))
    outer, inner = [], []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            outer.append(ast.unparse(node))
        elif isinstance(node, ast.With):
            for stmt in node.body:
                if not isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    break
                inner.append(ast.unparse(stmt))
            break
    return outer, inner


def probe_code(path: Path, log_path: str, imports: Optional[tuple] = None) -> str:
    """The code one start-up of ``path`` runs, up to its library call, then a line of JSON;
    ``imports`` (outer, inner) replaces the script's own."""
    outer, inner = imports if imports is not None else script_imports(path)
    stand_in = (f"from types import SimpleNamespace\nsnakemake = SimpleNamespace(log=[{log_path!r}], output=[], "
                f"threads=1, resources=SimpleNamespace(gpu=0), rule={path.stem!r}, params=SimpleNamespace())\n")
    body = "".join(f"    {line}\n" for line in inner) + "    " + REPORT
    return PROBE + WRAPPER + stand_in + "".join(f"{line}\n" for line in outer) + "with logs.job(snakemake):\n" + body


def run_once(code: str, src: Path) -> dict:
    """Seconds from just before the process starts to the probe's report, and what it had loaded."""
    env = {**os.environ, "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.time()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    end = time.time()
    if result.returncode != 0:
        raise RuntimeError(f"start-up probe failed ({result.returncode}):\n{result.stderr[-2000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {"seconds": report["t"] - start, "exit": end - report["t"], "torch": report["torch"],
            "matplotlib": report["matplotlib"]}


def reference_code(imports: str) -> str:
    return PROBE + imports + REPORT


def measure(codes: Dict[str, Dict[str, str]], roots: Dict[str, Path], repeats: int) -> Dict[str, Dict[str, dict]]:
    """codes[name][root label] → median seconds and modules, runs interleaved across roots and names."""
    samples: Dict[str, Dict[str, List[dict]]] = {n: {r: [] for r in c} for n, c in codes.items()}
    for _ in range(repeats):
        for name, per_root in codes.items():
            for label, code in per_root.items():
                samples[name][label].append(run_once(code, roots[label] / "src"))
    return {name: {label: {"seconds": statistics.median(s["seconds"] for s in runs),
                           "exit": statistics.median(s["exit"] for s in runs),
                           "torch": runs[-1]["torch"], "matplotlib": runs[-1]["matplotlib"]}
                   for label, runs in per_root.items()} for name, per_root in samples.items()}


def rule_scripts(rules_dir: Path) -> Dict[str, str]:
    """rule name → script stem, from the rule files (``use rule A as B`` runs A's script)."""
    scripts, inherits = {}, {}
    for path in sorted(rules_dir.glob("*.smk")):
        current = None
        for line in path.read_text().splitlines():
            rule = re.match(r"\s*rule (\w+):", line)
            use = re.match(r"\s*use rule (\w+) as (\w+)", line)
            if rule:
                current = rule.group(1)
            elif use:
                inherits[use.group(2)], current = use.group(1), None
            script = re.search(r"workflow/scripts/(\w+)\.py", line)
            if script and current:
                scripts[current] = script.group(1)
    for name, parent in inherits.items():
        if parent in scripts:
            scripts[name] = scripts[parent]
    return scripts


def dry_run_jobs(root: Path) -> Counter:
    """Jobs per rule of ``snakemake -n all`` in ``root`` (its default configuration)."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all", "--quiet", "rules"], cwd=root,
                            capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(root / "src")})
    counts: Counter = Counter()
    for line in (result.stdout + result.stderr).splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match.group(1) not in ("all", "total"):
            counts[match.group(1)] = max(counts[match.group(1)], int(match.group(2)))
    if not counts:
        raise RuntimeError(f"no job counts in the dry run of {root}:\n{result.stderr[-2000:]}")
    return counts


def table(results, labels: List[str], script_jobs: Optional[Counter]) -> str:
    """Markdown: per script and checkout its seconds and what it loaded; the saving against the
    baseline; with job counts, the job-seconds of a whole run."""
    head, align = ["script"], ["---"]
    for label in labels:
        head += [f"{label} s", f"{label} exit s", "torch", "matplotlib"]
        align += ["---:", "---:", "---", "---"]
    if len(labels) == 2:
        head.append("saved s")
        align.append("---:")
    if script_jobs is not None:
        head += ["jobs"] + [f"{label} job-s" for label in labels]
        align += ["---:"] * (1 + len(labels))
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    totals = {label: 0.0 for label in labels}
    for name, per_root in results.items():
        reference = name.startswith("(")
        row = {label: per_root.get(label) for label in labels}
        cells = [name]
        for label in labels:
            r = row[label]
            cells += ["–", "", "", ""] if r is None else [f"{r['seconds']:.2f}", f"{r['exit']:.2f}",
                                                           "yes" if r["torch"] else "no",
                                                           "yes" if r["matplotlib"] else "no"]
        if len(labels) == 2:
            a, b = row[labels[0]], row[labels[1]]
            cells.append(f"{a['seconds'] + a['exit'] - b['seconds'] - b['exit']:.2f}" if a and b else "–")
        if script_jobs is not None:
            n = 0 if reference else script_jobs.get(name, 0)
            cells.append("" if reference else str(n))
            for label in labels:
                seconds = n * (row[label]["seconds"] + row[label]["exit"]) if row[label] else 0.0
                totals[label] += seconds
                cells.append("" if reference else f"{seconds:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    if script_jobs is not None:
        cells = ["**all jobs**"] + [""] * (4 * len(labels) + (len(labels) == 2))
        cells += [str(sum(n for name, n in script_jobs.items() if name in results))]
        cells += [f"**{totals[label]:.0f}**" for label in labels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="script names (stems) to measure (default: all)")
    parser.add_argument("--baseline", type=Path, help="another checkout to time beside this one")
    parser.add_argument("--jobs", action="store_true", help="weight by the jobs of this checkout's default dry run")
    args = parser.parse_args()
    roots = {"this": ROOT}
    if args.baseline is not None:
        roots = {"baseline": args.baseline.resolve(), "this": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        log_path = str(Path(tmp) / "job.log")
        codes: Dict[str, Dict[str, str]] = {name: {label: reference_code(imports) for label in roots}
                                            for name, imports in REFERENCES.items()}
        for path in sorted((ROOT / "workflow" / "scripts").glob("*.py")):
            if args.only and path.stem not in args.only:
                continue
            codes[path.stem] = {label: probe_code(root / "workflow" / "scripts" / path.name, log_path)
                                for label, root in roots.items()
                                if (root / "workflow" / "scripts" / path.name).exists()}
        results = measure(codes, roots, args.repeats)
    script_jobs = None
    if args.jobs:
        per_rule = dry_run_jobs(ROOT)
        scripts = rule_scripts(ROOT / "rules")
        script_jobs = Counter()
        for rule, n in per_rule.items():
            script_jobs[scripts.get(rule, f"({rule}: no script)")] += n
    print(f"start-up seconds to the library call, median of {args.repeats}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the end; " + ", ".join(f"{k} = {v}" for k, v in roots.items())
          + "\n")
    print(table(results, list(roots), script_jobs), end="")


if __name__ == "__main__":
    main()
