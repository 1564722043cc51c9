"""The report from a small results tree of real tiny-model runs: numbers, formats, figures."""

from __future__ import annotations

import csv
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from inprocess import run_here
from scipy.stats import pearsonr

from spikelora.experiment.record import read_history
from spikelora.report import build_report, select_vth

# Every test here reads the results tree of real tiny runs (about a minute to build): the full suite only.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

# (experiment_name, overrides) — a few optimiser steps each, several seeds and settings.
RUNS = (
    # Enough steps on the rank runs for MCC to move off zero and differ between seeds.
    [
        ("rank", [f"r={r}", f"adapter={a}", f"seed={s}", "trainer.max_steps=24"])
        for r in (1, 2)
        for a in ("lora", "spike")
        for s in (0, 1)
    ]
    + [("lr", [f"lr={lr}", f"adapter={a}"]) for lr in (1e-4, 3e-4) for a in ("lora", "spike")]
    + [("vth", [f"vth={v}", f"seed={s}"]) for v in (0.0, 0.5) for s in (0, 1)]
    + [("vth", ["adapter=lora", f"seed={s}"]) for s in (0, 1)]
    + [
        ("dropout", [f"dropout={p}", f"adapter={a}", f"seed={s}"])
        for p in (0.0, 0.1)
        for a in ("lora", "spike")
        for s in (0, 1)
    ]
    + [("gradnorm", [f"adapter={a}", "trainer.max_steps=8"]) for a in ("lora", "spike")]
    + [("sparsity", ["seed=0"]), ("sparsity", ["seed=1"])]
    + [("glue", [f"adapter={a}"]) for a in ("lora", "spike")]
    + [
        ("spikegpt", ["model=spikegpt_tiny", "task=subj", "task.synthetic=true", f"adapter={a}"])
        for a in ("lora", "spike")
    ]
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    results = root / "results"
    base = ["+experiment=smoke", "trainer.max_steps=3", "trainer.logging_steps=1", "save_adapter=false"]
    for experiment, overrides in RUNS:
        data = [f"task.data_dir={root / 'subj'}"] if "task=subj" in overrides else [f"task.data_dir={root / 'data'}"]
        run_here([*base, *data, f"experiment_name={experiment}", *overrides], root)
    # A run that dies (evaluation batch size 0): recorded as failed, excluded from the tables.
    dies = [f"task.data_dir={root / 'data'}", "experiment_name=rank", "r=4", "trainer.per_device_eval_batch_size=0"]
    with pytest.raises(ValueError):
        run_here([*base, *dies], root)
    out = root / "reports"
    report = build_report(results, out, expected_seeds=2)
    return results, out, report


def direct(results: Path, experiment: str, **where) -> list[dict]:
    """metrics.json of complete runs matching ``where`` (read without the report code)."""
    found = []
    for path in (results / experiment).glob("*/metrics.json"):
        m = json.loads(path.read_text())
        if m["status"] == "complete" and all(
            (abs(m[k] - v) < 1e-12 if isinstance(v, float) else m[k] == v) for k, v in where.items()
        ):
            found.append(m)
    return found


def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def read_csv(path: Path) -> dict[tuple[str, str], dict]:
    with path.open() as f:
        return {(r["row"], r["column"]): r for r in csv.DictReader(f)}


def test_table1_cells_equal_a_direct_computation(tree):
    results, out, _ = tree
    cells = read_csv(out / "tables" / "table1_rank.csv")
    for r in (1, 2):
        col = f"r = {r}"
        per = {}
        for method, label in (("lora", "LoRA"), ("spike", "SpikeLoRA")):
            ms = direct(results, "rank", r=r, adapter=method)
            assert len(ms) == 2
            mcc = mean_std([100 * m["final"]["eval_mcc"] for m in ms])
            gap = mean_std([m["final"]["eval_gen_gap_ref"] for m in ms])
            per[method] = (mcc, gap)
            for row, (mean, std) in ((f"{label} MCC", mcc), (f"{label} Gen. Gap", gap)):
                cell = cells[row, col]
                assert float(cell["mean"]) == pytest.approx(mean, abs=1e-9)
                assert float(cell["std"]) == pytest.approx(std, abs=1e-9)
                assert cell["n"] == "2"
        sparsity = mean_std([100 * m["final"]["eval_sparsity"] for m in direct(results, "rank", r=r, adapter="spike")])
        assert float(cells["SpikeLoRA Sparsity %", col]["mean"]) == pytest.approx(sparsity[0], abs=1e-9)
        diff = float(cells["SpikeLoRA MCC", col]["diff_vs_lora"])
        assert diff == pytest.approx(per["spike"][0][0] - per["lora"][0][0], abs=1e-9)
        bold = [cells[f"{m} MCC", col]["bold"] == "1" for m in ("LoRA", "SpikeLoRA")]
        lora_mcc, spike_mcc = per["lora"][0][0], per["spike"][0][0]
        assert bold == [lora_mcc >= spike_mcc, spike_mcc >= lora_mcc]
    # Ranks without runs say so; the failed r = 4 run is excluded, not counted.
    assert cells["LoRA MCC", "r = 4"]["text"] == "—"
    md = (out / "tables" / "table1_rank.md").read_text()
    assert "| — |" in md and "— no complete runs for this cell." in md and "<sub>" in md


def test_cells_with_fewer_seeds_say_so(tree):
    _, out, _ = tree
    md = (out / "tables" / "table2_lr.md").read_text()
    assert "(n=1)" in md  # one seed per learning rate, two expected
    row = next(line for line in md.splitlines() if line.startswith("| LoRA MCC"))
    assert row.count("(n=1)") == 2 and row.count("—") == 3


def test_glue_table_marks_missing_tasks_and_average(tree):
    results, out, _ = tree
    cells = read_csv(out / "tables" / "table3_glue.csv")
    lora_cola = direct(results, "glue", adapter="lora")[0]["final"]["eval_mcc"] * 100
    assert float(cells["LoRA", "CoLA MCC"]["mean"]) == pytest.approx(lora_cola)
    assert cells["LoRA", "SST-2 Acc"]["text"] == "—"
    assert cells["LoRA", "Avg."]["text"] == "— (1/8 tasks)"


def test_vth_and_dropout_appendix_tables(tree):
    results, out, _ = tree
    cells = read_csv(out / "tables" / "appendix_vth.csv")
    lora = statistics.mean(100 * m["final"]["eval_mcc"] for m in direct(results, "vth", adapter="lora"))
    spike = [m for m in direct(results, "vth", adapter="spike") if m["vth"] == 0.5]
    mcc = statistics.mean(100 * m["final"]["eval_mcc"] for m in spike)
    assert float(cells["V_θ = 0.5", "MCC"]["mean"]) == pytest.approx(mcc)
    loss = statistics.mean(m["final"]["eval_loss"] for m in spike)
    assert float(cells["V_θ = 0.5", "Eval loss"]["mean"]) == pytest.approx(loss)
    drop = cells["V_θ = 0.5", "Relative drop"]["text"]
    if lora != 0:
        assert float(drop) == pytest.approx((lora - mcc) / lora, abs=1e-3)
    else:
        assert drop == "undefined (LoRA MCC = 0)"
    assert cells["V_θ = 1", "MCC"]["text"] == "—"
    dcells = read_csv(out / "tables" / "appendix_dropout.csv")
    gaps = [m["final"]["eval_gen_gap_ref"] for m in direct(results, "dropout", adapter="spike") if m["dropout"] > 0]
    assert float(dcells["p > 0 (pooled) SpikeLoRA", "Gen. Gap"]["mean"]) == pytest.approx(statistics.mean(gaps))
    hyper = read_csv(out / "tables" / "appendix_hyperparameters.csv")
    assert hyper["rte", "Learning rate"]["text"] == "0.0012" and hyper["sst2", "Batch size"]["text"] == "64"


def test_paper_vs_ours_tables(tree):
    results, out, _ = tree
    # The tiny runs are not the paper's model: they fill Table 1 but never the paper-vs-ours column.
    cells = read_csv(out / "tables" / "table1_rank_vs_paper.csv")
    row = "lora mcc r=1"
    assert cells[row, "Paper"]["text"] == "67.68"
    assert cells[row, "Ours"]["text"] == "—" and cells[row, "Ours"]["n"] == "0"
    n_rank = len(direct(results, "rank"))
    md = (out / "tables" / "table1_rank_vs_paper.md").read_text()
    assert f"Left out of Ours: {n_rank} runs of another model or data (tiny-deberta(h64,l2) on " in md
    assert "Runs shown: tiny-deberta(h64,l2)" in (out / "tables" / "table1_rank.md").read_text()
    t4 = (out / "tables" / "table4_spikegpt.md").read_text()
    assert "89.10" in t4 and "95.30" in t4 and "published" in t4
    t4cells = read_csv(out / "tables" / "table4_spikegpt.csv")
    for method, column in (("lora", "LoRA (ours)"), ("spike", "SpikeLoRA (ours)")):
        (m,) = direct(results, "spikegpt", adapter=method)
        assert float(t4cells["Subj", column]["mean"]) == pytest.approx(100 * m["final"]["eval_accuracy"])
    assert t4cells["Subj", "Full FT (ours)"]["text"] == "—"
    vs4 = read_csv(out / "tables" / "table4_spikegpt_vs_paper.csv")
    assert vs4["spike Subj accuracy", "Ours"]["text"] == "—"
    # Values never compared before: the stds, the pooled dropout rows, §4 figures.
    vth = read_csv(out / "tables" / "appendix_vth_vs_paper.csv")
    assert vth["V_θ=2 MCC std", "Paper"]["text"] == "16.8"
    drop = read_csv(out / "tables" / "appendix_dropout_vs_paper.csv")
    assert drop["p>0 spike gap", "Paper"]["text"] == "0.7618"
    sec4 = read_csv(out / "tables" / "section4_vs_paper.csv")
    assert sec4["§4.1.1 starting sparsity % (V_θ = 0.1)", "Paper"]["text"] == "71"
    assert sec4["§4.2.3 training-time overhead %", "Paper"]["text"] == "11.6"
    tex = (out / "tables" / "table1_rank.tex").read_text()
    assert r"\caption{Rank on CoLA}" in tex
    assert r"V\_" not in (out / "tables" / "appendix_vth.tex").read_text()


def test_latex_is_well_formed(tree):
    _, out, report = tree
    for name in report.tables:
        tex = (out / "tables" / f"{name}.tex").read_text()
        assert tex.count("{") == tex.count("}"), name
        for cmd in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}"):
            assert tex.count(cmd) == 1, (name, cmd)
        n_cols = len(re.search(r"\\begin\{tabular\}\{([lc]+)\}", tex).group(1))
        body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
        for line in filter(None, (x.strip() for x in body.splitlines())):
            assert line.endswith(r"\\")
            assert line.count("&") - line.count(r"\&") == n_cols - 1, (name, line)
        assert n_cols == len(report.tables[name].columns) + 1
        assert "%" not in tex.replace(r"\%", "")  # a bare % would comment out the rest of the line
        assert tex.count("$") % 2 == 0


def test_figures_are_written(tree):
    _, out, report = tree
    names = {p.name for p in report.figures}
    for stem in ("fig2_vth", "fig3_sparsity_heatmap", "fig4_gradnorm", "fig5_dropout"):
        for ext in ("png", "pdf"):
            assert f"{stem}.{ext}" in names
            assert (out / "figures" / f"{stem}.{ext}").stat().st_size > 1000
    assert "fig2_vth.png" in (out / "report.md").read_text()


def test_gradnorm_pearson_equals_scipy_on_the_histories(tree):
    results, _, report = tree
    series = {}
    for m in direct(results, "gradnorm"):
        steps = read_history(results / "gradnorm" / m["run_name"] / "history.jsonl")
        # The paper's sample: one value per logging window (this fixture logs every step).
        series[m["adapter"]] = [r["grad_norm"] for r in steps if r["type"] == "train_log"]
    assert len(series["lora"]) == len(series["spike"]) == 8
    r, p = pearsonr(series["lora"], series["spike"])
    assert report.gradnorm["pearson_r"] == pytest.approx(r)
    assert report.gradnorm["p_value"] == pytest.approx(p)
    assert report.gradnorm["windows"] == 8


def test_excluded_runs_are_counted_in_the_footer(tree):
    _, out, report = tree
    assert len(report.excluded) == 1 and report.excluded[0][1] == "failed"
    assert "Excluded runs (status not complete): 1" in (out / "report.md").read_text()
    assert report.n_complete == len(RUNS)


def test_select_vth_follows_eq7_with_the_intended_inequality(tree):
    results, _, _ = tree
    rows = {}
    for m in direct(results, "vth", adapter="spike"):
        rows.setdefault(m["vth"], []).append(m)
    means = {
        v: (
            statistics.mean(100 * m["final"]["eval_mcc"] for m in ms),
            statistics.mean(m["final"]["eval_loss"] for m in ms),
        )
        for v, ms in rows.items()
    }
    best = max(a for a, _ in means.values())
    lowest = min(loss for _, loss in means.values())
    for delta_a, delta_l in ((0.0, 0.0), (100.0, 10.0), (1.0, 0.01)):
        ok = [v for v, (a, loss) in means.items() if a >= best - delta_a and loss <= lowest + delta_l]
        choice = select_vth(results, delta_a, delta_l)
        assert choice.vth == (max(ok) if ok else None)
    assert select_vth(results, 100.0, 10.0).vth == 0.5  # everything admissible: the largest V_θ
    proc = subprocess.run(
        [sys.executable, "-m", "spikelora.report", "select-vth", str(results), "--delta-a", "100", "--delta-l", "10"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "selected V_θ = 0.5" in proc.stdout


def test_report_cli(tree, tmp_path):
    results, _, _ = tree
    proc = subprocess.run(
        [sys.executable, "-m", "spikelora.report", str(results), "--out", str(tmp_path / "r"), "--seeds", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{len(RUNS)} complete runs" in proc.stdout
    md = (tmp_path / "r" / "tables" / "table1_rank.md").read_text()
    assert "(n=2)" in md  # two seeds where five are expected


@pytest.mark.slow
def test_efficiency_table_from_real_runs_equals_their_ops_blocks(tree):
    results, out, _ = tree
    table = pd.read_csv(out / "efficiency" / "efficiency.csv")
    assert (out / "efficiency" / "efficiency.png").stat().st_size > 1000
    runs = [m for m in direct(results, "vth") if m["adapter"] == "spike" and abs(m["vth"] - 0.5) < 1e-12]
    assert runs and all(isinstance(m["ops"], dict) for m in runs)
    row = table[(table["adapter"] == "spike") & (table["vth"] == 0.5) & (table["lr"] == runs[0]["lr"])]
    assert len(row) == 1
    expected = statistics.mean(m["ops"]["adapter_macs"] for m in runs)
    assert row["adapter_macs"].iloc[0] == pytest.approx(expected, rel=1e-9)
    dense = statistics.mean(m["ops"]["adapter_macs_dense"] for m in runs)
    assert expected < dense  # silent units skip B: fewer effective MACs than unmerged LoRA
    merged = table[table["adapter"] == "lora (merged)"]
    assert not merged.empty and (merged["adapter_macs"] == 0).all()
