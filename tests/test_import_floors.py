"""The package's imports form no circle and no stage leans on a later one, imports inside functions
included (``bench/import_floors.py`` builds the graph and prints every module's floor).

The allowed layering of the stages, lowest first (:data:`STAGE_FLOORS`):

1. ``data``: the image stores;
2. ``features.cache``: the feature caches, computed from the image stores;
3. ``train``: decoders trained on the caches;
4. the stages that use a trained decoder or the optimisation, each standing beside the others:
   ``evaluate``, ``analyses``, ``baselines``, ``scaling``, ``invert``;
5. ``locality``: Mahendran & Vedaldi's locality experiment, which runs the optimisation of
   ``baselines``; ``scorecard``: every inversion method scored on the same test images, which
   decodes with ``evaluate``'s nearest neighbour and mean image;
6. the reports, which read the files the stages wrote: ``tables``, ``figures``, ``findings``.

A stage may reach (directly or through any chain of modules) only stages on lower floors: never
one on its own floor (stages beside each other stay independent) or above. The reports reach no
stage at all. The toolkit (every other module but the entry points ``cli`` and ``__main__``: the
stores' I/O, the representations, decoders, metrics, plotting, objectives, config …) may reach the
stores of floors 1-2 (``decoding`` reads feature caches, ``config`` checks the photographs a data
source holds) and nothing above them: no stage needs a later stage to draw or to load a decoder.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from import_floors import PACKAGE, cycles, floors, import_graph, imports_of, module_files  # noqa: E402

#: Every stage module and its floor (see the module docstring).
STAGE_FLOORS = {"data": 1, "features.cache": 2, "train": 3,
                "evaluate": 4, "analyses": 4, "baselines": 4, "scaling": 4, "invert": 4,
                "locality": 5, "scorecard": 5,
                "tables": 6, "figures": 6, "findings": 6}
REPORTS = ("tables", "figures", "findings")
#: The highest stage floor the toolkit may reach.
TOOLKIT_REACH = 2
ENTRY_POINTS = ("cli", "__main__")


def _name(module: str) -> str:
    return module.removeprefix(PACKAGE + ".")


def _reach(graph, start: str) -> dict:
    """``{module: a path start → … → module}`` for every module ``start`` imports directly or through others."""
    paths, todo = {}, [(start, [start])]
    while todo:
        node, path = todo.pop()
        for nxt in sorted(graph[node]):
            if nxt not in paths and nxt != start:
                paths[nxt] = path + [nxt]
                todo.append((nxt, path + [nxt]))
    return paths


def _stages_reached(graph, module: str) -> dict:
    return {_name(m): " → ".join(map(_name, path)) for m, path in _reach(graph, module).items()
            if _name(m) in STAGE_FLOORS}


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 40 and f"{PACKAGE}.train" in graph
    assert cycles(graph) == []


def test_every_stage_module_exists_and_every_module_has_a_floor():
    graph = import_graph()
    assert {f"{PACKAGE}.{stage}" for stage in STAGE_FLOORS} <= set(graph)
    assert set(floors(graph)) == set(graph)


def test_stages_reach_only_lower_floors():
    graph = import_graph()
    upward = []
    for stage, floor in STAGE_FLOORS.items():
        for reached, path in _stages_reached(graph, f"{PACKAGE}.{stage}").items():
            if STAGE_FLOORS[reached] >= floor or stage in REPORTS:
                upward.append(path)
    assert upward == []


def test_the_toolkit_reaches_no_stage_above_the_stores():
    graph = import_graph()
    upward = []
    for module in graph:
        name = _name(module)
        if name in STAGE_FLOORS or name in ENTRY_POINTS or module == PACKAGE:
            continue
        upward += [path for reached, path in _stages_reached(graph, module).items()
                   if STAGE_FLOORS[reached] > TOOLKIT_REACH]
    assert upward == []


def test_the_checker_sees_imports_inside_functions_and_reports_circles(tmp_path):
    """On a package made here: an import inside a function closes a circle, which the checker
    reports; relative imports and ``from package import module`` resolve to the module."""
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "low.py").write_text("import os\n\n\ndef late():\n    from preimage.high import thing\n")
    (package / "high.py").write_text("from preimage import low\nthing = 1\n")
    (package / "sub" / "leaf.py").write_text("from . import other\nfrom ..low import late\n")
    (package / "sub" / "other.py").write_text("")
    modules = module_files(package)
    assert set(modules) == {"preimage", "preimage.low", "preimage.high", "preimage.sub", "preimage.sub.leaf",
                            "preimage.sub.other"}
    assert imports_of("preimage.low", modules["preimage.low"], modules) == {"preimage.high"}
    assert imports_of("preimage.sub.leaf", modules["preimage.sub.leaf"], modules) == {"preimage.sub.other",
                                                                                      "preimage.low"}
    graph = import_graph(package)
    assert cycles(graph) == [["preimage.high", "preimage.low"]]
    assert floors(graph) == {"preimage": 0, "preimage.sub": 0, "preimage.sub.other": 0}
    (package / "low.py").write_text("import os\n")
    graph = import_graph(package)
    assert cycles(graph) == []
    assert floors(graph)["preimage.sub.leaf"] == 1 and floors(graph)["preimage.high"] == 1
