"""The import contract: layers import one way only, read from the source (no import side effects).

    orthoselect/ (the library)  <  tasks/  <  flows/  <  deployments/

Inside the library, each part (a folder of `orthoselect/`, see its `__init__.py`) may import only the parts
listed for it in PARTS: the parts before it in the order a run uses them. The library never imports
Prefect or Dask, and nothing in it forms an import circle."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from support import ROOT

LAYERS = ["orthoselect", "tasks", "flows", "deployments"]
RUNTIME_PACKAGES = {"prefect", "prefect_dask", "dask", "distributed"}
SHARED = {"types", "hashing"}  # the vocabulary and the hashes every part may use
PARTS: dict[str, set[str]] = {  # part -> the other parts it may import (besides SHARED)
    "types": set(),
    "hashing": set(),
    "config": set(),
    "data": {"config"},
    "llm": {"config", "data"},
    "scoring": {"config", "data", "llm"},
    "rules": {"config", "data", "llm", "scoring"},  # the offline simulator writes rules from its bank
    "choice": {"config"},
    "selection": {"config"},
    "report": {"config", "data", "choice"},
    "evaluation": {"config", "data", "rules", "choice", "report"},
    "preflight": {"config", "data", "llm", "rules", "scoring"},
    "stages": {"config", "data", "llm", "scoring", "rules", "choice", "selection", "report"},
    "dpp": {"choice"},  # the import path ../shared/method.md §4 names, kept for benchmarks and users
}


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "orthoselect":  # `from orthoselect import x`: x is a part, or __version__
                found |= {f"orthoselect.{alias.name}" for alias in node.names}
    return found


def imported(package: str) -> list[tuple[str, str]]:
    """(file relative to the checkout, module) for every import of every file of `package`."""
    return [(str(f.relative_to(ROOT)), m) for f in sorted((ROOT / package).rglob("*.py")) for m in imports(f)]


def part_of(file: str) -> str:
    """The library part a file belongs to: its folder under orthoselect/, or its module name at the top."""
    parts = Path(file).parts
    return parts[1].removesuffix(".py") if len(parts) > 1 else ""


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_a_higher_one(layer):
    higher = set(LAYERS[LAYERS.index(layer) + 1 :])
    bad = [(f, m) for f, m in imported(layer) if m.split(".")[0] in higher]
    assert not bad, f"{layer} imports a higher layer: {bad}"


def test_the_library_never_imports_prefect_or_dask():
    bad = [(f, m) for f, m in imported("orthoselect") if m.split(".")[0] in RUNTIME_PACKAGES]
    assert not bad, f"orthoselect/ imports its runtime: {bad}"


def test_every_part_imports_only_the_parts_before_it():
    top = {p.name.removesuffix(".py") for p in (ROOT / "orthoselect").iterdir() if p.name != "__init__.py"}
    top.discard("__pycache__")
    assert top == set(PARTS), "a part of the library is missing from PARTS (or PARTS names one that is gone)"
    bad = []
    for file, module in imported("orthoselect"):
        if not module.startswith("orthoselect.") or file == "orthoselect/__init__.py":
            continue
        mine, theirs = part_of(file), module.split(".")[1]
        if theirs not in (mine, "__version__") and theirs not in PARTS[mine] | SHARED:
            bad.append((file, module))
    assert not bad, f"imports against the library's order (tests/test_layers.py PARTS): {bad}"


def test_no_import_circles_between_modules():
    """No two modules of the library import each other, directly or round a loop (TYPE_CHECKING imports
    count: a circle of types is a circle of design)."""
    graph: dict[str, set[str]] = defaultdict(set)
    modules = {}
    for f in sorted((ROOT / "orthoselect").rglob("*.py")):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = f
    for name, f in modules.items():
        for m in imports(f):
            if m in modules and m != name and not name.startswith(m + "."):  # a package's own __init__ aside
                graph[name].add(m)

    def circle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*path, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    circles = {tuple(sorted(c)) for m in modules if (c := circle_from(m))}
    assert not circles, f"import circles: {sorted(circles)}"


def test_the_contract_sees_imports():
    """The checker itself: it finds top-level and function-level imports."""
    found = imports(ROOT / "orthoselect" / "stages" / "__init__.py")
    assert "orthoselect.stages.base" in found and "orthoselect.llm.governor" in found


def test_the_import_paths_others_rely_on_still_work():
    """../shared/method.md §4 and the deployments name these."""
    from orthoselect.choice import dpp as chooser
    from orthoselect.config import DPPConfig
    from orthoselect.dpp import greedy_map, rule_correlation, sample_k_dpp, select_rules

    assert select_rules is chooser.select_rules and DPPConfig().k > 0
    assert callable(greedy_map) and callable(sample_k_dpp) and callable(rule_correlation)
