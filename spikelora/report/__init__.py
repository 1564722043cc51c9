"""``python -m spikelora.report [RESULTS_DIR] --out reports/``: the paper's tables and figures from results/.

Reads every complete run under ``RESULTS_DIR/<experiment_name>/``; the studies are found by
their experiment names (``rank``, ``lr``, ``glue``, ``spikegpt``, ``vth``, ``dropout``,
``sparsity``, ``gradnorm``: the ``conf/experiment`` files set them). Writes each table as
``.md``, ``.tex`` (booktabs) and ``.csv``, each figure as ``.png`` and ``.pdf``, a paper-vs-ours
table beside each table, and ``report.md`` with everything in one page.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..confdir import CONF_DIR
from . import paper
from .collect import Runs, collect, select, stat
from .figures import dropout_figure, gradnorm_figure, heatmap_figure, vth_figure
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

    t1, s1 = method_sweep(
        df, name="table1_rank", title="Table 1: rank on CoLA", experiment="rank", param="r", grid=paper.RANKS, label="r"
    )
    t2, s2 = method_sweep(
        df,
        name="table2_lr",
        title="Table 2: learning rate on CoLA",
        experiment="lr",
        param="lr",
        grid=paper.LRS,
        label="lr",
    )
    tables[t1.name], tables[t2.name] = t1, t2
    for t, stats, grid, published, label in (
        (t1, s1, paper.RANKS, paper.TABLE1, "r"),
        (t2, s2, paper.LRS, paper.TABLE2, "lr"),
    ):
        entries = []
        for method, metrics in published.items():
            for metric, by_value in metrics.items():
                for v in grid:
                    entries.append((f"{method} {metric} {label}={v:g}", by_value[v], stats[method, v][metric]))
        c = comparison(f"{t.name}_vs_paper", f"{t.title}: paper vs ours", entries)
        tables[c.name] = c

    t3, s3 = glue_table(df)
    tables[t3.name] = t3
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
    tables["table3_glue_vs_paper"] = comparison("table3_glue_vs_paper", "Table 3: paper vs ours", entries)

    t4, s4 = spikegpt_table(df)
    tables[t4.name] = t4
    tables["table4_spikegpt_vs_paper"] = comparison(
        "table4_spikegpt_vs_paper",
        "Table 4: paper vs ours",
        [(f"{m} Subj accuracy", v, s4[m]) for m, v in paper.TABLE4.items()],
    )

    tables["appendix_hyperparameters"] = hyperparameter_table(Path(conf_dir))
    tv, sv = vth_table(df)
    tables[tv.name] = tv
    entries = []
    for v, (sp, mcc, loss, _drop) in paper.VTH_TABLE.items():
        entries += [
            (f"V_θ={v:g} sparsity", sp, sv[v]["sparsity"]),
            (f"V_θ={v:g} MCC", mcc, sv[v]["mcc"]),
            (f"V_θ={v:g} loss", loss, sv[v]["eval_loss"]),
        ]
    entries += [
        ("LoRA MCC", paper.VTH_LORA[0], sv["lora"]["mcc"]),
        ("LoRA loss", paper.VTH_LORA[1], sv["lora"]["eval_loss"]),
    ]
    tables["appendix_vth_vs_paper"] = comparison("appendix_vth_vs_paper", "Appendix V_θ: paper vs ours", entries)
    td, sd = dropout_table(df)
    tables[td.name] = td
    entries = []
    for (p, method), (mcc, g) in paper.DROPOUT_TABLE.items():
        entries += [
            (f"p={p:g} {method} MCC", mcc, sd[p, method]["mcc"]),
            (f"p={p:g} {method} gap", g, sd[p, method]["gen_gap"]),
        ]
    tables["appendix_dropout_vs_paper"] = comparison(
        "appendix_dropout_vs_paper", "Appendix dropout: paper vs ours", entries
    )

    for t in tables.values():
        write_table(t, out / "tables", expected_seeds)

    figures = (
        vth_figure(df, out / "figures") + heatmap_figure(df, out / "figures") + dropout_figure(df, out / "figures")
    )
    grad_paths, grad_stats = gradnorm_figure(df, out / "figures")
    figures += grad_paths

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
            f"Seed {grad['seed']}, {grad['steps']} optimiser steps: Pearson r = {grad['pearson_r']:.3f} "
            f"(p = {grad['p_value']:.3g}); LoRA {grad['lora_mean']:.3f} ± {grad['lora_std']:.3f}, "
            f"SpikeLoRA {grad['spike_mean']:.3f} ± {grad['spike_std']:.3f}. "
            f"Paper: r = {paper.GRADNORM_PEARSON[0]}, p = {paper.GRADNORM_PEARSON[1]:.3g}.",
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
