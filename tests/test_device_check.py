"""The one-command device check (bench/device_check.sh) in its quick mode: every row, with numbers."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import device_check  # noqa: E402


def test_finds_the_cuda_only_tests():
    ids = device_check.cuda_tests(ROOT)
    assert "tests/test_hog.py::test_cuda_matches_cpu" in ids and "tests/test_lbp.py::test_cuda_matches_cpu" in ids
    assert not any("test_device_check" in i for i in ids)
    # skips where CUDA is present: a check of the refusal without a GPU, not a CUDA test
    assert "tests/test_config_checks.py::test_dry_run_refuses_cuda_without_a_gpu_unless_the_jobs_run_on_a_cluster" \
        not in ids


def test_finds_cuda_markers_on_classes_and_modules(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "import pytest, torch\n"
        "pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA')\n"
        "def test_one():\n    pass\n")
    (tmp_path / "tests" / "test_b.py").write_text(
        "import pytest, torch\n"
        "@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA')\n"
        "class TestGpu:\n    def test_two(self):\n        pass\n"
        "def test_cpu():\n    pass\n"
        "@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only path')\n"
        "def test_without_a_gpu():\n    pass\n")
    assert device_check.cuda_tests(tmp_path) == ["tests/test_a.py::test_one", "tests/test_b.py::TestGpu::test_two"]


def _rows(table: str) -> list:
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| check | configuration | result | value | unit | TFLOP/s | × estimate 10 / 40")
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


@pytest.mark.slow
def test_quick_check_reports_every_row_with_numbers(tmp_path):
    output = tmp_path / "check.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", str(ROOT / "bench" / "device_check.sh"), "--quick", "--threads", "1", "--output",
                          str(output), "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    device = "cuda" if torch.cuda.is_available() else "cpu"
    first = run.stdout.splitlines()[0]
    assert f"measured on {device}" in first
    if device == "cpu":
        assert "CPU only (no CUDA device visible)" in first and "not a GPU's" in first
    assert output.read_text().split("\n\n", 1)[1] in run.stdout  # the file holds the printed table
    rows = _rows(run.stdout)
    by_check = {}
    for check, configuration, result, value, unit, tflops, ratio in rows:
        by_check.setdefault(check, []).append((configuration, result, float(value), unit, tflops, ratio))
    assert set(by_check) == {"cuda test", "decoder", "extraction", "gan step", "streaming"}
    tests = {c: r for c, r, *_ in by_check["cuda test"]}
    assert set(tests) == set(device_check.cuda_tests(ROOT))
    assert all(r == "passed" or (device == "cpu" and r.startswith("skipped")) for r in tests.values()), tests
    expected = {(rep, precision, layout) for rep in device_check.PAPER_DECODERS for precision in device_check.PRECISIONS
                for layout in device_check.LAYOUTS}
    found = {(c.split(" ")[0], c.split(", ")[-2], c.split(", ")[-1]) for c, *_ in by_check["decoder"]}
    assert found == expected
    assert [c.split(" ")[0] for c, *_ in by_check["extraction"]] == ["AlexNet", "EfficientNet-Lite0"]
    assert [c.split(", ")[1] for c, *_ in by_check["gan step"]] == [f"{k} loss" for k in device_check.GAN_LOSSES]
    assert len(by_check["streaming"]) == 1 and by_check["streaming"][0][5].endswith("of the HOG decoder's demand")
    for check in ("decoder", "extraction", "gan step", "streaming"):
        for configuration, result, value, unit, tflops, ratio in by_check[check]:
            assert result == "ok" and math.isfinite(value) and value > 0, (check, configuration, result)
            assert unit in ("img/s", "pairs/s")
            if check != "streaming":
                assert float(tflops) > 0 and all(float(r.rstrip("×")) > 0 for r in ratio.split(" / "))
    assert f"{len(rows)} rows in" in run.stdout


def test_exit_status_is_1_when_a_section_fails_and_the_workdir_is_made(monkeypatch, tmp_path, capsys):
    ok = lambda check: [device_check.Row(check, "stand-in", "ok", 1.0, "img/s")]  # noqa: E731
    monkeypatch.setattr(device_check, "cuda_tests", lambda *a: [])
    monkeypatch.setattr(device_check, "run_cuda_tests", lambda ids, timeout_s: ok("cuda test"))
    monkeypatch.setattr(device_check, "decoder_rows", lambda *a: ok("decoder"))
    monkeypatch.setattr(device_check, "extraction_rows", lambda *a: ok("extraction"))
    monkeypatch.setattr(device_check, "streaming_row", lambda *a: ok("streaming")[0])

    def broken(*args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(device_check, "gan_rows", broken)
    workdir = tmp_path / "not" / "there"
    assert device_check.main(["--quick", "--device", "cpu", "--workdir", str(workdir)]) == 1
    assert workdir.is_dir()
    rows = _rows(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["cuda test", "decoder", "extraction", "gan step", "streaming"]
    assert rows[3][2] == "error: RuntimeError: out of memory" and all(r[2] == "ok" for i, r in enumerate(rows) if i != 3)

    monkeypatch.setattr(device_check, "gan_rows", lambda *a: ok("gan step"))
    assert device_check.main(["--quick", "--device", "cpu"]) == 0
