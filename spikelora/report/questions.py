"""The reviewers' questions (issue 17, ``docs/ablation.md``): what the ablation study measures.

:func:`matched_sparsity` gives the matched controls of ``+experiment=ablation`` (``arm=topk``,
``random``, ``lora_effective``) the sparsity that SpikeLoRA itself reached on each task; the claims
C11 and up (registered in :mod:`.claims`) compare SpikeLoRA with each gate, baseline and control.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .collect import collect
from .ledger import Claim, fill, key_of, no_data, num, one_per_seed
from .stats import directional, equivalence, one_sample, tost

PAPER_VTH = 0.1

# The settings that one SpikeLoRA reference cell must share (besides the seed).
REFERENCE_KEYS = ("model_id", "data_id", "task", "r", "vth", "lr", "dropout", "epochs", "batch_size", "max_steps")


class StudyError(ValueError):
    """The runs on disk cannot give what was asked (too few seeds, mixed settings)."""


def matched_sparsity(
    results_dir: str | Path, min_seeds: int = 5, digits: int = 4, tasks: list[str] | None = None
) -> dict[str, float]:
    """Per task (all of them, or those of ``tasks``), the mean last-evaluation sparsity of the
    SpikeLoRA arm (``adapter == "spike"``: the paper's LIF gate and settings) in ``results_dir``,
    rounded to ``digits``.

    Refuses (``StudyError``) when a task has fewer than ``min_seeds`` complete SpikeLoRA runs, or
    SpikeLoRA runs of more than one setting (the control would be matched to a mixture)."""
    table = collect(results_dir).table
    spike = table[table["adapter"] == "spike"] if not table.empty else table
    if tasks is not None and not spike.empty:
        spike = spike[spike["task"].isin(tasks)]
    if spike.empty:
        where = f" of task {', '.join(tasks)}" if tasks else ""
        raise StudyError(f"no complete SpikeLoRA run{where} in {results_dir}: run its SpikeLoRA arm first.")
    out: dict[str, float] = {}
    for task, rows in spike.groupby("task", sort=True):
        settings = rows[list(REFERENCE_KEYS)].astype(str).drop_duplicates()
        if len(settings) > 1:
            raise StudyError(
                f"{task}: SpikeLoRA runs of {len(settings)} settings in {results_dir} "
                f"({', '.join(sorted(rows['run_name'].astype(str)))}); the matched sparsity needs one."
            )
        values = [float(m["final"]["eval_sparsity"]) for m in rows["record"] if _has_sparsity(m)]
        if len(values) < min_seeds:
            raise StudyError(
                f"{task}: {len(values)} complete SpikeLoRA run(s) with a sparsity in {results_dir}, "
                f"{min_seeds} needed (--min-seeds)."
            )
        out[str(task)] = round(float(np.mean(values)), digits)
    return out


def _has_sparsity(m: dict) -> bool:
    value = (m.get("final") or {}).get("eval_sparsity")
    return isinstance(value, int | float) and not pd.isna(value)


# ------------------------------------------------------------------------------------ claims
# Settings a pair of runs must share besides the seed (the dropout too, unless the claim picks it).
PAIR_KEYS = ("model_id", "data_id", "task", "r", "lr", "epochs", "batch_size", "max_steps")
SENSITIVITY_MARGIN = 1.0  # pp of the main score: a change smaller than this is "insensitive"
NOT_IN_PAPER = "not in the paper"


@dataclass(frozen=True)
class Comparison:
    """One reviewer question as a paired comparison: ``method − other`` on the main score, by seed.

    ``method`` and ``other`` are report labels (:func:`~.collect.method_label`); ``other="lora@best"``
    is LoRA at the dropout with the best mean dev score of its grid. ``kind`` is ``"better"`` (the
    claim is that ``method`` scores higher) or ``"insensitive"`` (|difference| < the margin, TOST)."""

    id: str
    question: str
    claim: str
    method: str
    other: str
    kind: str = "better"


COMPARISONS = (
    Comparison(
        "C11", "Q1", "The LIF gate beats the learnable ANN gate ReLU(h − θ) at the same θ", "spike", "spike:relu"
    ),
    Comparison(
        "C12",
        "Q2",
        "The surrogate gradient matters: the LIF gate beats its own forward with the mask detached (h ⊙ 1[h ≥ θ])",
        "spike",
        "spike:threshold",
    ),
    Comparison("C13", "Q2", "The binary gate beats a continuous one, h ⊙ σ((h − θ)/t)", "spike", "spike:sigmoid"),
    Comparison("C14", "Q1", "The LIF gate beats per-token top-k at matched sparsity", "spike", "spike:topk"),
    Comparison(
        "C15",
        "intro",
        "Learned suppression beats random rank dropout at SpikeLoRA's measured rate",
        "spike",
        "spike:random",
    ),
    Comparison("C16", "Q4", "SpikeLoRA beats LoRA at LoRA's best dropout (chosen on dev)", "spike", "lora@best"),
    Comparison(
        "C17",
        "control",
        "SpikeLoRA beats LoRA at its effective rank round(r(1 − s)): the same B-side operations",
        "spike",
        "lora_effective",
    ),
    Comparison("C18", "Q5", "SpikeLoRA beats DoRA", "spike", "dora"),
    Comparison("C19", "Q5", "SpikeLoRA beats AdaLoRA", "spike", "adalora"),
    Comparison(
        "C20", "Eq. 5", "The LIF gate improves AdaLoRA (SpikeLoRA × AdaLoRA beats AdaLoRA)", "spike_adalora", "adalora"
    ),
    Comparison(
        "C21", "Q3", "Temporal dynamics help: the temporal LIF beats the one-step gate", "spike[temporal]", "spike"
    ),
    Comparison("C22", "Q7", "A learnable V_θ beats the fixed V_θ", "spike[learnable_vth]", "spike"),
    Comparison(
        "C23a",
        "Q8",
        f"The temporal LIF is insensitive to the reset: soft vs hard within ±{SENSITIVITY_MARGIN:g} pp",
        "spike[temporal,soft_reset]",
        "spike[temporal]",
        kind="insensitive",
    ),
    Comparison(
        "C23b",
        "Q8",
        f"The temporal LIF is insensitive to τ: 4 vs 2 within ±{SENSITIVITY_MARGIN:g} pp",
        "spike[temporal,tau4]",
        "spike[temporal]",
        kind="insensitive",
    ),
)


def _rows(df: pd.DataFrame, label: str) -> pd.DataFrame:
    rows = df[df["adapter"] == label]
    if label.startswith("spike") and not rows.empty and "vth" in rows:
        # SpikeLoRA's gates at the paper's V_θ; a gate without one (topk, random) has vth None.
        vth = pd.to_numeric(rows["vth"], errors="coerce")
        rows = rows[vth.isna() | ((vth - PAPER_VTH).abs() < 1e-9)]
    return rows


def _cell_key(row: pd.Series, with_dropout: bool) -> tuple:
    return key_of(row, PAIR_KEYS + (("dropout",) if with_dropout else ()))


def _best_lora(lora: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple, str]]:
    """LoRA's runs at the dropout with the best mean main score per settings cell, and, per cell
    (its key without dropout), what was chosen."""
    chosen, notes = [], {}
    for key, rows in _group(lora, False).items():  # the cells the claim then pairs by
        cell = pd.DataFrame(rows)
        means = cell.groupby("dropout")["main"].mean().dropna()
        if len(means) < 2:  # one dropout is no choice: not "LoRA at its best dropout"
            continue
        best = float(means.idxmax())
        chosen.append(cell[(cell["dropout"] - best).abs() < 1e-12])
        grid = ", ".join(f"p{float(p):g}: {m:.2f}" for p, m in means.items())
        notes[key] = f"LoRA's dropout grid on dev ({grid}) → p{best:g}"
    if not chosen:
        return lora.iloc[0:0], {}
    return pd.concat(chosen), notes


def _sparsities(rows: list[pd.Series]) -> np.ndarray:
    """Each run's eval sparsity, NaN where it has none (0 % is a measurement, kept as 0)."""
    values = (num(r.get("sparsity")) for r in rows)
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _describe(label: str, rows: list[pd.Series]) -> str:
    main = np.array([r["main"] for r in rows], dtype=float)
    sp = _sparsities(rows)
    text = f"{label} {main.mean():.2f} ± {main.std(ddof=1) if len(main) > 1 else float('nan'):.2f} (median {np.median(main):.2f}"
    if np.isfinite(sp).any():
        text += f", sparsity {np.nanmean(sp):.1f} %"
    return text + ")"


def _matching(comp: Comparison, method_rows: list[pd.Series], other_rows: list[pd.Series]) -> str:
    """How closely a matched control matched: its sparsity (or rate, or rank) against SpikeLoRA's."""
    if comp.other not in ("spike:topk", "spike:random", "lora_effective"):
        return ""
    spike = np.nanmean(_sparsities(method_rows))

    def adapter(r: pd.Series) -> dict:
        return ((r["record"].get("provenance") or {}).get("canonical_config") or {}).get("adapter") or {}

    if comp.other == "lora_effective":
        ranks = sorted(
            {m.get("effective_r") or r["record"].get("effective_r") for r in other_rows for m in [adapter(r)]} - {None}
        )
        of = sorted({adapter(r).get("effective_of") for r in other_rows} - {None})
        return f" Matched: effective_of {', '.join(f'{v:g}' for v in of)} (SpikeLoRA's eval sparsity here: {spike:.1f} %){f', rank {ranks}' if ranks else ''}."
    target = sorted({adapter(r).get("target_sparsity") for r in other_rows} - {None})
    achieved = np.nanmean(_sparsities(other_rows))
    what = "training drop rate" if comp.other == "spike:random" else "target sparsity"
    return (
        f" Matched: {what} {', '.join(f'{100 * v:.1f} %' for v in target)} against SpikeLoRA's eval sparsity "
        f"{spike:.1f} %; the control's own eval sparsity {achieved:.1f} %"
        + (" (random drops in training only)" if comp.other == "spike:random" else " (k is an integer of r)")
        + "."
    )


def _comparison_claims(df: pd.DataFrame, comp: Comparison) -> list[Claim]:
    base = dict(
        id=comp.id,
        claim=comp.claim,
        source=f"{comp.question} (docs/ablation.md)",
        paper=NOT_IN_PAPER,
        paper_effect=None,
        ours="",
        test=(
            f"TOST (±{SENSITIVITY_MARGIN:g} pp) on the per-seed difference; paired t + Wilcoxon signed-rank"
            if comp.kind == "insensitive"
            else "paired t + Wilcoxon signed-rank on the per-seed difference of the main dev score (last evaluation)"
        ),
    )
    method = _rows(df, comp.method)
    if comp.other == "lora@best":
        other, chose = _best_lora(df[df["adapter"] == "lora"])
        same_dropout = False
        if other.empty and not method.empty:
            return no_data(Claim(**base), "no LoRA settings cell with runs at two or more dropouts to choose from")
    else:
        other, chose = _rows(df, comp.other), {}
        same_dropout = True
    if method.empty or other.empty:
        missing = [lab for lab, rows in ((comp.method, method), (comp.other, other)) if rows.empty]
        return no_data(Claim(**base), f"no complete runs of {' and '.join(missing)}")
    out = []
    other_cells = {}
    for _, row in other.iterrows():
        other_cells.setdefault(_cell_key(row, same_dropout), []).append(row)
    for key, rows in sorted(_group(method, same_dropout).items(), key=lambda kv: str(kv[0])):
        if key not in other_cells:
            continue
        a = one_per_seed(pd.DataFrame(rows))
        b = one_per_seed(pd.DataFrame(other_cells[key]))
        seeds = sorted(s for s in set(a) & set(b) if num(a[s]["main"]) is not None and num(b[s]["main"]) is not None)
        if not seeds:
            continue
        c = Claim(**base)
        d = [float(a[s]["main"]) - float(b[s]["main"]) for s in seeds]
        est = one_sample(d)
        mrows, orows = [a[s] for s in seeds], [b[s] for s in seeds]
        c.ours = f"{_describe(comp.method, mrows)} vs {_describe(comp.other, orows)}; {len(seeds)} seed pairs ({', '.join(map(str, seeds))}), last evaluation, dev set"
        c.group = " · ".join(f"{k}={v}" for k, v in zip(PAIR_KEYS, key))
        c.note = (f"{chose[key]}." if key in chose else "") + _matching(comp, mrows, orows)
        c.runs = sorted({str(r["run_dir"]) for r in mrows + orows})
        if comp.kind == "insensitive":
            out.append(fill(c, est, equivalence(est, tost(d, SENSITIVITY_MARGIN), SENSITIVITY_MARGIN)))
        else:
            out.append(fill(c, est, directional(est, +1)))
    return out or no_data(Claim(**base), f"no {comp.method} and {comp.other} runs share settings and a seed")


def _group(rows: pd.DataFrame, with_dropout: bool) -> dict[tuple, list[pd.Series]]:
    out: dict[tuple, list[pd.Series]] = {}
    for _, row in rows.iterrows():
        out.setdefault(_cell_key(row, with_dropout), []).append(row)
    return out


def _comparison(comp: Comparison):
    def judge(df: pd.DataFrame) -> list[Claim]:
        return _comparison_claims(df, comp)

    judge.__name__ = f"{comp.id.lower()}_{comp.method}_vs_{comp.other}"
    return judge


def c24_sign_share(df: pd.DataFrame) -> list[Claim]:
    """How much of the one-step LIF gate's sparsity the sign alone gives: the share of its zeros
    that are negative activations (``eval_sparsity_negative`` / ``eval_sparsity``)."""
    base = dict(
        id="C24",
        claim="Most of SpikeLoRA's zeros are the sign alone: negative activations (what two-sided firing would keep)",
        source="issue 17, two-sided firing (docs/ablation.md)",
        paper=NOT_IN_PAPER,
        paper_effect=None,
        ours="",
        test="one-sample t + Wilcoxon of the per-seed share of zeros with h < 0, against 50 %",
    )
    spike = _rows(df, "spike")
    out = []
    cells: dict[tuple, list[pd.Series]] = {}
    for _, row in spike.iterrows():
        cells.setdefault(key_of(row, REFERENCE_KEYS), []).append(row)
    for key, cell in sorted(cells.items(), key=lambda kv: str(kv[0])):
        rows = pd.DataFrame(cell)
        shares, runs = [], []
        for _, r in one_per_seed(rows).items():
            final = r["record"].get("final") or {}
            neg, zeros = num(final.get("eval_sparsity_negative")), num(final.get("eval_sparsity"))
            if neg is not None and zeros:
                shares.append(100.0 * neg / zeros)
                runs.append(str(r["run_dir"]))
        if not shares:
            continue
        c = Claim(**base)
        est = one_sample(shares, mu0=50.0)
        c.ours = f"{np.mean(shares):.1f} % of the zeros are negative activations (median {np.median(shares):.1f} %, {len(shares)} seeds)"
        c.group = " · ".join(f"{k}={v}" for k, v in zip(REFERENCE_KEYS, key))
        c.runs = runs
        out.append(fill(c, est, directional(est, +1)))
    return out or no_data(Claim(**base), "no SpikeLoRA runs that recorded eval_sparsity_negative")


QUESTIONS: list[Callable[[pd.DataFrame], list[Claim]]] = [*(_comparison(c) for c in COMPARISONS), c24_sign_share]
