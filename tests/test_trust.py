"""Results you can trust: run identity, staged records, resume equality, preemption, disk full,
malformed records, and bad inputs refused before anything is written."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import traceback
from pathlib import Path

import pytest
from clirun import run_cli
from hydra import compose, initialize_config_dir
from inprocess import main_here, run_here

from spikelora.experiment.confdir import CONF_DIR
from spikelora.experiment.data import DataError, read_subj, read_tsv
from spikelora.experiment.identity import NOT_IDENTITY
from spikelora.experiment.plan import ConfigError, plan_run
from spikelora.experiment.record import Attempt, RunDir, read_json, scan, write_json
from spikelora.experiment.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
CONF = CONF_DIR  # the configs, with their resolvers registered


def cfg_of(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def name_of(overrides: list[str]) -> str:
    return plan_run(cfg_of(["+experiment=smoke", *overrides]), check_resources=False).run_name


# ---------------------------------------------------------------------------------- identity
@pytest.mark.parametrize(
    "change",
    [
        ["trainer.max_steps=3"],
        ["epochs=2"],
        ["trainer.per_device_train_batch_size=16"],
        ["max_length=64"],
        ["adapter.tau=3.0"],
        ["adapter.spike_mode=temporal"],
        ["adapter.alpha=4"],
        ["task.synthetic=false", "task.data_dir=/elsewhere/cola"],
        ["trainer.weight_decay=0.0"],
        ["trainer.logging_steps=1"],
        ["model.hidden_size=32"],
    ],
)
def test_every_setting_that_can_change_a_result_changes_the_identity(change):
    base = name_of([])
    changed = name_of(change)
    assert changed != base
    # The readable part stays (a gate variant adds its words after the gate: "spike-temporal-r8");
    # the hash differs.
    words, base_words = changed.rsplit("-", 1)[0].split("-"), base.rsplit("-", 1)[0].split("-")
    assert [w for w in words if w in base_words] == base_words
    assert set(words) - set(base_words) <= {"temporal", "tau3"}


@pytest.mark.parametrize(
    "change",
    [
        ["logger=wandb"],
        ["results_dir=/other/results", "task.data_dir=results/smoke/data/cola"],
        ["trainer.disable_tqdm=true"],
        ["trainer.dataloader_num_workers=2"],
        ["keep_checkpoints=true"],
        ["force=true"],
        ["save_adapter=false"],
        ["cache_dir=/tmp/elsewhere"],
    ],
)
def test_settings_that_cannot_change_a_result_keep_the_identity(change):
    assert name_of(change) == name_of([])


def test_identity_does_not_depend_on_whether_the_data_exists_yet(tmp_path, monkeypatch):
    # The smoke task writes its data during the run: a relative data_dir that does not exist yet
    # must hash like the same directory once it exists (else every re-run trains again).
    monkeypatch.chdir(tmp_path)
    before = plan_run(cfg_of(["+experiment=smoke"]), check_resources=False).run_name
    (tmp_path / "results" / "smoke" / "data" / "cola").mkdir(parents=True)
    after = plan_run(cfg_of(["+experiment=smoke"]), check_resources=False).run_name
    assert before == after


def test_the_excluded_settings_are_listed_in_one_place():
    assert {"logger", "results_dir", "force", "keep_checkpoints", "trainer.dataloader_num_workers"} <= set(NOT_IDENTITY)


def test_local_models_are_named_by_their_files_not_their_paths(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for path, text in ((a, '{"x": 1}'), (b, '{"x": 2}'), (c, '{"x": 1}')):
        path.mkdir()
        (path / "config.json").write_text(text)
    names = {p.name: name_of(["model=hf", f"model.name_or_path={p}"]) for p in (a, b, c)}
    assert names["a"] != names["b"] and names["a"] == names["c"]
    assert all(n.startswith("hf-cola-spike-") for n in names.values())


def test_defaults_are_interpolated_so_the_config_shows_effective_values():
    cfg = cfg_of(["task=rte"])
    assert (cfg.lr, cfg.epochs, cfg.trainer.learning_rate, cfg.trainer.per_device_train_batch_size) == (
        1.2e-3,
        15,
        1.2e-3,
        32,
    )
    plan = plan_run(cfg_of(["task=rte", "lr=1e-4"]), check_resources=False)
    assert plan.lr == 1e-4 and plan.batch_size == 32 and plan.epochs == 15


# ---------------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.per_device_train_batch_size=0"], "per_device_train_batch_size must be a positive integer"),
        (["trainer.max_steps=-5"], "max_steps must be -1 .* or a positive integer"),
        (["trainer.max_steps=0"], "max_steps must be -1"),
        (["adapter=lora", "adapter.alpha=-4"], "alpha must be a positive number"),
        (["experiment_name=../../x"], "experiment_name must be one plain directory name"),
        (["experiment_name=a/b"], "experiment_name must be one plain directory name"),
        (["seed=-1"], "seed must be an integer in"),
        (["adapter.tau=0.5"], "tau must be > 1"),
        (["adapter.spike_mode=bogus"], "Unknown spike mode"),
        (["model=hf"], "needs model.name_or_path"),
        (["model=hf", "model.name_or_path=/no/such/model"], "no such file or directory"),
        (["task.synthetic=false", "task.data_dir=/no/such/data"], "no such directory"),
    ],
)
def test_bad_values_are_refused_by_the_plan(overrides, message):
    with pytest.raises(ValueError, match=message):
        plan_run(cfg_of(["+experiment=smoke", *overrides]))


def test_offline_hub_without_data_dir_says_how_to_point_at_files(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"task\.data_dir=DIR"):
        plan_run(cfg_of(["model=tiny"]))


@pytest.mark.slow
def test_refused_inputs_write_nothing(tmp_path):
    # Every refusal in the plan is covered above in-process; one through the command line is enough
    # here (an escaping name, which Hydra's own log folder would also follow); another in this process.
    proc = run_cli(["+experiment=smoke", "experiment_name=../../escaped"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    with pytest.raises(ValueError, match="per_device_train_batch_size must be a positive integer"):
        run_here(["+experiment=smoke", "trainer.per_device_train_batch_size=0"], tmp_path)
    runs = [p for p in tmp_path.rglob("*") if p.name in ("metrics.json", ".lock", "attempt")]
    # results_dir/../../escaped is beside tmp_path: where an escaped record would have gone
    assert runs == [] and not (tmp_path.parent / "escaped").exists()


# ---------------------------------------------------------------------------------- data files
def test_subj_lines_split_on_newline_only_with_cp1252_punctuation(tmp_path):
    # cp1252 0x85 (an ellipsis) inside sentences: decoded as Latin-1 it is U+0085, a line break for splitlines().
    for name, word in (("quote.tok.gt9.5000", b"feel"), ("plot.tok.gt9.5000", b"goes")):
        lines = [b"he " + word + b" it \x85 then " + str(i).encode() + b" \x93quoted\x94" for i in range(5000)]
        (tmp_path / name).write_bytes(b"\n".join(lines) + b"\n")
    data = read_subj(tmp_path)
    texts = list(data["train"]["text"]) + list(data["validation"]["text"])
    labels = list(data["train"]["label"]) + list(data["validation"]["label"])
    assert len(texts) == 10000 and labels.count(0) == labels.count(1) == 5000
    assert all("…" in t and "“quoted”" in t for t in texts)


def test_real_subj_files_give_5000_and_5000_when_present():
    folder = os.environ.get("SPIKELORA_SUBJ_DIR")
    if not folder:
        pytest.skip("set SPIKELORA_SUBJ_DIR to the raw Subj v1.0 files to check them")
    data = read_subj(Path(folder))
    labels = list(data["train"]["label"]) + list(data["validation"]["label"])
    assert labels.count(0) == labels.count(1) == 5000


def test_empty_and_undecodable_files_name_the_file_and_line(tmp_path):
    spec = get_task("cola")
    from spikelora.experiment.data import LAYOUTS

    (tmp_path / "empty.tsv").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.tsv holds no rows"):
        read_tsv(tmp_path / "empty.tsv", spec, LAYOUTS["cola"])
    (tmp_path / "bad.tsv").write_bytes(b"s\t1\t\tfine\ns\t0\t\tfine too\ns\t1\t\tbad \xff byte\n")
    with pytest.raises(DataError, match=r"bad\.tsv:3: not utf-8 text"):
        read_tsv(tmp_path / "bad.tsv", spec, LAYOUTS["cola"])


# ---------------------------------------------------------------------------------- records
def write_complete(run_dir: Path, mcc: float = 0.5) -> RunDir:
    """A complete record written by the real writer (as a run would)."""
    run = RunDir(run_dir)
    attempt = Attempt(run)
    attempt.start("x: 1\n", {"run_name": run_dir.name, "experiment": run_dir.parent.name, "task": "cola"}, None)
    attempt.append_history([{"type": "step", "step": 1, "loss": 0.7}])
    metrics = {
        **attempt.info,
        "adapter": "spike",
        "main_metric": "eval_mcc",
        "final": {"eval_mcc": mcc},
        "best": {"eval_mcc": mcc},
        "train": {"global_step": 1},
    }
    attempt.finish(metrics, {}, keep_checkpoints=False)
    return run


def test_records_are_readable_by_lab_mates(tmp_path):
    old = os.umask(0o022)
    try:
        run = write_complete(tmp_path / "e" / "r")
    finally:
        os.umask(old)
    for path in (run.metrics_path, run.history_path, run.config_path):
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path


def test_a_record_without_its_history_is_corrupt_not_complete(tmp_path):
    run = write_complete(tmp_path / "e" / "r")
    assert run.state().state == "complete"
    run.history_path.write_text('{"type": "step", "step": 1, "loss": 0.1}\n')
    assert run.state().state == "corrupt" and "does not match" in run.state().detail
    run.history_path.unlink()
    assert run.state().state == "corrupt" and not run.is_complete()


def test_report_lists_malformed_records_and_goes_on(tmp_path):
    results = tmp_path / "results"
    write_complete(results / "e" / "good")
    bad = {"list": [1], "final-str": None, "metric-str": None, "no-history": None}
    for name in bad:
        write_complete(results / "e" / name)
    write_json(results / "e" / "list" / "metrics.json", [1])
    m = read_json(results / "e" / "final-str" / "metrics.json")
    write_json(results / "e" / "final-str" / "metrics.json", {**m, "final": "oops"})
    m = read_json(results / "e" / "metric-str" / "metrics.json")
    write_json(results / "e" / "metric-str" / "metrics.json", {**m, "final": {"eval_mcc": "high"}})
    (results / "e" / "no-history" / "history.jsonl").unlink()
    records, left_out = scan(results)
    assert [r.path.name for r, _ in records] == ["good"]
    assert sorted(Path(p).name for p, _ in left_out) == sorted(bad)
    assert all(why.startswith("corrupt") for _, why in left_out)
    proc = main_here("spikelora.report", [str(results), "--out", str(tmp_path / "reports")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in bad:
        assert f"e/{name} (corrupt" in proc.stdout


@pytest.mark.parametrize("tool", ["spikelora.report", "spikelora.status"])
def test_report_and_status_refuse_a_missing_directory_or_a_file(tool, tmp_path):
    (tmp_path / "afile").write_text("x")
    for target in (tmp_path / "missing", tmp_path / "afile"):
        args = [str(target)] + (
            ["--out", str(tmp_path / "out")] if tool == "spikelora.report" else ["--sweep", "smoke"]
        )
        proc = main_here(tool, args)  # python -m TOOL ARGS exits with what main returns
        assert proc.returncode == 2, (tool, target, proc.stdout[-500:])
        assert "no such results directory" in proc.stderr or "is a file" in proc.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- real runs
SMOKE = ["+experiment=smoke", "trainer.max_steps=30", "trainer.logging_steps=5"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The generated smoke task at one path, so that runs in different results dirs share an identity."""
    from spikelora.experiment.synthetic import write_synthetic

    path = tmp_path_factory.mktemp("data") / "cola"
    write_synthetic("cola", path)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("reference")
    assert run_here([*SMOKE, f"task.data_dir={data_dir}", "task.synthetic=false"], tmp)["status"] == "complete"
    (run_dir,) = (tmp / "results" / "smoke").glob("tiny-*")
    return run_dir


def comparable(run: RunDir) -> tuple[dict, list[dict]]:
    """The record and its history, timestamps aside."""
    m = run.load()
    m.pop("timing")
    return m, run.history()


def assert_same_record(got: Path, expected: Path) -> None:
    a, ha = comparable(RunDir(got))
    b, hb = comparable(RunDir(expected))
    assert a.pop("files") != {} and b.pop("files") != {}
    for record in (a, b):  # where it ran and from which commit (a commit may land between two runs)
        record["provenance"].pop("host", None)
        record["provenance"].pop("git", None)
    assert a == b
    assert ha == hb


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "resumed_from"),
    [
        (["+callbacks.fault._target_=faults.KillAtStep", "+callbacks.fault.step=20"], 15),  # kill -9 mid-epoch
        (["+callbacks.fault._target_=faults.KillAtTrainEnd"], 30),  # after the last checkpoint
        (["+callbacks.fault._target_=faults.SignalAtStep", "+callbacks.fault.step=20"], None),  # SLURM's SIGTERM
    ],
    ids=["kill-mid-epoch", "kill-after-final-checkpoint", "sigterm"],
)
def test_an_interrupted_run_resumes_to_the_uninterrupted_record(fault, resumed_from, tmp_path, data_dir, reference):
    args = [*SMOKE, f"task.data_dir={data_dir}", "task.synthetic=false"]
    proc = run_cli([*args, *fault], tmp_path)
    assert proc.returncode in (137, 143), proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "results" / "smoke").glob("tiny-*")
    assert run_dir.name == reference.name  # the fault callback is not part of the identity
    state = RunDir(run_dir).state()
    if "SignalAtStep" in fault[0]:
        assert proc.returncode == 143 and state.state == "interrupted"
        # Checkpointed at the end of the step during which the signal arrived (or the next one).
        resumed_from = RunDir(run_dir).attempt_record()["interrupted_at_step"]
        assert resumed_from in (20, 21)
        assert (run_dir / "attempt" / "checkpoints" / f"checkpoint-{resumed_from}" / "trainer_state.json").exists()
    else:
        assert state.state == "stale"  # recorded as running, but the lock is free
    assert run_here(args, tmp_path)["status"] == "complete"  # the re-launch (in this process) resumes
    record = RunDir(run_dir).load()
    assert record["timing"]["resumed_from_step"] == resumed_from
    assert record["train"]["global_step"] == 30 and record["train"]["steps_recorded"] == 30
    assert_same_record(run_dir, reference)
    assert not (run_dir / "attempt").exists()


@pytest.mark.slow
def test_force_never_damages_the_complete_record(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(_smoke_data(tmp_path), data)
    args = ["+experiment=smoke", "trainer.max_steps=3", f"task.data_dir={data}", "task.synthetic=false"]
    assert run_here(args, tmp_path)["status"] == "complete"
    (run_dir,) = (tmp_path / "results" / "smoke").glob("tiny-*")
    files = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    # The forced attempt of the same run (a fault callback is not part of the identity; an edited
    # data file would be: another run) dies after its first step.
    fault = ["+callbacks.fault._target_=faults.FailAtStep", "+callbacks.fault.step=1"]
    with pytest.raises(RuntimeError, match="injected fault at step 1"):
        run_here([*args, "force=true", *fault], tmp_path)
    assert list((tmp_path / "results" / "smoke").glob("tiny-*")) == [run_dir]
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert {k: v for k, v in after.items() if k.parts[0] != "attempt"} == files
    state = RunDir(run_dir).state()
    assert state.state == "complete" and "last attempt failed" in state.detail and "injected fault" in state.detail


def _smoke_data(tmp_path: Path) -> Path:
    from spikelora.experiment.synthetic import write_synthetic

    path = tmp_path / "generated"
    write_synthetic("cola", path)
    return path


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_ends_failed_not_running(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        args = [
            "+experiment=smoke",
            f"results_dir={mount}",
            f"task.data_dir={_smoke_data(tmp_path)}",
            "task.synthetic=false",
            "+callbacks.fault._target_=faults.FillDiskAtEpochEnd",
        ]
        with pytest.raises(Exception) as failed:
            run_here(args, tmp_path)
        assert "No space left on device" in "".join(traceback.format_exception(failed.value))
        (run_dir,) = (mount / "smoke").glob("tiny-*")
        state = RunDir(run_dir).state()
        assert state.state == "failed" and "No space left" in state.detail
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_sigterm_handler_is_installed_for_the_configured_signals():
    import signal

    from spikelora.experiment.callbacks import Preemption

    before = signal.getsignal(signal.SIGUSR1)
    with Preemption(["SIGUSR1"]) as p:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert p.requested and p.signum == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == before
