"""Read every run record under a results directory into one pandas table, and aggregate over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

# Per-run values the tables use, from metrics.json "final" (last evaluation). Scores are in
# percent, as in the paper; losses, gaps raw; sparsity in percent.
PERCENT = ("mcc", "accuracy", "f1", "pearson", "spearman", "acc_m", "acc_mm", "sparsity")


@dataclass
class Runs:
    """Complete runs (one row each) and what was left out."""

    table: pd.DataFrame
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (run dir, status)


def _final_values(m: dict, gap: str) -> dict:
    final = m.get("final") or {}
    if m.get("task") == "mnli":
        prefix = "eval_validation_matched"
        values = {
            "acc_m": final.get("eval_validation_matched_accuracy"),
            "acc_mm": final.get("eval_validation_mismatched_accuracy"),
            "accuracy": final.get("eval_validation_matched_accuracy"),
        }
    else:
        prefix = "eval"
        values = {k: final.get(f"eval_{k}") for k in ("mcc", "accuracy", "f1", "pearson", "spearman")}
    values["eval_loss"] = final.get(f"{prefix}_loss")
    values["gen_gap"] = final.get(f"{prefix}_gen_gap_{gap}")
    values["sparsity"] = final.get(f"{prefix}_sparsity")
    for k in PERCENT:
        if values.get(k) is not None:
            values[k] = 100.0 * values[k]
    return values


def collect(results_dir: str | Path, gap: str = "ref") -> Runs:
    """Every ``<experiment_name>/<run_name>/metrics.json`` below ``results_dir``.

    ``gap`` chooses the generalisation gap: ``"ref"`` (the authors' definition, the paper's
    tables) or ``"epoch"`` (mean over the final epoch).
    """
    from ..record import scan

    records, excluded = scan(results_dir)
    rows = []
    for run, m in records:
        row = {
            "experiment": m.get("experiment"),
            "run_dir": str(run.path),
            "run_name": m.get("run_name"),
            "task": m.get("task"),
            "model": m.get("model"),
            "adapter": m.get("adapter"),
            "r": m.get("r"),
            "vth": m.get("vth"),
            "lr": m.get("lr"),
            "dropout": m.get("dropout"),
            "seed": m.get("seed"),
        }
        row.update(_final_values(m, gap))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(columns=["experiment", "task", "adapter", "r", "vth", "lr", "dropout", "seed"])
    return Runs(table, excluded)


@dataclass(frozen=True)
class Stat:
    """Mean ± sample std over the seeds present."""

    mean: float
    std: float
    n: int

    @property
    def missing(self) -> bool:
        return self.n == 0


MISSING = Stat(math.nan, math.nan, 0)


def stat(values: pd.Series | list) -> Stat:
    s = pd.Series(values, dtype="float64").dropna()
    if s.empty:
        return MISSING
    return Stat(float(s.mean()), float(s.std(ddof=1)) if len(s) > 1 else math.nan, len(s))


def select(table: pd.DataFrame, **where) -> pd.DataFrame:
    """Rows matching every ``column=value`` (floats compared with a tolerance)."""
    if table.empty:
        return table
    mask = pd.Series(True, index=table.index)
    for col, value in where.items():
        if col not in table:
            return table.iloc[0:0]
        if isinstance(value, float):
            mask &= (pd.to_numeric(table[col], errors="coerce") - value).abs() <= 1e-12 * max(1.0, abs(value))
        else:
            mask &= table[col] == value
    return table[mask]
