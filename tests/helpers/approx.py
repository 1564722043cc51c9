"""Compare nested data (JSON records, ledgers) with a tolerance on floats and exactly elsewhere."""

from __future__ import annotations

from typing import Any

import pytest


def approx_tree(expected: Any, rel: float = 1e-9, abs_: float = 1e-12) -> Any:
    """``expected`` with every float wrapped in :func:`pytest.approx`, through dicts and lists.

    ``actual == approx_tree(expected)`` compares floats to ``rel`` (a last-digits difference from
    another machine's BLAS or libm passes), and text, integers, booleans and ``None`` exactly.
    """
    if isinstance(expected, dict):
        return {k: approx_tree(v, rel, abs_) for k, v in expected.items()}
    if isinstance(expected, (list, tuple)):
        return type(expected)(approx_tree(v, rel, abs_) for v in expected)
    if isinstance(expected, float):
        return pytest.approx(expected, rel=rel, abs=abs_)
    return expected
