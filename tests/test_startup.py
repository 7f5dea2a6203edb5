"""Jobs that only write tables, figures and findings start without loading torch, a job's threads
still reach torch when a later import loads it, and reading the Snakefile loads no torch."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_startup import probe_code, script_imports  # noqa: E402
from workflow import config_dict, merged  # noqa: E402

#: The scripts whose jobs need no torch before their library call (figures of finished results,
#: tables, findings, the data stage); loss_comparison loads it inside the call, for the sharpness.
TORCH_FREE = ["data_extract", "data_join", "figures_error_by_layer", "figures_interpolation",
              "figures_loss_comparison", "figures_mahendran_vedaldi_samples", "figures_reconstructions", "figures_reconstructions_group", "findings",
              "tables_concat", "tables_errors", "tables_mahendran_vedaldi"]


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_small_jobs_start_without_torch(tmp_path):
    scripts = ROOT / "workflow" / "scripts"
    outer, inner = zip(*(script_imports(scripts / f"{name}.py") for name in TORCH_FREE))
    outer, inner = sorted({line for lines in outer for line in lines}), sorted({line for lines in inner for line in lines})
    assert outer == ["from preimage import logs"]
    assert "from preimage import figures" in inner and "from preimage import tables" in inner
    # one process: the set-up of such a job (logs.job) and the imports of all of them
    out = _run(probe_code(scripts / "findings.py", str(tmp_path / "job.log"), imports=(outer, inner)))
    assert '"torch": false' in out, f"torch was loaded by the imports {inner}"
    assert "torch_threads=1" in (tmp_path / "job.log").read_text()  # the threads torch will take


def test_threads_reach_a_later_torch_import():
    out = _run("import os\nfrom preimage import devices\nos.environ.pop('OMP_NUM_THREADS', None)\n"
               "devices.configure_threads(1)\nassert os.environ['OMP_NUM_THREADS'] == '1'\n"
               "import torch\nprint(torch.get_num_threads())\n"
               "devices.configure_threads(2)\nprint(torch.get_num_threads())\n")
    assert out.split() == ["1", "2"]


def test_representations_and_devices_import_without_torch():
    out = _run("import sys\nfrom preimage import devices, findings, representations\n"
               "print(representations.ALEXNET_LAYERS[0], representations.ALEXNET_LAYERS[-1], 'torch' in sys.modules)\n")
    assert out.split() == ["conv1", "fc8", "False"]


def test_reading_the_snakefile_loads_no_torch():
    """What every Snakemake process does with the configuration (rules/common.smk: the check, then
    the plan) loads no torch for the default, nor for the tests' tiny configuration with the checks
    a cluster job runs (deep=False: its node names were checked by the main process). The tiny
    configuration's every family of representations is asked what it is (family, nodes,
    differentiability, cells) without importing torch."""
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    tiny = merged(default, config_dict("tiny"))
    checks = json.dumps([[default, True], [tiny, False]])
    out = _run("import json, sys\nfrom preimage.config import validate_config\nfrom preimage.plan import Plan\n"
               f"for config, deep in json.loads({checks!r}):\n"
               "    plan = Plan(validate_config(config, deep=deep, devices=deep))\n"
               "    print(len(plan.catalog.slugs), 'torch' in sys.modules)\n")
    (default_specs, default_torch), (tiny_specs, tiny_torch) = (line.split() for line in out.splitlines())
    assert int(tiny_specs) > int(default_specs) > 10
    assert (default_torch, tiny_torch) == ("False", "False")
