"""``python -m spikelora.report``: the paper's tables and figures, the claims ledger and comparisons
of any runs, from the records under a results directory.

The package imports lazily (pandas and matplotlib load on first use), so ``--help`` is instant.
Modules: :mod:`.build` (tables and figures of the paper), :mod:`.claims`, :mod:`.compare`,
:mod:`.efficiency`, :mod:`.collect` (records → one table), :mod:`.tables`, :mod:`.figures`,
:mod:`.paper` (the paper's numbers), :mod:`.stats`.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = ("Report", "VthChoice", "build_report", "like_for_like", "select_vth", "starting_sparsity")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(".build", __name__), name)
    if name in ("paper", "claims", "compare", "collect", "tables", "figures", "stats", "efficiency", "build"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'spikelora.report' has no attribute {name!r}")
