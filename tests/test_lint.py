"""The workflow passes Snakemake's linter (rule structure, logs, environments, paths) and is formatted
as snakefmt formats it."""
import subprocess
import sys

import pytest

from workflow import ENV, ROOT, run_snakemake


@pytest.mark.slow
def test_snakemake_lint_is_clean(tmp_path):
    result = run_snakemake(["--lint", "--directory", str(tmp_path)], cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


def test_rules_are_formatted_by_snakefmt():
    """Snakefile and rules/*.smk are as ``snakefmt .`` leaves them (settings in pyproject.toml)."""
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "left unchanged" in result.stdout + result.stderr  # it found the files, and they are formatted
