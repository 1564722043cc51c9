"""The claims ledger's parts, shared by the paper's claims (:mod:`.claims`) and the reviewers'
questions (:mod:`.questions`): one :class:`Claim` per row, and the helpers that fill it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from .stats import Estimate


@dataclass
class Claim:
    id: str
    claim: str
    source: str
    paper: str  # the paper's figures, as printed (every number in it occurs in the paper text)
    paper_effect: float | None  # the paper's effect, in the unit of ``effect``
    ours: str
    effect: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    test: str = ""
    p_value: float | None = None
    p_wilcoxon: float | None = None
    n: int = 0
    verdict: str = "no data"
    note: str = ""
    group: str = ""
    paper_setting: bool = False  # the group uses the paper's model and real data
    runs: list[str] = field(default_factory=list)


def num(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def key_of(row: pd.Series, keys: Iterable[str]) -> tuple:
    out = []
    for k in keys:
        v = row.get(k)
        if isinstance(v, float) and math.isnan(v):
            v = None
        out.append(round(v, 12) if isinstance(v, float) else v)
    return tuple(out)


def one_per_seed(rows: pd.DataFrame) -> dict[int, pd.Series]:
    """One run per seed (the same configuration recorded under two experiments counts once)."""
    by_seed: dict[int, pd.Series] = {}
    for _, row in rows.sort_values("run_dir").iterrows():
        by_seed.setdefault(int(row["seed"]), row)
    return by_seed


def fill(c: Claim, est: Estimate, verdict_note: tuple[str, str], p_value: float | None = None) -> Claim:
    c.effect, c.ci_low, c.ci_high = num(est.effect), num(est.ci_low), num(est.ci_high)
    c.n = est.n
    c.p_value = num(est.p_value) if p_value is None else num(p_value)
    c.p_wilcoxon = num(est.p_rank)
    c.verdict, note = verdict_note
    c.note = f"{note}." + (f" {c.note}" if c.note else "")
    return c


def no_data(base: Claim, why: str) -> list[Claim]:
    base.verdict, base.note = "no data", f"{why}."
    return [base]
