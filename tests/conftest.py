"""Shared fixtures: tiny models built from configs (nothing is downloaded), and a pinned environment.

Builders that several test modules use live in ``tests/helpers/builders.py``; no test module
imports another (``tests/test_hygiene.py`` checks it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Test helpers (builders, fault callbacks, the W&B record reader) import as top-level modules, as
# in the subprocesses the tests start with tests/helpers on PYTHONPATH (tests/helpers/clirun.py).
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))
import environment

# The caller's environment never reaches a test (HF_HUB_OFFLINE=1 in the shell, a W&B login, a
# GLUE folder): the variables that change the runner's behaviour are removed before torch,
# transformers or the Hub client read them, for this process and every process a test starts.
# Tests that test one of them set it themselves (monkeypatch.setenv, or env= of run_cli).
_PINNED = pytest.MonkeyPatch()
environment.pin(_PINNED)

# Under pytest-xdist (README's `-n 2`) each worker, and every run it starts, computes on one
# thread: two workers with two threads each on two cores would oversubscribe them. (torch is
# imported here only in workers: the controller that starts them does not need it.)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def pytest_unconfigure(config):
    _PINNED.undo()


@pytest.fixture(autouse=True)
def pinned_environment(monkeypatch):
    """Every test starts from the pinned environment, even after a module fixture or an earlier
    test in the same worker changed ``os.environ`` without undoing it."""
    environment.pin(monkeypatch)


@pytest.fixture
def tiny_deberta():
    """Builds a fresh randomly initialised 2-layer DeBERTa-v2 classifier in eval mode (seeded)."""
    from builders import tiny_deberta as build

    return build


@pytest.fixture
def batch():
    """Token ids and a padding mask for 3 sequences of lengths 10, 7 and 4 (right padding)."""
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 128, (3, 10), generator=g)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup`` (README's command) tests go to the workers one by one, except that
    the tests sharing a module-scoped fixture (a results tree of real runs, a reference run) form
    one group, run by one worker, which builds the fixture once."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        shared = info is not None and any(
            defs and defs[-1].scope in ("module", "package", "class") for defs in info.name2fixturedefs.values()
        )
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
