"""Packaging: environment.yml and pyproject.toml list the same dependencies, and an installed
(non-editable) package carries what it needs at run time."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pip_section(env):
    for entry in env["dependencies"]:
        if isinstance(entry, dict) and "pip" in entry:
            return entry["pip"]
    raise AssertionError("environment.yml has no pip section")


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = {line for line in _pip_section(env) if not line.startswith("-")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject.toml: {wanted - listed}"


def test_environment_installs_the_package_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "-e ." in _pip_section(env)


def _source_copy(destination: Path) -> Path:
    """The files a build reads (pyproject.toml, README.md, src/), copied so that the build leaves
    nothing in the checkout and no stale ``build/`` folder of an earlier build can slip in."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, destination / name)
    shutil.copytree(ROOT / "src", destination / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return destination


VALIDATE_FROM_OUTSIDE = """
import json, sys
import yaml
import preimage
from preimage.config import ConfigError, validate_config

config = yaml.safe_load(open(sys.argv[1]))
valid = validate_config(config)
try:
    validate_config({**config, "data": {**config["data"], "size": "large"}})
    refused = ""
except ConfigError as err:
    refused = str(err)
print(json.dumps({"module": preimage.__file__, "valid": valid, "refused": refused}))
"""


@pytest.mark.slow
def test_installed_package_validates_a_configuration_outside_the_source_tree(tmp_path):
    """A non-editable install (no network, no build isolation) into a fresh virtual environment
    carries the configuration schema: run from a folder outside the checkout, with no PYTHONPATH,
    it imports its own copy of preimage, fills the schema's defaults into the embedded default
    and refuses a wrong type naming the key."""
    venv = tmp_path / "venv"
    # --without-pip: the environment's pip, setuptools and wheel are the system's, which can build
    # offline; a venv's own bundled pip would bring a setuptools without bdist_wheel.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         str(_source_copy(tmp_path / "source"))],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    config = outside / "config.yaml"
    shutil.copy(ROOT / "config" / "config.yaml", config)
    run = subprocess.run([str(python), "-c", VALIDATE_FROM_OUTSIDE, str(config)],
                         cwd=outside, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(answer["module"]).resolve().is_relative_to(venv.resolve())
    valid = answer["valid"]
    assert valid["data"]["size"] == 64                  # from the file
    assert valid["results"] == "results"                # a default from the schema
    assert "train" in valid and "evaluate" in valid     # sections the file does not name, filled in
    assert "data.size" in answer["refused"]
