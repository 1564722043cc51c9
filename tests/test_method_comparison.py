"""``report method-comparison``: one JSON per run in PEFT's method_comparison shape, equal to the record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikelora.experiment.record import scan
from spikelora.report.__main__ import main as report_main

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "cpu_glue"


@pytest.mark.skipif(not COMMITTED.is_dir(), reason="no committed cpu_glue records")
def test_method_comparison_files_carry_the_records_values(tmp_path, capsys):
    assert report_main(["method-comparison", str(COMMITTED), "--out", str(tmp_path)]) == 0
    assert "30 run(s)" in capsys.readouterr().out
    records = {m["run_name"]: (run, m) for run, m in scan(COMMITTED)[0]}
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == len(records) == 30
    for path in files:
        doc = json.loads(path.read_text())
        assert set(doc) == {"run_info", "train_info", "meta_info"}
        adapter, _, name = path.stem.partition("--")
        run, m = records[name]
        assert adapter == m["adapter"] and doc["run_info"]["experiment_name"] == f"{m['adapter']}/{name}"
        info, train, meta = doc["run_info"], doc["train_info"], doc["meta_info"]
        assert info["train_config"]["seed"] == m["seed"] and info["train_config"]["optimizer_kwargs"]["lr"] == m["lr"]
        assert info["peft_config"]["peft_type"] == {"spike": "SPIKELORA", "lora": "LORA"}[m["adapter"]]
        assert train["num_trainable_params"] == m["trainable_params"] and train["status"] == "success"
        assert train["cuda_memory_max"] is None  # not recorded here: null, never guessed
        evals = [r for r in run.history() if r["type"] == "eval"]
        assert [e["step"] for e in train["metrics"]] == [r["step"] for r in evals]
        main = m["main_metric"].removeprefix("eval_")
        assert train["metrics"][-1][f"valid {main}"] == pytest.approx(m["final"][m["main_metric"]], rel=1e-12)
        assert train["metrics"][-1]["split"] == "validation (GLUE dev set)"
        assert meta["dataset_info"][m["task"]]["files_sha256"] == m["provenance"]["data"]["files_sha256"]
        assert meta["package_info"]["peft-version"] == m["provenance"]["versions"]["peft"]
