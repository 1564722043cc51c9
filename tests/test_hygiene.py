"""The test suite's own hygiene: no test module imports another, no script puts ``tests/`` on
``sys.path`` (shared builders live in ``tests/helpers``, fixtures in ``conftest.py``), and the
caller's environment reaches no test."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import environment
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
SCRIPTS = ROOT / "scripts"


def is_test_module(path: Path) -> bool:
    """What pytest collects (``test_*.py``, ``*_test.py``) and ``conftest.py``: never imported by hand."""
    return path.name == "conftest.py" or path.name.startswith("test_") or path.stem.endswith("_test")


def imported_modules(source: str) -> set[str]:
    """Top-level names of what ``source`` imports: ``import a.b``, ``from a import b``, and
    ``importlib.import_module("a")`` / ``__import__("a")`` with a literal name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value.split(".")[0])
    return found


def loads_test_files(source: str) -> list[str]:
    """Source text of calls that load a file by path (``spec_from_file_location``, ``runpy.run_path``)
    naming a test module."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("spec_from_file_location", "run_path"):
                text = ast.unparse(node)
                if re.search(r"\btest_\w+\.py|conftest\.py", text):
                    bad.append(text)
    return bad


def sys_path_changes(source: str) -> list[str]:
    """Source text of every ``sys.path.insert/append/extend(...)``, ``sys.path[...] = ...`` and
    ``site.addsitedir(...)`` in ``source``."""
    changes = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = ast.unparse(node.func.value)
            if (target == "sys.path" and node.func.attr in ("insert", "append", "extend")) or (
                target == "site" and node.func.attr == "addsitedir"
            ):
                changes.append(ast.get_source_segment(source, node) or ast.unparse(node))
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(ast.unparse(t).startswith("sys.path") for t in targets):
                changes.append(ast.get_source_segment(source, node) or ast.unparse(node))
    return changes


def collected_test_modules() -> dict[str, Path]:
    return {p.stem: p for p in TESTS.rglob("*.py") if is_test_module(p)}


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", python_files(TESTS), ids=lambda p: str(p.relative_to(TESTS)))
def test_no_test_module_imports_another(path):
    source = path.read_text(encoding="utf-8")
    imported = imported_modules(source) & set(collected_test_modules())
    assert not imported, (
        f"{path.relative_to(ROOT)} imports test module(s) {sorted(imported)}: move what is shared into "
        "tests/helpers/ (builders) or tests/conftest.py (fixtures)"
    )
    assert not loads_test_files(source), loads_test_files(source)


@pytest.mark.parametrize("path", python_files(SCRIPTS), ids=lambda p: p.name)
def test_no_script_puts_tests_on_sys_path(path):
    source = path.read_text(encoding="utf-8")
    into_tests = [c for c in sys_path_changes(source) if re.search(r"tests?\b|helpers", c, re.I)]
    assert not into_tests, f"{path.relative_to(ROOT)} puts tests/ on sys.path: {into_tests}"
    from_tests = imported_modules(source) & {p.stem for p in python_files(TESTS)}
    assert not from_tests, f"{path.relative_to(ROOT)} imports {sorted(from_tests)} from tests/ as a module"


def test_no_shell_script_puts_tests_on_pythonpath():
    for path in sorted([*SCRIPTS.glob("*.sh"), *(ROOT / "sweeps").glob("*.sh"), ROOT / ".ci" / "run"]):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"PYTHONPATH=\S*tests", text), path


def test_the_checks_above_can_fail():
    assert imported_modules("from test_adapter import spike_config") == {"test_adapter"}
    assert imported_modules("import test_telemetry as t\nimport os.path") == {"test_telemetry", "os"}
    assert imported_modules("importlib.import_module('test_run')") == {"test_run"}
    assert imported_modules("from . import x\nfrom builders import y") == {"builders"}
    assert loads_test_files('spec_from_file_location("m", ROOT / "tests" / "test_ops.py")')
    assert not loads_test_files('spec_from_file_location("m", ROOT / "scripts" / "bench_inference.py")')
    changes = sys_path_changes(
        'import sys\nsys.path.insert(0, str(Path(__file__).parents[1] / "tests"))\nsys.path += [TESTS]\n'
        "site.addsitedir(HELPERS)\n"
    )
    assert len(changes) == 3 and all(re.search(r"tests?\b|helpers", c, re.I) for c in changes)
    assert sys_path_changes("sys.path.insert(0, str(Path(__file__).parent))") == [
        "sys.path.insert(0, str(Path(__file__).parent))"
    ]
    assert {"test_adapter", "conftest", "test_hygiene"} <= set(collected_test_modules())
    assert "builders" not in collected_test_modules() and "clirun" not in collected_test_modules()


def test_the_callers_switches_reach_no_test_and_no_process_a_test_starts(monkeypatch):
    assert [name for name in os.environ if environment.is_pinned(name)] == []  # pinned in conftest
    caller = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "SPIKELORA_GLUE_DIR": "/x", "RANK": "1", "PATH": "/bin"}
    assert environment.pinned(caller) == {"PATH": "/bin"}  # what clirun.run_cli starts a child with
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a test that tests offline behaviour sets it itself
    assert os.environ["HF_HUB_OFFLINE"] == "1"
