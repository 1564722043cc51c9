"""Runs that went wrong never look right: diverged runs, escaping names, damaged checkpoints, status
exit codes, and the smaller faults (huge lines, FIFOs, deleted adapters, a kill mid-promotion)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from spikelora.experiment.confdir import CONF_DIR
from spikelora.experiment.data import DataError, load_task_data
from spikelora.experiment.plan import ConfigError, plan_run
from spikelora.experiment.record import STAGED, RecordError, RunDir, scan
from spikelora.experiment.synthetic import write_synthetic
from spikelora.export import export
from spikelora.run import run
from spikelora.status import main as status_main

QUICK = ["trainer.disable_tqdm=true", "max_eval_samples=16"]


def cfg_of(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def smoke(tmp: Path, *extra: str):
    return cfg_of(["+experiment=smoke", f"results_dir={tmp / 'results'}", f"cache_dir={tmp / 'cache'}", *QUICK, *extra])


# ---------------------------------------------------------------------------------- diverged
@pytest.mark.slow
def test_a_diverged_run_is_not_complete_and_is_left_out_of_the_report(tmp_path, capsys):
    out = run(smoke(tmp_path, "lr=1e6", "trainer.max_steps=6"))
    assert out["status"] == "diverged" and "not finite" in out["error"]
    run_dir = RunDir(tmp_path / "results" / "smoke" / out["run_name"])
    assert run_dir.state().state == "diverged" and not run_dir.is_complete()
    assert len([r for r in run_dir.attempt_dir.joinpath("history.jsonl").read_text().splitlines() if r]) >= 6
    records, left_out = scan(tmp_path / "results")
    assert records == [] and left_out == [(str(run_dir.path), "diverged")]
    assert "diverged" in capsys.readouterr().out
    # A finite run of the same settings but another lr is complete: nothing else is affected.
    assert run(smoke(tmp_path, "trainer.max_steps=2"))["status"] == "complete"


@pytest.mark.parametrize("score", ["nan", "inf", "-1", "5.5"])
def test_stsb_scores_must_be_finite_and_in_range(tmp_path, score):
    rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
    rows += [f"{i}\tg\tf\t2012\t{i}\ts\ts\ta b\tc d\t{score if i == 2 else '3.2'}" for i in range(4)]
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / name).write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=rf"train\.tsv:4: score '{score}' is (not a finite number|outside 0..5)"):
        load_task_data("stsb", tmp_path)


# ---------------------------------------------------------------------------------- paths
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.name=../../ESCAPED", "model.name"),
        ("model.name=a/b", "model.name"),
        ("experiment_name=..", "experiment"),
    ],
)
def test_every_path_part_is_checked_before_anything_is_written(tmp_path, override, key):
    with pytest.raises(ConfigError, match=rf"{key}\S* must be one plain directory name"):
        plan_run(smoke(tmp_path / "a" / "b", override))
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------------------------- checkpoints
@pytest.mark.slow
@pytest.mark.parametrize("keep", [1, 2])
def test_a_damaged_checkpoint_is_passed_over_saying_which(tmp_path, capsys, keep):
    """save_strategy=steps every 2 steps; a fault at step 5; optimizer.pt of the newest truncated:
    the re-run resumes from the previous good checkpoint (keep=2) or starts afresh (keep=1)."""
    extra = [
        "max_train_samples=64",
        "epochs=4",
        "trainer.save_strategy=steps",
        "+trainer.save_steps=2",
        "trainer.eval_strategy=no",
        f"trainer.save_total_limit={keep}",
    ]
    fault = ["+callbacks.fault._target_=faults.FailAtStep", "+callbacks.fault.step=5"]
    with pytest.raises(RuntimeError, match="injected fault"):
        run(smoke(tmp_path, *extra, *fault))
    runs = list((tmp_path / "results" / "smoke").glob("tiny-*"))
    checkpoints = runs[0] / "attempt" / "checkpoints"
    newest = checkpoints / "checkpoint-4"
    assert (newest / "spikelora_manifest.json").is_file()
    optimizer = newest / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    capsys.readouterr()
    out = run(smoke(tmp_path, *extra))
    assert out["status"] == "complete"
    err = capsys.readouterr().err
    assert "checkpoint-4 is damaged (optimizer.pt:" in err
    if keep == 2:
        assert "resuming from checkpoint-2" in err and out["timing"]["resumed_from_step"] == 2
    else:
        assert "starting afresh" in err and out["timing"]["resumed_from_step"] is None


# ---------------------------------------------------------------------------------- status
def _status_dir(tmp_path: Path, state: str) -> Path:
    """A results dir holding one run of the smoke sweep, recorded in ``state``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=["+sweep=smoke", "adapter=lora", "seed=0", f"results_dir={tmp_path}"]
        )
    plan = plan_run(cfg, check_resources=False)
    attempt = plan.run_dir / "attempt"
    attempt.mkdir(parents=True)
    (attempt / "metrics.json").write_text(json.dumps({"status": state, "error": "boom"}))
    return tmp_path


@pytest.mark.parametrize(("state", "code"), [("failed", 1), ("diverged", 1), ("running", 1), ("interrupted", 0)])
def test_status_exit_code_says_whether_a_run_needs_attention(tmp_path, capsys, state, code):
    results = _status_dir(tmp_path, state)
    assert status_main([str(results), "--sweep", "smoke"]) == code
    capsys.readouterr()
    assert status_main([str(results), "--sweep", "smoke", "--json"]) == code
    shown = json.loads(capsys.readouterr().out)
    # "running" with no live process holding the lock is stale: it needs attention too.
    assert shown["smoke"]["counts"]["stale" if state == "running" else state] == 1


def test_status_exit_code_is_zero_for_a_clean_results_dir(tmp_path):
    assert status_main([str(tmp_path), "--sweep", "smoke"]) == 0
    assert status_main([str(tmp_path / "nope"), "--sweep", "smoke"]) == 2


# ---------------------------------------------------------------------------------- smaller
def test_a_huge_line_names_file_and_line(tmp_path):
    write_synthetic("cola", tmp_path)
    with (tmp_path / "train.tsv").open("a") as f:
        f.write("x\t1\t\t" + "a" * (5 * 1024 * 1024) + "\n")
    with pytest.raises(DataError, match=r"train\.tsv:481: field larger than field limit"):
        load_task_data("cola", tmp_path)


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_a_data_file_that_is_not_a_regular_file_is_named_so(tmp_path, kind):
    write_synthetic("cola", tmp_path)
    (tmp_path / "train.tsv").unlink()
    if kind == "fifo":
        os.mkfifo(tmp_path / "train.tsv")
    else:
        (tmp_path / "train.tsv").symlink_to("/dev/zero")
    with pytest.raises(DataError, match=r"train\.tsv is not a regular file"):
        load_task_data("cola", tmp_path)
    with pytest.raises(DataError, match=r"not a regular file"):  # at planning: before anything is written
        plan_run(cfg_of(["+experiment=smoke", "task.synthetic=false", f"task.data_dir={tmp_path}"]))


@pytest.mark.slow
def test_adapters_kill_mid_promotion_export_and_full_fine_tuning(tmp_path):
    out = run(smoke(tmp_path, "trainer.max_steps=2"))
    run_dir = RunDir(tmp_path / "results" / "smoke" / out["run_name"])
    assert out["kept_weights"] == ["adapter"]
    # export --out inside the record is refused; outside works
    with pytest.raises(RecordError, match="inside the run directory"):
        export(run_dir.path, run_dir.path / "exported")
    assert (export(run_dir.path, tmp_path / "exported") / "adapter_config.json").is_file()
    # a deleted adapter makes the record corrupt (status sees it) and export says what is missing
    weights = next(p for p in run_dir.adapter_dir.iterdir() if p.suffix == ".safetensors")
    data = weights.read_bytes()
    weights.unlink()
    assert run_dir.state().state == "corrupt" and "adapter/" in run_dir.state().detail
    with pytest.raises(RecordError, match=r"adapter/adapter_model\.safetensors is missing"):
        export(run_dir.path, tmp_path / "again")
    weights.write_bytes(data)
    assert run_dir.is_complete()
    # a kill during the final promotion: the staged record is finished by the next launch
    staged = run_dir.attempt_dir
    staged.mkdir()
    (staged / ".promote.json").write_text(json.dumps({"files": [], "keep_checkpoints": False}))
    (staged / STAGED).write_text((run_dir.path / "metrics.json").read_text())
    assert run(smoke(tmp_path, "trainer.max_steps=2"))["status"] == "complete"
    assert not staged.exists() and run_dir.is_complete()
    # full fine-tuning says in its record that no trained weights are kept
    full = run(smoke(tmp_path, "trainer.max_steps=2", "adapter=full"))
    assert full["kept_weights"].startswith("none: full fine-tuning")
    with pytest.raises(RecordError, match="full fine-tuning keeps no adapter"):
        export(tmp_path / "results" / "smoke" / full["run_name"], tmp_path / "full")
