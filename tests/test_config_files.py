"""The shipped configurations stand on their own: `config/paper.yaml` and `paper-lite.yaml` mean the
same merged over the embedded default (as `--configfile` merges them) as they mean alone, and no
dry run of theirs or of `config/photos.yaml` notes a setting that names a representation it does
not run."""
import copy
import subprocess
import sys

import pytest
import yaml
from snakemake.utils import update_config

from preimage.config import validate_config
from workflow import ENV, ROOT

PAPER_CONFIGS = ["paper.yaml", "paper-lite.yaml"]
#: network families a configuration may leave unused: their settings in the embedded default are idle
OPTIONAL_FAMILIES = ("efficientnet_lite0", "torchvision")


def _leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, prefix + (str(key),))
        else:
            yield prefix + (str(key),), value


def _names_an_unused_family(path, representations) -> bool:
    """Whether a dotted path names a network family (or one of its nodes) that no representation of
    the configuration belongs to (``features.efficientnet_lite0.crop``, ``train.epochs.efficientnet_lite0:pool-gan``)."""
    for part in path:
        family = part.split(":", 1)[0]
        if family in OPTIONAL_FAMILIES and not any(r.split(":", 1)[0] == family for r in representations):
            return True
    return False


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configuration_means_the_same_over_the_embedded_default(name, tmp_path):
    own = yaml.safe_load((ROOT / "config" / name).read_text())
    own["data"]["root"] = str(tmp_path)  # the checks want an existing folder; nothing is listed here
    merged = copy.deepcopy(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    update_config(merged, own)
    alone, over_default = dict(_leaves(validate_config(own))), dict(_leaves(validate_config(merged)))
    representations = own["representations"]
    inherited = {".".join(path): (over_default.get(path), alone.get(path))
                 for path in alone.keys() | over_default.keys()
                 if over_default.get(path) != alone.get(path) and not _names_an_unused_family(path, representations)}
    assert not inherited, f"config/{name} takes these from config/config.yaml (over default, alone): {inherited}"


def _skip_notes(result: subprocess.CompletedProcess) -> list:
    return [line for line in (result.stdout + result.stderr).splitlines()
            if "preimage: note:" in line and "skips" in line]


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configuration_dry_run_skips_nothing(name, paper_dry_run):
    result = paper_dry_run(name)
    assert "Job stats" in result.stdout + result.stderr  # the dry run planned jobs
    assert not _skip_notes(result)


@pytest.mark.slow
def test_photos_configuration_dry_run_skips_nothing(tmp_path):
    photos = tmp_path / "photos"  # a flat folder: config/photos.yaml tests 250 and trains on the rest
    photos.mkdir()
    for i in range(300):
        (photos / f"photo{i:03d}.jpg").touch()
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "all", "--quiet=rules", "--directory", str(workdir),
         "--configfile", str(ROOT / "config" / "photos.yaml"), "--config", f"data={{root: {photos}}}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Job stats" in result.stdout + result.stderr
    assert not _skip_notes(result)
