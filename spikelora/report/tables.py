"""The paper's tables from collected runs, rendered as Markdown, LaTeX (booktabs) and CSV.

Every cell is mean ± sample std over the seeds present; a cell with fewer seeds than expected
says ``(n=k)``; a cell without runs holds an em dash (—), explained in a footnote. SpikeLoRA cells carry their signed
difference to LoRA as a subscript; the best score of each column is bold.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from . import paper
from .collect import MISSING, Stat, select, stat

METHOD_NAMES = {"lora": "LoRA", "spike": "SpikeLoRA", "full": "Full FT"}
EMPTY = "—"  # a cell without runs
EMPTY_NOTE = "— no complete runs for this cell."


@dataclass
class Cell:
    stat: Stat | None = None
    text: str | None = None
    diff: float | None = None
    bold: bool = False
    digits: int = 2


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ rendering
def _num(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def _cell_md(cell: Cell, expected: int) -> str:
    if cell.text is not None:
        return cell.text
    s = cell.stat
    if s is None or s.missing:
        return EMPTY
    body = _num(s.mean, cell.digits) + (f" ± {_num(s.std, cell.digits)}" if not math.isnan(s.std) else "")
    if cell.bold:
        body = f"**{body}**"
    if cell.diff is not None and not math.isnan(cell.diff):
        body += f"<sub>{cell.diff:+.{cell.digits}f}</sub>"
    if s.n < expected:
        body += f" (n={s.n})"
    return body


_LATEX_ESCAPES = {
    "%": r"\%",
    "&": r"\&",
    "_": r"\_",
    "#": r"\#",
    "*": r"$^{*}$",
    "±": r"$\pm$",
    "θ": r"$\theta$",
    "—": "---",
    "–": "--",
    "−": r"$-$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    ">": r"$>$",
    "<": r"$<$",
}


def _latex_text(text: str) -> str:
    """Plain text for LaTeX: special characters escaped, ``V_θ`` set as math ($V_\theta$)."""
    return r"$V_\theta$".join("".join(_LATEX_ESCAPES.get(ch, ch) for ch in part) for part in text.split("V_θ"))


_CAPTION_PREFIX = re.compile(r"^(Table \d+|Appendix(?: [A-Za-z_θ]+)?)\s*:\s*")


def latex_caption(title: str) -> str:
    """The caption text: the title without its "Table 1:" / "Appendix:" prefix (LaTeX numbers tables)."""
    text = _CAPTION_PREFIX.sub("", title)
    return _latex_text(text[:1].upper() + text[1:])


def _cell_latex(cell: Cell, expected: int) -> str:
    if cell.text is not None:
        return _latex_text(cell.text)
    s = cell.stat
    if s is None or s.missing:
        return "---"
    body = _num(s.mean, cell.digits) + (rf" \pm {_num(s.std, cell.digits)}" if not math.isnan(s.std) else "")
    if cell.bold:
        body = rf"\mathbf{{{body}}}"
    if cell.diff is not None and not math.isnan(cell.diff):
        body += f"_{{{cell.diff:+.{cell.digits}f}}}"
    out = f"${body}$"
    if s.n < expected:
        out += rf" {{\scriptsize (n={s.n})}}"
    return out


def to_markdown(table: Table, expected: int) -> str:
    lines = [f"### {table.title}", "", "| " + " | ".join(["", *table.columns]) + " |"]
    lines.append("|" + "---|" * (len(table.columns) + 1))
    empty = False
    for label, cells in table.rows:
        rendered = [_cell_md(c, expected) for c in cells]
        empty |= any(r.startswith(EMPTY) for r in rendered)
        lines.append("| " + " | ".join([label, *rendered]) + " |")
    lines += ["", *table.notes]
    if empty:
        lines.append(EMPTY_NOTE)
    return "\n".join(lines).rstrip() + "\n"


def to_latex(table: Table, expected: int) -> str:
    spec = "l" + "c" * len(table.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(["", *(_latex_text(c) for c in table.columns)]) + r" \\",
        r"\midrule",
    ]
    empty = False
    for label, cells in table.rows:
        rendered = [_cell_latex(c, expected) for c in cells]
        empty |= any(r.startswith("---") for r in rendered)
        lines.append(" & ".join([_latex_text(label), *rendered]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = [*table.notes, *([EMPTY_NOTE] if empty else [])]
    if notes:
        lines.append(r"\par\smallskip{\footnotesize " + r" \\ ".join(_latex_text(n) for n in notes) + "}")
    lines += [rf"\caption{{{latex_caption(table.title)}}}"]
    lines += [rf"\label{{tab:{table.name}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["table", "row", "column", "mean", "std", "n", "diff_vs_lora", "bold", "text"])
    for label, cells in table.rows:
        for col, cell in zip(table.columns, cells):
            s = cell.stat or MISSING
            w.writerow(
                [
                    table.name,
                    label,
                    col,
                    "" if s.missing else s.mean,
                    "" if math.isnan(s.std) else s.std,
                    s.n,
                    "" if cell.diff is None or math.isnan(cell.diff) else cell.diff,
                    int(cell.bold),
                    cell.text if cell.text is not None else (EMPTY if s.missing else ""),
                ]
            )
    return buf.getvalue()


def write_table(table: Table, out: Path, expected: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{table.name}.md").write_text(to_markdown(table, expected), encoding="utf-8")
    (out / f"{table.name}.tex").write_text(to_latex(table, expected), encoding="utf-8")
    (out / f"{table.name}.csv").write_text(to_csv(table), encoding="utf-8")


# ------------------------------------------------------------------------------------ helpers
def _values(df: pd.DataFrame, column: str, grid: tuple) -> list:
    """The paper's grid and any other value present in the runs, in ascending order."""
    present = sorted({float(v) for v in df[column].dropna()}) if column in df and not df.empty else []
    extra = [v for v in present if not any(abs(v - g) <= 1e-12 * max(1, abs(g)) for g in grid)]
    return sorted([*grid, *extra])


def _fmt_param(v) -> str:
    return f"{v:g}"


def _diff(a: Stat, b: Stat) -> float:
    return a.mean - b.mean if not (a.missing or b.missing) else math.nan


def _bold_best(cells: list[Cell], higher: bool = True) -> None:
    present = [c for c in cells if c.stat is not None and not c.stat.missing]
    if len(present) < 2:
        return
    best = max(c.stat.mean if higher else -c.stat.mean for c in present)
    for c in present:  # ties are all bold
        c.bold = (c.stat.mean if higher else -c.stat.mean) == best


# ------------------------------------------------------------------------------------ tables 1, 2
def method_sweep(df: pd.DataFrame, *, name: str, title: str, experiment: str, param: str, grid: tuple, label: str):
    """LoRA vs SpikeLoRA over one hyperparameter on CoLA (Tables 1 and 2)."""
    runs = select(df, experiment=experiment, task="cola")
    values = _values(runs, param, grid)
    columns = [f"{label} = {_fmt_param(v)}" for v in values]
    grid_stats = {}
    for method in ("lora", "spike"):
        for v in values:
            sub = select(runs, adapter=method, **{param: float(v) if param != "r" else int(v)})
            grid_stats[method, v] = {k: stat(sub[k]) if k in sub else MISSING for k in ("mcc", "gen_gap", "sparsity")}
    rows = []
    mcc_lora = [Cell(grid_stats["lora", v]["mcc"]) for v in values]
    mcc_spike = [
        Cell(grid_stats["spike", v]["mcc"], diff=_diff(grid_stats["spike", v]["mcc"], grid_stats["lora", v]["mcc"]))
        for v in values
    ]
    for a, b in zip(mcc_lora, mcc_spike):
        _bold_best([a, b])
    rows.append(("LoRA MCC", mcc_lora))
    rows.append(("LoRA Gen. Gap", [Cell(grid_stats["lora", v]["gen_gap"]) for v in values]))
    rows.append(("SpikeLoRA MCC", mcc_spike))
    rows.append(
        (
            "SpikeLoRA Gen. Gap",
            [
                Cell(
                    grid_stats["spike", v]["gen_gap"],
                    diff=_diff(grid_stats["spike", v]["gen_gap"], grid_stats["lora", v]["gen_gap"]),
                )
                for v in values
            ],
        )
    )
    rows.append(("SpikeLoRA Sparsity %", [Cell(grid_stats["spike", v]["sparsity"]) for v in values]))
    return Table(name, title, columns, rows), grid_stats


# ------------------------------------------------------------------------------------ table 3
GLUE_COLUMNS = [
    ("CoLA MCC", "cola", "mcc"),
    ("SST-2 Acc", "sst2", "accuracy"),
    ("MRPC Acc", "mrpc", "accuracy"),
    ("MRPC F1", "mrpc", "f1"),
    ("STS-B Pearson", "stsb", "pearson"),
    ("MNLI-m Acc", "mnli", "acc_m"),
    ("MNLI-mm Acc", "mnli", "acc_mm"),
    ("QNLI Acc", "qnli", "accuracy"),
    ("RTE Acc", "rte", "accuracy"),
    ("QQP Acc", "qqp", "accuracy"),
]
# The paper's average takes one score per task: MRPC accuracy, MNLI matched (checked against its 88.36).
AVG_COLUMNS = {"CoLA MCC", "SST-2 Acc", "MRPC Acc", "STS-B Pearson", "MNLI-m Acc", "QNLI Acc", "RTE Acc", "QQP Acc"}


def glue_table(df: pd.DataFrame, experiment: str = "glue"):
    runs = select(df, experiment=experiment)
    stats: dict = {}
    for method in ("lora", "spike"):
        for col, task, metric in GLUE_COLUMNS:
            sub = select(runs, adapter=method, task=task)
            stats[method, col] = stat(sub[metric]) if metric in sub else MISSING
        for task in paper.GLUE:
            sub = select(runs, adapter=method, task=task)
            stats[method, "sparsity", task] = stat(sub["sparsity"]) if "sparsity" in sub else MISSING
    columns = [c for c, _, _ in GLUE_COLUMNS] + ["Avg."]
    rows = []
    per_method = {}
    for method in ("lora", "spike"):
        cells = []
        for col, _, _ in GLUE_COLUMNS:
            diff = _diff(stats["spike", col], stats["lora", col]) if method == "spike" else None
            cells.append(Cell(stats[method, col], diff=diff))
        avg_parts = [stats[method, c] for c in AVG_COLUMNS]
        have = sum(not s.missing for s in avg_parts)
        if have == len(AVG_COLUMNS):
            avg = Stat(sum(s.mean for s in avg_parts) / len(avg_parts), math.nan, min(s.n for s in avg_parts))
            stats[method, "avg"] = avg
            cells.append(Cell(avg))
        else:
            stats[method, "avg"] = MISSING
            cells.append(Cell(text=f"{EMPTY} ({have}/{len(AVG_COLUMNS)} tasks)"))
        per_method[method] = cells
    for i in range(len(columns)):
        _bold_best([per_method["lora"][i], per_method["spike"][i]])
    rows.append(("LoRA", per_method["lora"]))
    rows.append(("SpikeLoRA", per_method["spike"]))
    sparsity_cells = []
    for _col, task, metric in GLUE_COLUMNS:
        if metric == "f1" or metric == "acc_mm":
            sparsity_cells.append(Cell(text=""))
        else:
            sparsity_cells.append(Cell(stats["spike", "sparsity", task]))
    sp = [stats["spike", "sparsity", t] for t in paper.GLUE]
    if all(not s.missing for s in sp):
        stats["spike", "sparsity", "avg"] = Stat(sum(s.mean for s in sp) / len(sp), math.nan, min(s.n for s in sp))
        sparsity_cells.append(Cell(stats["spike", "sparsity", "avg"]))
    else:
        stats["spike", "sparsity", "avg"] = MISSING
        sparsity_cells.append(Cell(text=f"{EMPTY} ({sum(not s.missing for s in sp)}/8 tasks)"))
    rows.append(("SpikeLoRA Sparsity %", sparsity_cells))
    notes = [
        "Avg. = mean of one score per task (MRPC accuracy, STS-B Pearson, MNLI matched), as in the paper; "
        "its ± is omitted (a mean of means)."
    ]
    return Table("table3_glue", "Table 3: GLUE, LoRA vs SpikeLoRA (r = 8, V_θ = 0.1)", columns, rows, notes), stats


# ------------------------------------------------------------------------------------ table 4
def spikegpt_table(df: pd.DataFrame, experiment: str = "spikegpt"):
    runs = select(df, experiment=experiment, task="subj")
    stats = {
        m: stat(select(runs, adapter=m)["accuracy"]) if "accuracy" in runs else MISSING
        for m in ("full", "lora", "spike")
    }
    columns = [*paper.TABLE4_PUBLISHED, "Full FT (ours)", "LoRA (ours)", "SpikeLoRA (ours)"]
    cells = [Cell(text=f"{v:.2f}") for v in paper.TABLE4_PUBLISHED.values()]
    cells += [Cell(stats["full"]), Cell(stats["lora"]), Cell(stats["spike"], diff=_diff(stats["spike"], stats["lora"]))]
    notes = ["* published by Zhu et al. (2024), SpikeGPT trained from scratch / fully fine-tuned; not re-run here."]
    return Table(
        "table4_spikegpt", "Table 4: SpikeGPT-216M on Subj (accuracy %)", columns, [("Subj", cells)], notes
    ), stats


# ------------------------------------------------------------------------------------ appendix
def hyperparameter_table(conf_dir: Path) -> Table:
    rows = []
    for path in sorted((conf_dir / "task").glob("*.yaml")):
        t = OmegaConf.load(path)
        rows.append((t.name, [Cell(text=f"{t.lr:g}"), Cell(text=str(t.batch_size)), Cell(text=str(t.epochs))]))
    return Table(
        "appendix_hyperparameters",
        "Hyperparameters per task (conf/task)",
        ["Learning rate", "Batch size", "Epochs"],
        rows,
    )


def vth_table(df: pd.DataFrame, experiment: str = "vth"):
    runs = select(df, experiment=experiment, task="cola")
    spike = select(runs, adapter="spike")
    values = _values(spike, "vth", paper.VTHS)
    lora = select(runs, adapter="lora")
    lora_mcc = stat(lora["mcc"]) if "mcc" in lora else MISSING
    stats = {}
    rows = []
    for v in values:
        sub = select(spike, vth=float(v))
        s = {k: stat(sub[k]) if k in sub else MISSING for k in ("sparsity", "mcc", "eval_loss")}
        # Relative MCC drop against the LoRA baseline, per the paper's appendix (a fraction).
        if lora_mcc.missing or s["mcc"].missing:
            drop, drop_text = None, EMPTY
        elif lora_mcc.mean == 0:
            drop, drop_text = None, "undefined (LoRA MCC = 0)"
        else:
            drop = (lora_mcc.mean - s["mcc"].mean) / lora_mcc.mean
            drop_text = f"{drop:.3f}"
        stats[v] = {**s, "drop": drop}
        rows.append(
            (
                f"V_θ = {v:g}",
                [
                    Cell(s["sparsity"]),
                    Cell(s["mcc"]),
                    Cell(s["eval_loss"], digits=3),
                    Cell(text=drop_text),
                ],
            )
        )
    stats["lora"] = {"mcc": lora_mcc, "eval_loss": stat(lora["eval_loss"]) if "eval_loss" in lora else MISSING}
    rows.append(("LoRA", [Cell(text="–"), Cell(lora_mcc), Cell(stats["lora"]["eval_loss"], digits=3), Cell(text="–")]))
    table = Table(
        "appendix_vth",
        "Appendix: V_θ on CoLA (SpikeLoRA, r = 8)",
        ["Sparsity %", "MCC", "Eval loss", "Relative drop"],
        rows,
        ["Relative drop = (MCC_LoRA − MCC) / MCC_LoRA."],
    )
    return table, stats


def dropout_table(df: pd.DataFrame, experiment: str = "dropout"):
    runs = select(df, experiment=experiment, task="cola")
    values = _values(runs, "dropout", paper.DROPOUTS)
    stats = {}
    rows = []
    for v in [*values, "> 0"]:
        for method in ("lora", "spike"):
            if v == "> 0":  # all positive dropout rates pooled, as the paper's last rows
                sub = select(runs, adapter=method)
                if not sub.empty:
                    sub = sub[pd.to_numeric(sub["dropout"], errors="coerce") > 0]
            else:
                sub = select(runs, adapter=method, dropout=float(v))
            s = {k: stat(sub[k]) if k in sub else MISSING for k in ("mcc", "gen_gap")}
            stats[v, method] = s
            rows.append(
                (
                    f"{'p > 0 (pooled)' if isinstance(v, str) else f'p = {v:g}'} {METHOD_NAMES[method]}",
                    [Cell(s["mcc"]), Cell(s["gen_gap"], digits=4)],
                )
            )
    return Table("appendix_dropout", "Appendix: adapter dropout on CoLA (r = 8)", ["MCC", "Gen. Gap"], rows), stats


# ------------------------------------------------------------------------------------ paper vs ours
def comparison(name: str, title: str, entries: list[tuple[str, float | None, Stat]]) -> Table:
    """One row per published value: paper, ours, difference, within the seed spread."""
    rows = []
    for label, published, ours in entries:
        if ours.missing or published is None:
            diff = within = EMPTY if ours.missing else "–"
        else:
            d = ours.mean - published
            diff = f"{d:+.2f}"
            within = "n/a (1 seed)" if math.isnan(ours.std) else ("yes" if abs(d) <= ours.std else "no")
        rows.append(
            (
                label,
                [
                    Cell(text="–" if published is None else f"{published:g}"),
                    Cell(ours),
                    Cell(text=diff),
                    Cell(text=within),
                ],
            )
        )
    return Table(
        name,
        title,
        ["Paper", "Ours", "Ours − paper", "Within ±1 std"],
        rows,
        ["Paper values are the published constants of the SpikeLoRA paper; ours are mean ± std over seeds."],
    )
