"""The stage-cost table of a run (preimage.run_costs, bench/run_costs.py) on a generated benchmarks tree,
and every rule of the workflow writes the benchmark file it reads."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from preimage.run_costs import costs_markdown, read_benchmark, read_costs, summarise

ROOT = Path(__file__).resolve().parents[1]
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
#: job → rows of (wall s, max_rss MB, cpu s); "-" is what Snakemake writes for a value it did not measure
JOBS = {
    "data/extract": [(10.0, 1200.0, 4.0)],
    "features/fc6/train": [(20.0, 900.0, 15.0)],
    "features/fc6/test": [(5.0, 950.0, 3.0)],
    "features/hog/train": [(3.0, "-", "-")],
    "train/fc6": [(60.0, 1500.0, 100.0)],
    "train/hog": [(40.0, 700.0, 70.0), (50.0, 800.0, 80.0)],  # repeat(): two runs of one job
    "evaluate/fc6": [(7.0, 600.0, 5.0)],
    "tables/errors": [(1.5, 150.0, 1.0)],
    "findings": [(1.0, 140.0, 0.5)],
}


def _write_tree(results: Path) -> Path:
    for job, rows in JOBS.items():
        path = results / "benchmarks" / f"{job}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{s}\t0:00:{int(s):02d}\t{rss}\t2000.0\t500.0\t600.0\t0.1\t0.2\t50.0\t{cpu}\n" for s, rss, cpu in rows]
        path.write_text(HEADER + "".join(lines))
    return results


@pytest.fixture
def results(tmp_path):
    return _write_tree(tmp_path / "results")


def test_read_costs_one_per_file(results):
    costs = {c.job: c for c in read_costs(results)}
    assert set(costs) == set(JOBS)
    hog = costs["train/hog"]
    assert hog.seconds == pytest.approx(45.0) and hog.cpu_seconds == pytest.approx(75.0)  # mean of the repeats
    assert hog.max_rss_mb == 800.0  # the peak over the repeats
    unmeasured = costs["features/hog/train"]
    assert unmeasured.max_rss_mb is None and unmeasured.cpu_seconds is None and unmeasured.seconds == 3.0
    assert (costs["features/fc6/train"].stage, costs["features/fc6/train"].representation) == ("features", "fc6")
    assert (costs["train/fc6"].stage, costs["train/fc6"].representation) == ("train", "fc6")
    assert (costs["findings"].stage, costs["findings"].representation) == ("findings", "findings")


def test_summarise_by_stage_sorted_with_sums_and_peaks(results):
    rows = summarise(read_costs(results), "stage")
    assert [r.key for r in rows] == ["train", "features", "data", "evaluate", "tables", "findings"]
    by = {r.key: r for r in rows}
    assert by["train"].jobs == 2 and by["train"].seconds == pytest.approx(105.0)
    assert by["train"].cpu_seconds == pytest.approx(175.0) and by["train"].max_rss_mb == 1500.0
    assert by["features"].jobs == 3 and by["features"].seconds == pytest.approx(28.0)
    assert by["features"].cpu_seconds == pytest.approx(18.0)  # the unmeasured job adds nothing
    assert by["features"].max_rss_mb == 950.0


def test_summarise_by_representation_and_job(results):
    costs = read_costs(results)
    by = {r.key: r for r in summarise(costs, "representation")}
    assert by["fc6"].jobs == 4 and by["fc6"].seconds == pytest.approx(92.0)
    assert by["fc6"].stages == ("evaluate", "features", "train")
    assert by["hog"].seconds == pytest.approx(48.0) and by["hog"].max_rss_mb == 800.0
    assert by["extract"].stages == ("data",)
    jobs = summarise(costs, "job")
    assert len(jobs) == len(JOBS) and jobs[0].key == "train/fc6" and jobs[-1].key == "findings"
    with pytest.raises(ValueError, match="unknown grouping 'rule'"):
        summarise(costs, "rule")


def test_markdown_has_every_row_and_the_total(results):
    costs = read_costs(results)
    table = costs_markdown(costs, "stage").splitlines()
    assert table[0].startswith("| stage | jobs | wall s | share |")
    body = [line.split(" | ") for line in table[2:]]
    assert [cells[0].lstrip("| ") for cells in body] == ["train", "features", "data", "evaluate", "tables", "findings",
                                                         "**total**"]
    total = body[-1]
    assert total[1:3] == ["9", "152.5"] and total[3] == "100.0 %" and total[4] == "2:32"
    assert total[5] == "203.5" and total[6].startswith("1,500")
    assert body[0][3] == "68.9 %"  # 105 of 152.5 s
    rep_table = costs_markdown(costs, "representation")
    assert "| fc6 | 4 | 92.0 |" in rep_table and "evaluate, features, train |" in rep_table
    unmeasured = costs_markdown([c for c in costs if c.job == "features/hog/train"], "job")
    assert "| features/hog/train | 1 | 3.0 | 100.0 % | 3.0 s | – | – |" in unmeasured


def test_bad_input_is_named(tmp_path, results):
    with pytest.raises(FileNotFoundError, match="benchmarks: no such folder"):
        read_costs(tmp_path / "nowhere")
    (tmp_path / "empty" / "benchmarks").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no benchmark files"):
        read_costs(tmp_path / "empty")
    bad = results / "benchmarks" / "train" / "bad.tsv"
    bad.write_text(HEADER + "soon\t0\t1\t1\t1\t1\t1\t1\t1\t1\n")
    with pytest.raises(ValueError, match=r"bad.tsv: column 's' holds 'soon'"):
        read_benchmark(bad, "train/bad")
    bad.write_text(HEADER)
    with pytest.raises(ValueError, match="bad.tsv: no benchmark rows"):
        read_benchmark(bad, "train/bad")


def test_cli_prints_stage_and_representation_tables(results):
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "run_costs.py"), str(results)], capture_output=True,
                         text=True, check=True)
    assert "9 benchmarked jobs" in run.stdout and "| stage | jobs |" in run.stdout
    assert "| representation | jobs |" in run.stdout and run.stdout.count("| **total** | 9 | 152.5 |") == 2
    only_jobs = subprocess.run([sys.executable, str(ROOT / "bench" / "run_costs.py"), str(results), "--by", "job"],
                               capture_output=True, text=True, check=True)
    assert "| job | jobs |" in only_jobs.stdout and "| stage |" not in only_jobs.stdout
    missing = subprocess.run([sys.executable, str(ROOT / "bench" / "run_costs.py"), str(results / "nowhere")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "no such folder" in missing.stderr


#: Rules that write no benchmark, and why: feature_recipe writes a store's attributes only (no work).
UNBENCHMARKED = {"feature_recipe"}


def rule_benchmarks(text: str) -> dict:
    """rule name → whether its block declares ``benchmark:`` (``use rule A as B`` inherits A's)."""
    lines = text.splitlines()
    found, inherits = {}, {}
    for k, line in enumerate(lines):
        use = re.match(r"(\s*)use rule (\w+) as (\w+)", line)
        rule = re.match(r"(\s*)rule (\w+):", line)
        if use:
            inherits[use.group(3)] = use.group(2)
        if not rule:
            continue
        indent, has = len(rule.group(1)), False
        for body in lines[k + 1:]:
            stripped = body.strip()
            if stripped and not stripped.startswith("#") and len(body) - len(body.lstrip()) <= indent:
                break
            has = has or stripped == "benchmark:"
        found[rule.group(2)] = has
    for name, parent in inherits.items():
        found[name] = found.get(parent, False)
    return found


def test_every_rule_writes_a_benchmark():
    found = {}
    for path in sorted((ROOT / "rules").glob("*.smk")):
        found.update(rule_benchmarks(path.read_text()))
    assert {"train", "errors_table", "findings", "reconstructions_png", "perturbation"} <= set(found)
    missing = sorted(name for name, has in found.items() if not has and name not in UNBENCHMARKED)
    assert not missing, f"rules without benchmark: (run_costs cannot see their time): {missing}"
