"""Every `snakemake …` command the README, config/README.md and docs/ show works as written: each is
dry-run from the repository root (with a fake ILSVRC2012 tree standing in for /data/ILSVRC2012 and
a folder of empty photograph files for /path/to/photos)."""
import re
import shlex

import pytest

from workflow import ROOT, run_snakemake

DOCUMENTS = [ROOT / "README.md", ROOT / "config" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Commands that need a finished run, tested where one exists (tests/test_workflow.py: the report).
NEEDS_A_RUN = ("--report",)


def documented_commands():
    """(documents, command) for every snakemake command in a code block or an inline code span; a
    command shown in several places is dry-run once (documents names them all)."""
    found = {}
    for doc in DOCUMENTS:
        text = doc.read_text()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        lines = [line.strip() for block in blocks for line in block.splitlines()]
        lines += re.findall(r"`([^`\n]*snakemake [^`\n]*)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for line in lines:
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("snakemake"):
                    found.setdefault(part, []).append(doc.name)
    return [(", ".join(dict.fromkeys(docs)), command) for command, docs in found.items()]


COMMANDS = documented_commands()


def test_the_documents_show_commands():
    assert len(COMMANDS) >= 5, COMMANDS
    assert any("config/paper.yaml" in c for _, c in COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("doc, command", COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_command_dry_runs(doc, command, imagenet_root, tmp_path):
    if any(flag in command for flag in NEEDS_A_RUN):
        pytest.skip("needs a finished run: tests/test_workflow.py builds the report")
    photos = tmp_path / "photos"  # a flat folder: config/photos.yaml tests 250 and trains on the rest
    photos.mkdir()
    for i in range(300):
        (photos / f"photo{i:03d}.jpg").touch()
    command = command.replace("/data/ILSVRC2012", str(imagenet_root)).replace("/path/to/photos", str(photos))
    words = shlex.split(command)
    assert words[0] == "snakemake"
    # -n and --directory go first: options that take lists (--config) must keep their own words
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = run_snakemake(["-n", "--directory", str(workdir), *words[1:]], cwd=ROOT)
    assert result.returncode == 0, f"{doc}: {command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
