"""The import contract: layers import one way only, read from the source (no import side effects).

    orthoselect/ (the library)  <  tasks/  <  flows/  <  deployments/

The library never imports Prefect or Dask; inside it, only the run's status (ledger) reads the steps
(`orthoselect.stages`) from outside them. A lower layer never imports a higher one."""

import ast
from pathlib import Path

import pytest

from support import ROOT

LAYERS = ["orthoselect", "tasks", "flows", "deployments"]
RUNTIME_PACKAGES = {"prefect", "prefect_dask", "dask", "distributed"}
STAGES_READERS = {"orthoselect/ledger.py"}  # library modules above the steps


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def imported(package: str) -> list[tuple[str, str]]:
    """(file relative to the checkout, module) for every import of every file of `package`."""
    return [(str(f.relative_to(ROOT)), m) for f in sorted((ROOT / package).rglob("*.py")) for m in imports(f)]


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_a_higher_one(layer):
    higher = set(LAYERS[LAYERS.index(layer) + 1 :])
    bad = [(f, m) for f, m in imported(layer) if m.split(".")[0] in higher]
    assert not bad, f"{layer} imports a higher layer: {bad}"


def test_the_library_never_imports_prefect_or_dask():
    bad = [(f, m) for f, m in imported("orthoselect") if m.split(".")[0] in RUNTIME_PACKAGES]
    assert not bad, f"orthoselect/ imports its runtime: {bad}"


def test_only_the_run_status_reads_the_steps_from_outside_them():
    bad = [
        (f, m)
        for f, m in imported("orthoselect")
        if m.startswith("orthoselect.stages") and "stages" not in Path(f).parts and f not in STAGES_READERS
    ]
    assert not bad, f"library modules below the steps import them: {bad}"


def test_the_contract_sees_imports():
    """The checker itself: it finds top-level and function-level imports."""
    found = imports(ROOT / "orthoselect" / "stages" / "__init__.py")
    assert "orthoselect.stages.base" in found and "orthoselect.llm.governor" in found
