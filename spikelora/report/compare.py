"""Compare any runs: mean ± std over seeds per group, never mixing models, tasks or data.

``python -m spikelora.report compare RESULTS_DIR --by adapter,r,vth --metric eval_mcc --out DIR``
writes ``compare.md`` and ``compare.csv`` (and two figures: sparsity over training, the metric
against one swept key). :func:`compare_table` is the function behind it; the runner can call it
on the records of a multirun.

Keys (``--by`` and ``--metric``) are any keys of a run record (``metrics.json``): top-level ones
(``adapter``, ``r``, ``lr``, ``seed``, ``experiment``), nested ones with dots (``final.eval_mcc``,
``train.global_step``, ``best.eval_mcc``), or a key of ``final`` given bare (``eval_mcc`` means
``final.eval_mcc``); also the report's derived columns (``mcc``, ``sparsity``, ``gen_gap``,
``main``, ``model_id``, ``data_id``, ``method``). Rows are always grouped by ``model_id``,
``data_id``, ``task`` and ``method`` as well, so one row never pools different models, tasks,
data or methods (``method`` is the report's label: ``spike`` is the paper's LIF gate only, other
gates and gate settings are ``spike:relu``, ``spike[temporal]``, ...; ``adapter`` is the PEFT
method as recorded, which all gates share).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..experiment.record import RunDir
from .collect import _final_values, collect, identity, method_label
from .figures import save_figure

IDENTITY = ("model_id", "data_id", "task", "method")


def load_records(results_dir: str | Path, experiment: str | None = None) -> list[dict]:
    """Complete run records under ``results_dir`` (optionally one experiment), each with ``run_dir``."""
    table = collect(results_dir).table
    if table.empty:
        return []
    if experiment is not None:
        table = table[table["experiment"] == experiment]
    return [{**rec, "run_dir": d} for rec, d in zip(table["record"], table["run_dir"])]


def records_frame(records: Iterable[dict] | pd.DataFrame) -> pd.DataFrame:
    """One row per run: the flattened record (``final.eval_mcc`` …) plus identity and derived columns.

    ``records`` are run records (dicts as in ``metrics.json``, with ``run_dir`` where known, as
    :func:`load_records` returns them and as ``spikelora.run.run`` returns them), or the table of
    :func:`~spikelora.report.collect.collect`.
    """
    if isinstance(records, pd.DataFrame):
        derived = records.drop(columns=["record"], errors="ignore").reset_index(drop=True)
        recs = [dict(r) for r in records["record"]] if "record" in records else [{} for _ in range(len(records))]
    else:
        recs = [dict(r) for r in records]
        rows = []
        for r in recs:
            rows.append({**_final_values(r, "ref"), **identity(r, r.get("run_dir")), "run_dir": r.get("run_dir")})
        derived = pd.DataFrame(rows).drop(columns=["record"], errors="ignore")
    flat = pd.json_normalize(recs, sep=".") if recs else pd.DataFrame()
    flat = flat.drop(columns=[c for c in flat.columns if c.startswith(("versions.", "non_token_sparsity."))])
    flat = flat.reset_index(drop=True)
    extra = derived[[c for c in derived.columns if c not in flat.columns]]
    frame = pd.concat([flat, extra], axis=1)
    frame["method"] = [method_label(r) for r in recs]
    return frame


def resolve(frame: pd.DataFrame, key: str) -> str:
    """The column of ``frame`` that ``key`` names (``eval_mcc`` → ``final.eval_mcc``)."""
    for candidate in (key, f"final.{key}"):
        if candidate in frame.columns:
            return candidate
    known = sorted(c for c in frame.columns if not c.startswith(("best.", "eval_samples.")))
    raise KeyError(f"no run record has the key {key!r}; keys present: {', '.join(known)}")


def _sort_key(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return (2, 0.0, "")
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def compare_table(records: Iterable[dict] | pd.DataFrame, by: Iterable[str], metrics: Iterable[str]) -> pd.DataFrame:
    """Mean ± sample std and n over the runs of each group; one row per group.

    Groups are ``model_id``, ``data_id``, ``task`` and then ``by`` (record keys); ``metrics`` are
    record keys too (see the module docstring). Returns columns ``model_id, data_id, task, *by,
    n, seeds`` and ``<metric> mean``, ``<metric> std``, ``<metric> median``, ``<metric> n`` for each
    metric; rows
    sorted by the group keys (numbers numerically).
    """
    frame = records_frame(records)
    by = [resolve(frame, k) for k in by if k not in IDENTITY]
    metrics = [resolve(frame, m) for m in metrics]
    keys = [*IDENTITY, *by]
    if frame.empty:
        return pd.DataFrame(columns=[*keys, "n", "seeds"])
    for k in keys:
        frame[k] = frame[k].map(lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
    rows = []
    for group, g in frame.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
        row["n"] = len(g)
        row["seeds"] = ",".join(str(s) for s in sorted(g["seed"].dropna().astype(int))) if "seed" in g else ""
        for m in metrics:
            vals = pd.to_numeric(g[m], errors="coerce").dropna()
            row[f"{m} mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m} std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            row[f"{m} median"] = float(vals.median()) if len(vals) else math.nan
            row[f"{m} n"] = len(vals)
        rows.append(row)
    rows.sort(key=lambda r: tuple(_sort_key(r[k]) for k in keys))
    return pd.DataFrame(rows)


def _num(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _evaluation(metric: str) -> str:
    """Which evaluation a metric column reports: the last (``final.*``, the paper's) or the best."""
    return "best eval" if metric.startswith("best.") else "last eval"


def format_compare(table: pd.DataFrame) -> str:
    """The table as Markdown: ``mean ± std, median m (n)`` per metric (its header says whether it is the
    last or the best evaluation), the seeds of each row, an em dash where there is no value."""
    metrics = [c[: -len(" mean")] for c in table.columns if c.endswith(" mean")]
    keys = [c for c in table.columns if c not in ("n", "seeds") and not c.startswith(tuple(metrics))]
    head = [*keys, "n", "seeds", *(f"{m} ({_evaluation(m)})" for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [str(r[k]) for k in keys] + [str(r["n"]), str(r.get("seeds", "")) or "—"]
        for m in metrics:
            mean, std, n = r[f"{m} mean"], r[f"{m} std"], r[f"{m} n"]
            median = r.get(f"{m} median", math.nan)
            if n == 0:
                cells.append("—")
            else:
                spread = f" ± {_num(std)}" if not math.isnan(std) else ""
                cells.append(_num(mean) + spread + (f", median {_num(median)}" if n > 1 else "") + f" (n={n})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def multirun_summary(records: Iterable[dict] | pd.DataFrame, by: Iterable[str]) -> str:
    """What a runner prints at the end of a multirun: ``compare_table`` over the swept keys ``by``
    with each task's main score (``main``, percent), the gen gap and the sparsity (percent)."""
    table = compare_table(records, [k for k in by if k != "seed"], ["main", "gen_gap", "sparsity"])
    return format_compare(table)


def write_compare(table: pd.DataFrame, out: str | Path, title: str = "Run comparison") -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = [
        f"# {title}",
        "",
        "Mean ± sample std and the median over the runs of each group (n = runs with the metric; "
        "`seeds` = their seeds). Each metric's header says whether it is the last evaluation "
        "(`final.*`, as the paper reports) or the best (`best.*`, chosen by the main metric). "
        "GLUE's evaluation sets are its dev sets. Rows never pool different models (`model_id`), "
        "data (`data_id`), tasks or methods (`method`: each gate and gate setting its own).",
        "",
        format_compare(table),
    ]
    (out / "compare.md").write_text("\n".join(md), encoding="utf-8")
    table.to_csv(out / "compare.csv", index=False)
    return [out / "compare.md", out / "compare.csv"]


# ------------------------------------------------------------------------------------ figures
def sparsity_history(run_dir: str | Path) -> tuple[dict[int, float], dict[int, float]]:
    """({step: train sparsity %}, {step: eval sparsity %}) from a run's history."""
    train, evals = {}, {}
    for r in RunDir(run_dir).history():
        if r.get("type") == "train_log" and r.get("sparsity") is not None:  # HF's training log: plain names
            train[int(r["step"])] = 100.0 * float(r["sparsity"])
        elif r.get("type") == "eval":
            value = r.get(f"{r.get('split', 'eval')}_sparsity")
            if value is not None:
                evals[int(r["step"])] = 100.0 * float(value)
    return train, evals


def _group_label(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{k.removeprefix('final.')}={row[k]}" for k in keys)


def sparsity_figure(records, by: Iterable[str], out: str | Path, name: str = "sparsity_over_training") -> list[Path]:
    """Train and eval sparsity over optimiser steps, mean over the runs of each group (SpikeLoRA runs)."""
    frame = records_frame(records)
    if frame.empty or "adapter" not in frame:
        return []
    frame = frame[frame["adapter"] == "spike"]
    if frame.empty or "run_dir" not in frame:
        return []
    keys = [*IDENTITY, *(resolve(frame, k) for k in by if k not in IDENTITY)]
    n_groups = frame.groupby(keys, dropna=False).ngroups
    fig, axes = plt.subplots(1, 2, figsize=(11, 4 + 0.18 * n_groups), layout="constrained", sharey=True)
    drawn = False
    for _, g in frame.groupby(keys, dropna=False, sort=True):
        label = _group_label(g.iloc[0], [k for k in keys if k not in IDENTITY[:2] or frame[k].nunique() > 1])
        histories = [sparsity_history(d) for d in g["run_dir"].dropna()]  # each history read once
        for ax, idx in ((axes[0], 0), (axes[1], 1)):
            series = [h[idx] for h in histories if h[idx]]
            if not series:
                continue
            steps = sorted(set.intersection(*(set(s) for s in series)))
            if not steps:
                continue
            y = np.array([[s[t] for t in steps] for s in series])
            line = ax.plot(steps, y.mean(axis=0), "o-" if idx else "-", ms=3, label=f"{label} (n={len(series)})")
            if len(series) > 1:
                ax.fill_between(steps, y.min(axis=0), y.max(axis=0), alpha=0.15, color=line[0].get_color())
            drawn = True
    if not drawn:
        plt.close(fig)
        return []
    axes[0].set(xlabel="optimiser step", ylabel="sparsity (%)", title="Train (logged windows)")
    axes[1].set(xlabel="optimiser step", title="Evaluation")
    for ax in axes:
        ax.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels() if axes[1].lines else axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=1 if len(labels) > 4 else 2)
    return save_figure(fig, Path(out), name)


def metric_figure(table: pd.DataFrame, x: str, metric: str, out: str | Path, name: str | None = None) -> list[Path]:
    """``metric`` (mean ± std) against the swept key ``x``, one line per remaining group."""
    if table.empty or x not in table.columns or f"{metric} mean" not in table.columns:
        return []
    rest = [c for c in table.columns if c not in (x, "n", "seeds") and not c.startswith(metric)]
    rest = [c for c in rest if not c.endswith((" mean", " std", " n"))]
    t = table[pd.to_numeric(table[x], errors="coerce").notna()]
    if t.empty:
        return []
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for _, g in t.groupby(rest, dropna=False, sort=True):
        g = g.assign(_x=pd.to_numeric(g[x])).sort_values("_x")
        if g[f"{metric} mean"].isna().all():
            continue
        label = _group_label(g.iloc[0], [c for c in rest if t[c].nunique() > 1]) or metric
        ax.errorbar(g["_x"], g[f"{metric} mean"], yerr=g[f"{metric} std"].fillna(0), fmt="o-", capsize=3, label=label)
    if pd.to_numeric(t[x]).min() > 0 and pd.to_numeric(t[x]).max() / pd.to_numeric(t[x]).min() >= 100:
        ax.set_xscale("log")
    ax.set(xlabel=x, ylabel=metric.removeprefix("final."), title=f"{metric.removeprefix('final.')} vs {x}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return save_figure(fig, Path(out), name or f"{metric.removeprefix('final.')}_vs_{x}".replace("/", "_"))


def compare(
    results_dir: str | Path,
    by: list[str],
    metrics: list[str],
    out: str | Path,
    experiment: str | None = None,
    x: str | None = None,
) -> tuple[pd.DataFrame, list[Path]]:
    """Write ``compare.md``, ``compare.csv`` and the figures for the runs in ``results_dir``."""
    records = load_records(results_dir, experiment)
    table = compare_table(records, by, metrics)
    paths = write_compare(table, out)
    frame = records_frame(records)
    if not frame.empty:
        by_cols = [resolve(frame, k) for k in by if k not in IDENTITY]
        if x is None:  # the first key that varies and is numeric
            x = next(
                (k for k in by_cols if pd.to_numeric(table[k], errors="coerce").dropna().nunique() > 1),
                None,
            )
        else:
            x = resolve(frame, x)
        if x is not None:
            for m in metrics:
                paths += metric_figure(table, x, resolve(frame, m), Path(out))
        paths += sparsity_figure(records, by, Path(out))
    return table, paths
