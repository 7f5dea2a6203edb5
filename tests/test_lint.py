"""The workflow passes Snakemake's linter (rule structure, logs, environments, paths)."""
import pytest

from workflow import ROOT, run_snakemake


@pytest.mark.slow
def test_snakemake_lint_is_clean(tmp_path):
    result = run_snakemake(["--lint", "--directory", str(tmp_path)], cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr
