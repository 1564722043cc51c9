"""``python -m spikelora.report [RESULTS_DIR] --out reports/``: the paper's tables and figures from results/.

Reads every complete run under ``RESULTS_DIR/<experiment_name>/``; the studies are found by
their experiment names (``rank``, ``lr``, ``glue``, ``spikegpt``, ``vth``, ``dropout``,
``sparsity``, ``gradnorm``: the ``conf/experiment`` files set them). Writes each table as
``.md``, ``.tex`` (booktabs) and ``.csv``, each figure as ``.png`` and ``.pdf``, a paper-vs-ours
table beside each table, and ``report.md`` with everything in one page.

Tables and figures never mix models or data (:func:`like_for_like`): each study shows the paper's
model on real data when present, else its largest model/data group, and notes what it left out;
the paper-vs-ours columns take only the paper's model (DeBERTaV3-base on GLUE, SpikeGPT-216M on
Subj) on real data. ``claims`` (:mod:`.claims`) and ``compare`` (:mod:`.compare`) are subcommands.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ..experiment.confdir import CONF_DIR
from ..experiment.record import RunDir
from . import paper
from .collect import MISSING, Runs, Stat, collect, select, stat
from .efficiency import write_efficiency
from .figures import dropout_figure, gradnorm_figure, gradnorm_series, heatmap_figure, vth_figure
from .tables import (
    comparison,
    dropout_table,
    glue_table,
    hyperparameter_table,
    method_sweep,
    spikegpt_table,
    to_markdown,
    vth_table,
    write_table,
)

DEFAULT_CONF = CONF_DIR


@dataclass
class Report:
    tables: dict
    figures: list[Path]
    gradnorm: dict | None
    n_complete: int
    excluded: list[tuple[str, str]]


PAPER_MODEL_TEXT = {"glue": "DeBERTaV3-base on real GLUE data", "subj": "SpikeGPT-216M on real Subj data"}


def _kind(df: pd.DataFrame) -> pd.Series:
    return df["model_id"].astype(str) + np.where(
        df["data_id"].astype(str).str.startswith("synthetic"), " on synthetic data", " on real data"
    )


def _counts(df: pd.DataFrame) -> str:
    return "; ".join(f"{k}: {n}" for k, n in _kind(df).value_counts().sort_index().items())


def like_for_like(df: pd.DataFrame, experiment: str, tasks: tuple[str, ...], paper_of: str):
    """The runs of one study that may share a table, the paper-model subset, and notes on the rest.

    A table never mixes models or data: it shows the paper's model on real data when the study has
    such runs, else the model/data pair with the most runs. The paper-vs-ours column takes only
    runs of the paper's model on real data (``paper_model``).
    """
    if df.empty or "model_id" not in df:
        return df, df, [], []
    runs = df[(df["experiment"] == experiment) & df["task"].isin(tasks)]
    if runs.empty:
        return runs, runs, [], []
    on_paper = runs[runs["paper_model"].astype(bool)]
    if not on_paper.empty:
        kept = on_paper
    else:
        kinds = _kind(runs)
        top = kinds.value_counts().sort_index().idxmax()
        kept = runs[kinds == top]
    left = runs.drop(kept.index)
    notes = [f"Runs shown: {_counts(kept)}."]
    if not left.empty:
        notes.append(
            f"Left out of this table (another model or data; tables never mix them): {len(left)} runs ({_counts(left)})."
        )
    vs = [f"Ours: only runs of {PAPER_MODEL_TEXT[paper_of]} (the paper's setting)."]
    if not on_paper.empty and "sparsity_reference" in on_paper:
        # The paper's sparsity is the authors' definition: compare with it where the runs recorded it.
        ref = pd.to_numeric(on_paper["sparsity_reference"], errors="coerce")
        ours = pd.to_numeric(on_paper["sparsity"], errors="coerce")
        if ours.notna().any() and ref[ours.notna()].notna().all():
            on_paper = on_paper.assign(sparsity=ref)
            vs.append("Sparsity in Ours: the authors' definition (eval_sparsity_reference), as in the paper.")
        elif ours.notna().any():
            vs.append(
                "Sparsity in Ours: our definition (whole eval set, real tokens); the authors' (last eval batch, "
                "padding counted) is not recorded for every run, so the two are not mixed."
            )
    not_paper = runs.drop(on_paper.index)
    if not not_paper.empty:
        vs.append(f"Left out of Ours: {len(not_paper)} runs of another model or data ({_counts(not_paper)}).")
    return kept, on_paper, notes, vs


def _std(s: Stat) -> Stat:
    """Our sample std as a value to set beside the paper's std."""
    return Stat(s.std, math.nan, s.n) if not s.missing and not math.isnan(s.std) else MISSING


def starting_sparsity(df: pd.DataFrame) -> Stat:
    """§4.1.1: the first logged train sparsity (%) of SpikeLoRA runs at V_θ = 0.1 in the rank and lr studies."""
    rows = df[(df["adapter"] == "spike") & df["experiment"].isin(["rank", "lr"])] if not df.empty else df
    if not rows.empty:
        rows = rows[(pd.to_numeric(rows["vth"]) - 0.1).abs() < 1e-9]
    values = []
    for run_dir in rows.get("run_dir", []):
        history = RunDir(run_dir).history()
        # An evaluation before any training (+trainer.eval_on_start=true) is the paper's figure;
        # failing that, the training sparsity of the first logging window.
        start = next((r for r in history if r.get("type") == "eval" and r.get("step") == 0), None)
        key = next(
            (k for k in ("eval_sparsity_reference", "eval_sparsity") if start and start.get(k) is not None), None
        )
        if key is None:
            start = next((r for r in history if r.get("type") == "train_log" and r.get("sparsity") is not None), None)
            key = "sparsity" if start else None
        if key is not None:
            values.append(100.0 * start[key])
    return stat(values)


def _study(tables: dict, df: pd.DataFrame, experiment: str, tasks: tuple[str, ...], paper_of: str, table_fn):
    """Add a study's table (over the runs it shows) to ``tables``; return it, the statistics of its
    paper-setting runs and the notes for its paper-vs-ours table (see :func:`like_for_like`)."""
    kept, on_paper, notes, vs = like_for_like(df, experiment, tasks, paper_of)
    table, _ = table_fn(kept)
    table.notes += notes
    tables[table.name] = table
    _, stats = table_fn(on_paper)
    return table, stats, vs


def _vs_paper(tables: dict, name: str, title: str, entries: list, notes: list[str]) -> None:
    c = comparison(name, title, entries)
    c.notes += notes
    tables[c.name] = c


def build_report(
    results_dir: str | Path,
    out: str | Path,
    expected_seeds: int = 5,
    gap: str = "ref",
    conf_dir: str | Path = DEFAULT_CONF,
) -> Report:
    """Write every table and figure that the runs in ``results_dir`` allow into ``out``."""
    out = Path(out)
    runs: Runs = collect(results_dir, gap=gap)
    df = runs.table
    tables = {}
    all_tasks = tuple(df["task"].dropna().unique()) if "task" in df else ()

    for name, title, experiment, param, grid, label, published in (
        ("table1_rank", "Table 1: rank on CoLA", "rank", "r", paper.RANKS, "r", paper.TABLE1),
        ("table2_lr", "Table 2: learning rate on CoLA", "lr", "lr", paper.LRS, "lr", paper.TABLE2),
    ):
        sweep = partial(
            method_sweep, name=name, title=title, experiment=experiment, param=param, grid=grid, label=label
        )
        t, stats, vs = _study(tables, df, experiment, ("cola",), "glue", sweep)
        entries = []
        for method, metrics in published.items():
            for metric, by_value in metrics.items():
                for v in grid:
                    entries.append((f"{method} {metric} {label}={v:g}", by_value[v], stats[method, v][metric]))
        _vs_paper(tables, f"{t.name}_vs_paper", f"{t.title}: paper vs ours", entries, vs)

    _, s3, vs = _study(tables, df, "glue", paper.GLUE, "glue", glue_table)
    col_of = {
        "cola": "CoLA MCC",
        "sst2": "SST-2 Acc",
        "mrpc_acc": "MRPC Acc",
        "mrpc_f1": "MRPC F1",
        "stsb": "STS-B Pearson",
        "mnli_m": "MNLI-m Acc",
        "qnli": "QNLI Acc",
        "rte": "RTE Acc",
        "qqp": "QQP Acc",
    }
    entries = []
    for method in ("lora", "spike"):
        for key, value in paper.TABLE3[method].items():
            ours = s3[method, "avg"] if key == "avg" else s3[method, col_of[key]]
            entries.append((f"{method} {key}", value, ours))
    for task, value in paper.TABLE3["sparsity"].items():
        entries.append((f"spike sparsity {task}", value, s3["spike", "sparsity", task]))
    _vs_paper(tables, "table3_glue_vs_paper", "Table 3: paper vs ours", entries, vs)

    _, s4, vs = _study(tables, df, "spikegpt", ("subj",), "subj", spikegpt_table)
    entries = [(f"{m} Subj accuracy", v, s4[m]) for m, v in paper.TABLE4.items()]
    _vs_paper(tables, "table4_spikegpt_vs_paper", "Table 4: paper vs ours", entries, vs)

    tables["appendix_hyperparameters"] = hyperparameter_table(Path(conf_dir))
    _, sv, vs = _study(tables, df, "vth", ("cola",), "glue", vth_table)
    entries = []
    for v, (sp, mcc, loss, drop) in paper.VTH_TABLE.items():
        sd_sp, sd_mcc, sd_loss = paper.VTH_TABLE_STD[v]
        entries += [
            (f"V_θ={v:g} sparsity", sp, sv[v]["sparsity"]),
            (f"V_θ={v:g} sparsity std", sd_sp, _std(sv[v]["sparsity"])),
            (f"V_θ={v:g} MCC", mcc, sv[v]["mcc"]),
            (f"V_θ={v:g} MCC std", sd_mcc, _std(sv[v]["mcc"])),
            (f"V_θ={v:g} loss", loss, sv[v]["eval_loss"]),
            (f"V_θ={v:g} loss std", sd_loss, _std(sv[v]["eval_loss"])),
            (f"V_θ={v:g} relative drop", drop, MISSING if sv[v]["drop"] is None else Stat(sv[v]["drop"], math.nan, 1)),
        ]
    entries += [
        ("LoRA MCC", paper.VTH_LORA[0], sv["lora"]["mcc"]),
        ("LoRA MCC std", paper.VTH_LORA_STD[0], _std(sv["lora"]["mcc"])),
        ("LoRA loss", paper.VTH_LORA[1], sv["lora"]["eval_loss"]),
        ("LoRA loss std", paper.VTH_LORA_STD[1], _std(sv["lora"]["eval_loss"])),
    ]
    _vs_paper(tables, "appendix_vth_vs_paper", "Appendix V_θ: paper vs ours", entries, vs)

    _, sd, vs = _study(tables, df, "dropout", ("cola",), "glue", dropout_table)
    entries = []
    for (p, method), (mcc, g) in paper.DROPOUT_TABLE.items():
        sd_mcc, sd_gap = paper.DROPOUT_TABLE_STD[p, method]
        entries += [
            (f"p={p:g} {method} MCC", mcc, sd[p, method]["mcc"]),
            (f"p={p:g} {method} MCC std", sd_mcc, _std(sd[p, method]["mcc"])),
            (f"p={p:g} {method} gap", g, sd[p, method]["gen_gap"]),
            (f"p={p:g} {method} gap std", sd_gap, _std(sd[p, method]["gen_gap"])),
        ]
    for method, (mcc, g) in paper.DROPOUT_POSITIVE.items():
        sd_mcc, sd_gap = paper.DROPOUT_POSITIVE_STD[method]
        entries += [
            (f"p>0 {method} MCC", mcc, sd["> 0", method]["mcc"]),
            (f"p>0 {method} MCC std", sd_mcc, _std(sd["> 0", method]["mcc"])),
            (f"p>0 {method} gap", g, sd["> 0", method]["gen_gap"]),
            (f"p>0 {method} gap std", sd_gap, _std(sd["> 0", method]["gen_gap"])),
        ]
    _vs_paper(tables, "appendix_dropout_vs_paper", "Appendix dropout: paper vs ours", entries, vs)

    # §4.1.1 starting sparsity, §4.2.2 grad-norm mean ± std, §4.2.3 training time: paper model only.
    paper_df = df[df["paper_model"].astype(bool)] if "paper_model" in df else df
    cola_glue = select(select(paper_df, experiment="glue", task="cola"), dropout=0.0)
    minutes = {
        m: stat(pd.to_numeric(select(cola_glue, adapter=m).get("train_runtime_s", pd.Series(dtype=float))) / 60.0)
        for m in ("lora", "spike")
    }
    overhead = (
        Stat(
            100.0 * (minutes["spike"].mean / minutes["lora"].mean - 1.0),
            math.nan,
            min(minutes["spike"].n, minutes["lora"].n),
        )
        if not (minutes["lora"].missing or minutes["spike"].missing)
        else MISSING
    )
    series = gradnorm_series(paper_df)
    grad = {}
    if series is not None:
        for m, x in (("lora", series[0]), ("spike", series[1])):
            grad[m] = (Stat(float(x.mean()), math.nan, 1), Stat(float(x.std(ddof=1)), math.nan, 1))
    start = starting_sparsity(paper_df)
    entries = [("§4.1.1 starting sparsity % (V_θ = 0.1)", paper.STARTING_SPARSITY[0], start)]
    entries.append(("§4.1.1 starting sparsity std", paper.STARTING_SPARSITY[1], _std(start)))
    for m in ("lora", "spike"):
        entries.append(
            (f"§4.2.2 {m} grad norm mean", paper.GRADNORM_MEAN_STD[m][0], grad.get(m, (MISSING, MISSING))[0])
        )
        entries.append((f"§4.2.2 {m} grad norm std", paper.GRADNORM_MEAN_STD[m][1], grad.get(m, (MISSING, MISSING))[1]))
    for m in ("lora", "spike"):
        entries.append((f"§4.2.3 {m} training minutes (CoLA)", paper.TRAINING_MINUTES[m][0], minutes[m]))
    entries.append(("§4.2.3 training-time overhead %", round(paper.TRAINING_OVERHEAD, 1), overhead))
    note = (
        f"Ours: only runs of {PAPER_MODEL_TEXT['glue']}. Starting sparsity: the evaluation at step 0 (else the first "
        "logged train sparsity) of the SpikeLoRA rank and lr runs at V_θ = 0.1; grad norms: the gradnorm pair, one "
        "value per logging window (100 steps, the paper's n ≈ 53); training minutes: train_runtime_s of the GLUE "
        "CoLA runs (hardware-dependent)."
    )
    _vs_paper(tables, "section4_vs_paper", "Section 4 figures: paper vs ours", entries, [note])

    for t in tables.values():
        write_table(t, out / "tables", expected_seeds)

    # Figures, like tables, show one model on one data set per study.
    shown = {e: like_for_like(df, e, all_tasks, "glue")[0] for e in ("vth", "sparsity", "dropout", "gradnorm")}
    figures = (
        vth_figure(shown["vth"], out / "figures")
        + heatmap_figure(shown["sparsity"], out / "figures")
        + dropout_figure(shown["dropout"], out / "figures")
    )
    grad_paths, grad_stats = gradnorm_figure(shown["gradnorm"], out / "figures")
    figures += grad_paths
    # What the sparsity buys: operations and energy per token against unmerged and merged LoRA.
    if "ops" in df and df["ops"].map(lambda o: isinstance(o, dict)).any():
        figures += write_efficiency(df[df["ops"].map(lambda o: isinstance(o, dict))], out / "efficiency")

    _write_page(out, tables, figures, grad_stats, runs, expected_seeds, gap)
    return Report(tables, figures, grad_stats, len(df), runs.excluded)


def _write_page(
    out: Path, tables: dict, figures: list[Path], grad: dict | None, runs: Runs, expected: int, gap: str
) -> None:
    parts = [
        "# SpikeLoRA report",
        "",
        f"{len(runs.table)} complete runs; cells are mean ± sample std over seeds "
        f"(expected {expected}; fewer are marked n=k). Generalisation gap: `gen_gap_{gap}`.",
        "",
    ]
    for t in tables.values():
        parts.append(to_markdown(t, expected))
    if grad:
        parts += [
            "### Gradient norms (LoRA vs SpikeLoRA, same seed)",
            "",
            f"Seed {grad['seed']}, {grad['windows']} logging windows (one value each, the paper's sample): "
            f"Pearson r = {grad['pearson_r']:.3f} (p = {grad['p_value']:.3g}); LoRA {grad['lora_mean']:.3f} ± "
            f"{grad['lora_std']:.3f}, SpikeLoRA {grad['spike_mean']:.3f} ± {grad['spike_std']:.3f}. "
            f"Paper: r = {paper.GRADNORM_PEARSON[0]}, p = {paper.GRADNORM_PEARSON[1]:.3g} (about 53 pairs); "
            f"LoRA {paper.GRADNORM_MEAN_STD['lora'][0]} ± {paper.GRADNORM_MEAN_STD['lora'][1]}, "
            f"SpikeLoRA {paper.GRADNORM_MEAN_STD['spike'][0]} ± {paper.GRADNORM_MEAN_STD['spike'][1]}.",
            "",
        ]
    if figures:
        parts += ["### Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures if p.suffix == ".png"] + [""]
    parts += [
        "---",
        f"Excluded runs (status not complete): {len(runs.excluded)}"
        + ("".join(f"\n- `{d}`: {s}" for d, s in runs.excluded) if runs.excluded else ""),
        "",
    ]
    (out / "report.md").write_text("\n".join(parts), encoding="utf-8")
    summary = {"complete_runs": len(runs.table), "excluded": runs.excluded, "gradnorm": grad}
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")


@dataclass
class VthChoice:
    vth: float | None
    best_mcc: float
    lowest_loss: float
    candidates: list[tuple[float, float, float, bool]]  # (vth, mean MCC, mean loss, admissible)


def select_vth(
    results_dir: str | Path, delta_a: float = 1.0, delta_l: float = 0.05, experiment: str = "vth"
) -> VthChoice:
    """The paper's Eq. 6–7: the largest V_θ with MCC ≥ A* − δ_A and eval loss ≤ L* + δ_L.

    A* is the best mean MCC (percent) and L* the lowest mean eval loss over the V_θ grid. The
    printed Eq. 7 reads L ≥ L* + δ_L, which would admit only the *worst* losses; the intended
    tolerance (and what this implements) is L ≤ L* + δ_L.
    """
    df = select(collect(results_dir).table, experiment=experiment, task="cola", adapter="spike")
    if df.empty:
        raise ValueError(f"No complete SpikeLoRA runs of experiment {experiment!r} on CoLA in {results_dir}.")
    rows = []
    for v, g in df.groupby("vth"):
        rows.append((float(v), stat(g["mcc"]).mean, stat(g["eval_loss"]).mean))
    best = max(r[1] for r in rows if not math.isnan(r[1]))
    lowest = min(r[2] for r in rows if not math.isnan(r[2]))
    candidates = [(v, a, loss, a >= best - delta_a and loss <= lowest + delta_l) for v, a, loss in rows]
    admissible = [v for v, _, _, ok in candidates if ok]
    return VthChoice(max(admissible) if admissible else None, best, lowest, candidates)
