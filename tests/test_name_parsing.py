"""Representation names are read in one place: :mod:`preimage.features` and the naming functions
of :mod:`preimage.representations`. Every other library module asks them (slug, variant, node
label, families, prefixes) and reads no private registry; this test scans the sources for the
patterns that parse a name by hand."""
import ast
from pathlib import Path

import pytest

from preimage.features import families, known_names, name_problem, prefixes
from preimage.representations import VARIANTS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "preimage"
#: Where names may be parsed: the representations themselves and the catalog's naming functions.
OWNERS = ("features/", "representations.py")
#: Splits on these separate a representation name's parts (``torchvision:<model>:<node>``,
#: ``<model>@<node>``, ``fc6-ae``).
SEPARATORS = (":", "@", "-")
#: Calls that split a string on ``:`` but read no representation name, with what they read.
NOT_REPRESENTATIONS = {
    ("config.py", "value.split(':', 1)"): "a device key, cuda:1",
    ("data.py", "spec.partition(':')"): "a packaged photograph, skimage:astronaut.png",
    ("invert.py", "name.partition(':')"): "a packaged image, skimage:astronaut",
    ("weights.py", "spec.split(':', 1)"): "an archive member, file.zip:member",
}


def _literals(node):
    """The string constants of a call argument (one, or a tuple of them); of an f-string, its
    leading constant part (``f"-{variant}"`` → ``-``)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List)) else [node]
    found = []
    for item in items:
        if isinstance(item, ast.JoinedStr) and item.values and isinstance(item.values[0], ast.Constant):
            item = item.values[0]
        if isinstance(item, ast.Constant) and isinstance(item.value, str):
            found.append(item.value)
    return found


def _names_a_representation(text: str) -> bool:
    """Whether a string compared against the start or end of a name is part of a representation
    name: a variant suffix (``-ae``), a family or prefix (``torchvision:``), a registered name or
    the start of one (``fc`` of ``fc6``)."""
    words = set(known_names()) | set(families()) | set(prefixes())
    if text == "-" or any(text == f"-{variant}" for variant in VARIANTS):
        return True
    stem = text.rstrip(":@")
    return bool(stem) and (stem in words or any(w.startswith(stem) for w in known_names()))


def offences(source: str, filename: str = "<source>"):
    """(line, code, why) of every place in ``source`` that parses a representation name by hand or
    reads a private registry of :mod:`preimage.features`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id.endswith("_REGISTRY") or (
                isinstance(node, ast.Attribute) and node.attr.endswith("_REGISTRY")):
            found.append((node.lineno, ast.unparse(node), "reads a private registry"))
        elif isinstance(node, ast.ImportFrom) and any(a.name.endswith("_REGISTRY") for a in node.names):
            found.append((node.lineno, ast.unparse(node), "imports a private registry"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            method, code = node.func.attr, ast.unparse(node)
            if (Path(filename).name, code) in NOT_REPRESENTATIONS:
                continue
            literals = _literals(node.args[0])
            if method in ("split", "rsplit", "partition", "rpartition") and set(literals) & set(SEPARATORS):
                found.append((node.lineno, code, "splits a name"))
            elif method in ("startswith", "endswith") and any(_names_a_representation(t) for t in literals):
                found.append((node.lineno, code, "matches part of a name"))
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if not relative.startswith(OWNERS):
            yield relative, path


def test_no_module_outside_features_and_the_catalog_parses_a_representation_name():
    found = [f"{relative}:{line}: {code} ({why})" for relative, path in _modules()
             for line, code, why in offences(path.read_text(), relative)]
    assert not found, ("ask preimage.representations (split_variant, variant_of, name_of_slug, node_label) or "
                       "preimage.features (lookup, families, prefixes, name_problem) instead:\n" + "\n".join(found))


def test_the_scan_covers_the_library():
    scanned = {relative for relative, _ in _modules()}
    assert {"config.py", "figures.py", "findings.py", "plan.py"} <= scanned
    assert not any(r.startswith("features/") for r in scanned) and "representations.py" not in scanned


@pytest.mark.parametrize("code", [
    'str(name).rsplit("-", 1)[-1] in LOSS_VARIANTS',
    'name.endswith(("-ae", "-random", "-feature", "-gan"))',
    'name.endswith("-random")',
    'key.endswith(f"-{variant}")',
    'family = name.split(":", 1)[0]',
    'head, node = key.split("@", 1)',
    'name.startswith(("torchvision:", "efficientnet_lite0:"))',
    's.startswith("fc")',
    '[l.split(":")[-1] for l in layers]',
    'base._REGISTRY.values()',
    'head in base._PREFIX_REGISTRY',
    'from preimage.features.base import _REGISTRY',
])
def test_the_scan_finds_hand_parsed_names(code):
    assert offences(code), code


@pytest.mark.parametrize("code", ['path.endswith(".h5")', 'text.split("\\n")', 'device.startswith("cuda")',
                                  'index, count = name.split("-of-")'])
def test_the_scan_leaves_other_strings_alone(code):
    assert not offences(code), code


def test_families_prefixes_and_name_problems_come_from_the_registry():
    assert {"alexnet", "hog", "sift", "lbp", "torchvision", "efficientnet_lite0"} <= set(families())
    assert prefixes() == ["efficientnet_lite0", "timm", "torchvision"]
    assert "fc6" in known_names() and "torchvision" not in known_names()
    assert name_problem("fc6") is None and name_problem("efficientnet_lite0:stages.3") is None
    assert "unknown representation" in name_problem("fc9")
    assert "efficientnet_lite0:<node>" in name_problem("efficientnet_lite0:a:b")
