"""The workflow passes Snakemake's linter (rule structure, logs, environments, paths)."""
import subprocess
import sys

import pytest

from workflow import ENV, ROOT


@pytest.mark.slow
def test_snakemake_lint_is_clean(tmp_path):
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--directory", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr
