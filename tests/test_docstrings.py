"""Public functions and methods of the library with more than six parameters document each of them
in a numpydoc ``Parameters`` section (for a class's ``__init__``: in the class's docstring or its
own). Found by reading the source (nothing is imported)."""
import ast
import re
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "src" / "preimage"
MAX_UNDOCUMENTED = 6


def _parameters(function: ast.FunctionDef, method: bool) -> list:
    args = function.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    if method and names and names[0] in ("self", "cls"):
        names = names[1:]
    return names


def _public(name: str) -> bool:
    return not name.startswith("_")


def wide_functions():
    """(id, function node, docstrings to search) for every public function, method and public
    class's ``__init__`` with more than MAX_UNDOCUMENTED parameters."""
    found = []
    for path in sorted(LIBRARY.rglob("*.py")):
        module = path.relative_to(LIBRARY.parent).with_suffix("").as_posix().replace("/", ".")
        if any(part.startswith("_") and part != "__init__" for part in module.split(".")):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
                found.append((f"{module}.{node.name}", node, [ast.get_docstring(node)]))
            elif isinstance(node, ast.ClassDef) and _public(node.name):
                for member in node.body:
                    if not isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        continue
                    if member.name == "__init__":
                        docs = [ast.get_docstring(node), ast.get_docstring(member)]
                    elif _public(member.name):
                        docs = [ast.get_docstring(member)]
                    else:
                        continue
                    found.append((f"{module}.{node.name}.{member.name}", member, docs))
    return [(name, node, docs) for name, node, docs in found if len(_parameters(node, True)) > MAX_UNDOCUMENTED]


def documented_parameters(docstring: str) -> set:
    """Names listed in the numpydoc ``Parameters`` section of a docstring (``name : type`` or
    ``a, b : type`` lines at the section's indentation)."""
    lines = (docstring or "").splitlines()
    names = set()
    for i, line in enumerate(lines[:-1]):
        if line.strip() == "Parameters" and re.fullmatch(r"\s*-{3,}\s*", lines[i + 1]):
            indent = len(line) - len(line.lstrip())
            for entry in lines[i + 2:]:
                if not entry.strip():
                    continue
                depth = len(entry) - len(entry.lstrip())
                if depth < indent:
                    break
                if depth == indent:
                    if re.fullmatch(r"\s*-{3,}\s*", entry):  # the underline of the next section
                        names.discard(previous)
                        break
                    previous = entry.strip()
                    head = entry.split(" : ", 1)[0]
                    names.update(n.strip().lstrip("*") for n in head.split(","))
            break
    return names


WIDE = wide_functions()


def test_the_library_has_wide_functions():
    """The scan finds them (so the test below is not vacuous)."""
    assert len(WIDE) >= 10, [name for name, _, _ in WIDE]


@pytest.mark.parametrize("name, node, docs", WIDE, ids=[name for name, _, _ in WIDE])
def test_every_parameter_is_documented(name, node, docs):
    documented = set().union(*(documented_parameters(doc) for doc in docs))
    missing = [p for p in _parameters(node, True) if p not in documented]
    assert not missing, f"{name}: no numpydoc 'Parameters' entry for {', '.join(missing)}"


def test_the_parameters_section_is_read_as_numpydoc():
    doc = """Do it.

    Parameters
    ----------
    images, features : str
        Paths.
    steps : int, default 8
        How many.
    **options
        Passed on.

    Returns
    -------
    int
    """
    assert documented_parameters(doc) == {"images", "features", "steps", "options"}
    assert documented_parameters("Do it.\n\nsteps : int\n    How many.") == set()
