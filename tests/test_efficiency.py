"""Efficiency table and figure from ops blocks of real tiny-model runs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from builders import DEBERTA_TARGETS, randomise_b, spike_config, tiny_deberta_config
from peft import LoraConfig, get_peft_model
from transformers import DebertaV2ForSequenceClassification

import spikelora
from spikelora.report.efficiency import (
    MERGED,
    efficiency_figure,
    efficiency_table,
    pareto_front,
    write_efficiency,
)

VTHS = (0.0, 0.1, 0.5)


def one_run(batch, adapter: str, seed: int, vth: float | None) -> dict:
    if adapter == "lora":
        cfg = LoraConfig(r=4, lora_alpha=2.0, use_rslora=True, target_modules=DEBERTA_TARGETS, task_type="SEQ_CLS")
    else:
        cfg = spike_config(v_threshold=vth)
    torch.manual_seed(seed)
    base = DebertaV2ForSequenceClassification(tiny_deberta_config()).eval()
    model = spikelora.track_ops(get_peft_model(base, cfg).eval())
    randomise_b(model, seed)
    labels = torch.tensor([0, 1, 1])
    with torch.no_grad():
        accuracy = float((model(**batch).logits.argmax(-1) == labels).float().mean()) * 100
    block, _ = spikelora.ops_report(model)
    sparsity = spikelora.sparsity_report(model).mean * 100 if adapter == "spike" else None
    return {"task": "cola", "adapter": adapter, "r": 4, "vth": vth, "seed": seed, "mcc": accuracy,
            "sparsity": sparsity, "ops": block}  # fmt: skip


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    batch = {"input_ids": torch.randint(5, 128, (3, 10), generator=g) * mask, "attention_mask": mask}
    rows = [one_run(batch, "lora", s, None) for s in (0, 1)]
    rows += [one_run(batch, "spike", s, v) for v in VTHS for s in (0, 1)]
    return pd.DataFrame(rows)


def test_table_rows_and_ratios(runs):
    table = efficiency_table(runs)
    assert list(table["adapter"]) == ["lora", MERGED, "spike", "spike", "spike"]
    assert list(table["vth"].iloc[2:]) == list(VTHS)
    assert (table["n"] == 2).all() and (table["metric"] == "mcc").all()
    lora, merged = table.iloc[0], table.iloc[1]
    spike_runs = runs[runs["adapter"] == "spike"]
    lora_macs = runs[runs["adapter"] == "lora"]["ops"].iloc[0]["adapter_macs"]
    assert lora["adapter_macs"] == lora_macs == lora["adapter_macs_dense"]
    assert lora["ratio_unmerged"] == 1.0 and lora["ratio_merged"] > 1.0
    assert merged["adapter_macs"] == 0 and merged["ratio_merged"] == 1.0
    assert merged["energy_ratio_merged"] == pytest.approx(1.0)
    assert merged["metric_mean"] == lora["metric_mean"]
    for _, row in table.iloc[2:].iterrows():
        blocks = spike_runs[spike_runs["vth"] == row["vth"]]["ops"]
        mean_macs = sum(b["adapter_macs"] for b in blocks) / len(blocks)
        assert row["adapter_macs"] == pytest.approx(mean_macs)
        assert row["ratio_unmerged"] == pytest.approx(mean_macs / lora_macs)
        assert row["ratio_merged"] == pytest.approx((row["base_macs"] + mean_macs) / row["base_macs"])
        assert 0 < row["ratio_unmerged"] < 1
    # A higher threshold fires less, so costs fewer adapter MACs.
    assert table.iloc[2]["adapter_macs"] > table.iloc[3]["adapter_macs"] > table.iloc[4]["adapter_macs"]
    assert table.iloc[2]["sparsity"] < table.iloc[4]["sparsity"]


def test_pareto_front():
    pts = [(3.0, 0.9), (1.0, 0.5), (2.0, 0.4), (0.0, 0.5), (2.5, 0.95)]
    assert pareto_front(pts) == [(0.0, 0.5), (2.5, 0.95)]


def test_figure_and_files(runs, tmp_path):
    paths = efficiency_figure(runs, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)
    written = write_efficiency(runs, tmp_path / "eff")
    names = {p.name for p in written}
    assert {"efficiency.csv", "efficiency.md", "efficiency.png", "efficiency.pdf"} <= names
    md = (tmp_path / "eff" / "efficiency.md").read_text()
    assert "### cola" in md and MERGED in md
    assert efficiency_table(pd.DataFrame()).empty
