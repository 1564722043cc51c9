"""Efficiency table and figure: task metric against adapter operations and energy per token.

Input: a DataFrame of runs, one row each, with columns ``task``, ``adapter`` (``lora``,
``spike``, ``full``), ``r``, ``vth``, ``seed``, the task metric (``mcc``, ``accuracy``,
``pearson``…, as :mod:`spikelora.report.collect` names them), ``sparsity`` and ``ops``: the
block :func:`spikelora.ops.ops_report` returns (``metrics.json["ops"]``), a dict per row.

Per task the table has one row per configuration (adapter, r, V_θ), mean ± std over seeds, and a
``lora (merged)`` row next to each LoRA row: merging folds ``B·A`` into ``W`` so the adapter costs
nothing at inference while the scores are LoRA's. SpikeLoRA cannot merge, so it is shown against
both: its adapter MACs against unmerged LoRA's (``ratio_unmerged``), and its total MACs and
energy against merged LoRA's, i.e. the base model's (``ratio_merged``, ``energy_ratio_merged``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ..experiment.tasks import TASKS
from .figures import save_figure

MERGED = "lora (merged)"
# Runs are only ever pooled within one model, data set and training setting (never mixed).
SETTING = ("model_id", "data_id", "lr", "dropout")
COLUMNS = [
    *SETTING,
    "task",
    "adapter",
    "r",
    "vth",
    "n",
    "metric",
    "metric_mean",
    "metric_std",
    "sparsity",
    "base_macs",
    "adapter_macs",
    "adapter_macs_dense",
    "adapter_acs",
    "gate_ops",
    "energy_adapter_pj",
    "energy_total_pj",
    "ratio_unmerged",
    "ratio_merged",
    "energy_ratio_unmerged",
    "energy_ratio_merged",
]


def metric_for(task: str, metric: str | dict[str, str] | None = None) -> str:
    """The metric column of ``task``: ``metric`` if given (one name, or ``{task: name}``), else the task's first."""
    if isinstance(metric, str):
        return metric
    if isinstance(metric, dict) and task in metric:
        return metric[task]
    if task in TASKS:
        return TASKS[task].metrics[0]
    raise ValueError(f"No metric known for task {task!r}; pass metric=.")


def _ops_columns(ops: Any) -> dict[str, float]:
    if not isinstance(ops, dict):
        return {}
    energy = ops.get("energy_pj") or {}
    return {
        "base_macs": ops.get("base_macs"),
        "adapter_macs": ops.get("adapter_macs"),
        "adapter_macs_dense": ops.get("adapter_macs_dense"),
        "adapter_acs": ops.get("adapter_acs"),
        "gate_ops": ops.get("gate_ops"),
        "energy_adapter_pj": energy.get("adapter"),
        "energy_total_pj": energy.get("total"),
    }


def _mean(s: pd.Series) -> float:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.mean()) if len(s) else math.nan


def _std(s: pd.Series) -> float:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.std(ddof=1)) if len(s) > 1 else math.nan


def efficiency_table(runs: pd.DataFrame, metric: str | dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (task, adapter, r, V_θ) over seeds, plus a merged-LoRA row per LoRA row; see the module docstring."""
    if runs.empty or "ops" not in runs:
        return pd.DataFrame(columns=COLUMNS)
    flat = runs.copy()
    flat = pd.concat([flat.reset_index(drop=True), pd.DataFrame([_ops_columns(o) for o in flat["ops"]])], axis=1)
    rows = []
    for col in SETTING:
        if col not in flat:
            flat[col] = None
    flat["dropout"] = flat["dropout"].fillna(0.0)
    for (*setting, task), tdf in flat.groupby([*SETTING, "task"], sort=True, dropna=False):
        name = metric_for(task, metric)
        keys = ["adapter", "r", "vth"]
        tdf = tdf.assign(vth=tdf["vth"].where(tdf["adapter"] == "spike"))
        for (adapter, r, vth), g in tdf.groupby(keys, dropna=False, sort=True):
            row = {
                **dict(zip(SETTING, setting)),
                "task": task,
                "adapter": adapter,
                "r": r,
                "vth": vth,
                "n": g["seed"].nunique() if "seed" in g else len(g),
                "metric": name,
                "metric_mean": _mean(g[name]) if name in g else math.nan,
                "metric_std": _std(g[name]) if name in g else math.nan,
                "sparsity": _mean(g["sparsity"]) if "sparsity" in g else math.nan,
            }
            for col in ("base_macs", "adapter_macs", "adapter_macs_dense", "adapter_acs", "gate_ops"):
                row[col] = _mean(g[col])
            row["energy_adapter_pj"] = _mean(g["energy_adapter_pj"])
            row["energy_total_pj"] = _mean(g["energy_total_pj"])
            rows.append(row)
            if adapter == "lora":
                merged = dict(row, adapter=MERGED, adapter_macs=0.0, adapter_acs=0.0, gate_ops=0.0)
                merged["energy_total_pj"] = row["energy_total_pj"] - row["energy_adapter_pj"]
                merged["energy_adapter_pj"] = 0.0
                rows.append(merged)
    table = pd.DataFrame(rows)
    # References per (task, r): unmerged LoRA's adapter cost, merged LoRA's (= the base's) total cost.
    for i, row in table.iterrows():
        same = (table["task"] == row["task"]) & (table["r"] == row["r"])
        for col in SETTING:
            same &= (table[col] == row[col]) | (table[col].isna() & pd.isna(row[col]))
        lora = table[same & (table["adapter"] == "lora")]
        if not lora.empty:
            ref_macs, ref_energy = lora["adapter_macs"].iloc[0], lora["energy_adapter_pj"].iloc[0]
        else:  # no LoRA run: unmerged LoRA of the same rank, as counted alongside
            ref_macs = row["adapter_macs_dense"]
            ref_energy = math.nan
        own_energy = row["energy_adapter_pj"]
        table.loc[i, "ratio_unmerged"] = row["adapter_macs"] / ref_macs if ref_macs else math.nan
        table.loc[i, "energy_ratio_unmerged"] = own_energy / ref_energy if ref_energy else math.nan
        base = row["base_macs"]
        base_energy = row["energy_total_pj"] - own_energy
        total = base + row["adapter_macs"] + row["adapter_acs"]
        table.loc[i, "ratio_merged"] = total / base if base else math.nan
        table.loc[i, "energy_ratio_merged"] = row["energy_total_pj"] / base_energy if base_energy else math.nan
    return table[COLUMNS].reset_index(drop=True)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points not dominated by another (lower or equal cost and higher or equal score, one strictly), by cost."""
    front, best = [], -math.inf
    for cost, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if score > best:
            front.append((cost, score))
            best = score
    return front


def efficiency_figure(
    runs: pd.DataFrame, out: str | Path, metric: str | dict[str, str] | None = None, name: str = "efficiency"
) -> list[Path]:
    """Per task: metric against adapter MACs/token over the V_θ sweep, LoRA (unmerged and merged) marked, Pareto front.

    Writes ``<name>.png`` and ``<name>.pdf`` under ``out``; returns their paths (none without runs).
    """
    table = efficiency_table(runs, metric)
    if table.empty:
        return []
    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), layout="constrained", squeeze=False)
    for ax, task in zip(axes[0], tasks):
        t = table[table["task"] == task]
        spike = t[t["adapter"] == "spike"].sort_values("adapter_macs")
        ax.errorbar(
            spike["adapter_macs"],
            spike["metric_mean"],
            yerr=spike["metric_std"].fillna(0),
            fmt="o",
            color="tab:brown",
            capsize=3,
            label="SpikeLoRA",
        )
        for _, row in spike.iterrows():
            ax.annotate(f"{row['vth']:g}", (row["adapter_macs"], row["metric_mean"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        for adapter, marker, label in (("lora", "s", "LoRA (unmerged)"), (MERGED, "D", "LoRA (merged)")):
            sub = t[t["adapter"] == adapter]
            if not sub.empty:
                ax.errorbar(
                    sub["adapter_macs"],
                    sub["metric_mean"],
                    yerr=sub["metric_std"].fillna(0),
                    fmt=marker,
                    color="tab:blue",
                    mfc="white" if adapter == MERGED else "tab:blue",
                    capsize=3,
                    label=label,
                )
        points = [(c, m) for c, m in zip(t["adapter_macs"], t["metric_mean"]) if not (math.isnan(c) or math.isnan(m))]
        front = pareto_front(points)
        if len(front) > 1:
            xs, ys = zip(*front)
            ax.step(xs, ys, where="post", color="0.4", ls="--", lw=1, label="Pareto front")
        ax.set(xlabel="adapter MACs / token", ylabel=t["metric"].iloc[0], title=task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="SpikeLoRA points labelled by V_θ", title_fontsize=7)
    return save_figure(fig, Path(out), name)


def efficiency_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown, one section per task; ``base`` is the model (``+nf4`` ... for a
    quantised one, whose base energy the float MAC figure does not price: "not priced")."""
    lines = []
    for task, t in table.groupby("task", sort=False):
        lines += [
            f"### {task}",
            "",
            "| base | method | r | V_θ | n | "
            + t["metric"].iloc[0]
            + " | sparsity | adapter MACs/tok | adapter pJ/tok "
            "| × unmerged LoRA | × merged LoRA (total MACs) | × merged LoRA (total energy) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in t.iterrows():
            vth = "" if pd.isna(r["vth"]) else f"{r['vth']:g}"
            score = f"{r['metric_mean']:.2f}" + ("" if pd.isna(r["metric_std"]) else f" ± {r['metric_std']:.2f}")
            sparsity = "" if pd.isna(r["sparsity"]) else f"{r['sparsity']:.2f}"
            energy = r["energy_ratio_merged"]
            quantised = "+" in str(r.get("model_id", "")).split("@")[0]
            energy = "not priced (quantised base)" if pd.isna(energy) and quantised else f"{energy:.4f}"
            lines.append(
                f"| {r.get('model_id', '')} | {r['adapter']} | {r['r']} | {vth} | {r['n']} | {score} | {sparsity} "
                f"| {r['adapter_macs']:,.0f} | {r['energy_adapter_pj']:,.0f} | {r['ratio_unmerged']:.3f} "
                f"| {r['ratio_merged']:.4f} | {energy} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_efficiency(runs: pd.DataFrame, out: str | Path, metric: str | dict[str, str] | None = None) -> list[Path]:
    """``efficiency.csv``, ``efficiency.md`` and the figure (PNG, PDF) under ``out``."""
    table = efficiency_table(runs, metric)
    if table.empty:
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / "efficiency.csv", out / "efficiency.md"
    table.to_csv(csv, index=False)
    md.write_text(efficiency_markdown(table), encoding="utf-8")
    return [csv, md, *efficiency_figure(runs, out, metric)]
