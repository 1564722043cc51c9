"""The house: one-way imports between the method, the runner's wing and the report, no cycle, the
method importable with its core dependencies alone, and imports at the top inside the wing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "spikelora"
# What the `experiments` extra brings: the method must not need any of it.
EXPERIMENT_DEPS = ("hydra", "omegaconf", "datasets", "wandb", "scipy", "sklearn", "pandas", "matplotlib")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every import cycle among the package's modules (Tarjan's strongly connected components)."""
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in sorted(graph.find_modules_directly_imported_by(m)):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1 or m in graph.find_modules_directly_imported_by(m):
                found.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_the_import_contracts_hold():
    """``lint-imports``: front doors > report > runner wing > models > method, and wing ↛ report."""
    out = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


def test_no_import_cycle_among_the_modules():
    graph = grimp.build_graph("spikelora")
    assert "spikelora.experiment.plan" in graph.modules  # the graph sees the wing
    assert _cycles(graph) == []


def test_the_cycle_check_can_fail():
    graph = grimp.build_graph("spikelora")
    graph.add_import(importer="spikelora.experiment.tasks", imported="spikelora.experiment.trainer")
    assert any("spikelora.experiment.trainer" in c and "spikelora.experiment.tasks" in c for c in _cycles(graph))


def test_the_package_top_holds_the_method_and_the_front_doors_only():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top
    assert set(top) == {
        "__init__.py",
        "adapter.py",
        "neuron.py",
        "tokens.py",
        "telemetry.py",
        "ops.py",
        "run.py",
        "status.py",
        "export.py",
    }


def _local_imports(path: Path) -> list[int]:
    """Line numbers of imports inside functions or classes (not at a module's top level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    return sorted(
        node.lineno for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top
    )


FRONT_DOORS = {"run.py", "status.py", "export.py", "report/__main__.py"}


def test_imports_are_at_the_top_except_at_the_front_doors():
    """The lazy boundary is the front doors' (run, status, export, report's __main__): nowhere else."""
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if str(p.relative_to(PACKAGE)) not in FRONT_DOORS]
    assert any("experiment" in p.parts for p in files) and len(files) > 30
    local = {str(p.relative_to(ROOT)): lines for p in files if (lines := _local_imports(p))}
    assert local == {}


def test_the_method_imports_with_its_core_dependencies_alone():
    """``pip install spikelora`` (torch, transformers, peft) is enough for the PEFT method."""
    code = f"""
import importlib.util, sys
for name in {EXPERIMENT_DEPS!r}:
    sys.modules[name] = None  # as if not installed: import fails, importlib.util.find_spec says None
assert importlib.util.find_spec("scipy") is None
import torch
from torch import nn
import spikelora
from peft import get_peft_model
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
    def forward(self, x):
        return self.proj(x)
model = get_peft_model(Net(), spikelora.SpikeLoraConfig(r=4, target_modules=["proj"], v_threshold=0.1))
y = model(torch.randn(2, 3, 8))
assert y.shape == (2, 3, 8)
assert 0.0 <= spikelora.sparsity_report(model).mean <= 1.0
print("core ok", type(model.base_model).__name__)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "core ok SpikeLoraModel" in out.stdout
