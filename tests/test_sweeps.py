"""Sweeps that survive a cluster: grids, real multiruns (basic and submitit_local), resume, faults, status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spikelora.store import read_history, read_json

from spikelora.sweeps import sweep_jobs, sweep_names, sweep_plans

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_JOBS = {
    "rank": 70,
    "lr": 50,
    "glue": 80,
    "vth": 50,
    "vth_baseline": 5,
    "dropout": 50,
    "sparsity": 1,
    "gradnorm": 2,
    "spikegpt": 15,
    "smoke": 4,
}
SMOKE_RUN = "tiny-cola-spike-r8-vth0.1-lr0.01-p0-s0"


def cli(args: list[str], tmp: Path, env: dict | None = None, module: str = "spikelora.run", **kw):
    cmd = [sys.executable, "-m", module, *args]
    if module == "spikelora.run":
        cmd += [f"results_dir={tmp / 'results'}", f"cache_dir={tmp / 'cache'}", "trainer.disable_tqdm=true"]
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})}, **kw
    )


def test_every_sweep_composes_with_the_expected_number_of_jobs():
    assert set(sweep_names()) == set(EXPECTED_JOBS)
    for name, n in EXPECTED_JOBS.items():
        plans = sweep_plans(name)
        assert len(plans) == n, name
        assert len({p.run_dir for p in plans}) == n, f"{name}: two jobs share a run directory"
    seeds = {p.seed for p in sweep_plans("rank")}
    assert seeds == {0, 1, 2, 3, 4}
    assert {p.lr for p in sweep_plans("rank")} == {5e-4}
    assert {(p.task, p.adapter) for p in sweep_plans("glue")} >= {("mnli", "spike"), ("qqp", "lora")}
    # Command-line overrides narrow a grid.
    assert len(sweep_jobs("rank", ["r=8", "seed=0"])) == 2


def test_fast_sweep_expansion_equals_a_full_compose_per_job():
    from hydra import compose, initialize_config_dir

    from spikelora.run import plan_run

    samples = {"rank": 7, "glue": 11, "vth": 3, "spikegpt": 5, "dropout": 9}
    fast = {name: sweep_plans(name) for name in samples}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for name, stride in samples.items():
            jobs = sweep_jobs(name)
            for i in range(0, len(jobs), stride):
                assert plan_run(compose(config_name="config", overrides=jobs[i])) == fast[name][i], jobs[i]


def test_every_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for launcher in ("basic", "joblib", "slurm", "submitit_local"):
            cfg = compose(
                config_name="config",
                overrides=["+sweep=smoke", f"hydra/launcher={launcher}", "hydra.launcher.partition=gpu"]
                if launcher == "slurm"
                else ["+sweep=smoke", f"hydra/launcher={launcher}"],
                return_hydra_config=True,
            )
            target = cfg.hydra.launcher._target_
            assert launcher.split("_")[0] in target.lower() or (launcher == "slurm" and "Slurm" in target)
    assert cfg.hydra.sweeper.params.adapter == "lora,spike"


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_real_multirun_and_relaunch_trains_nothing_new(launcher, tmp_path):
    if launcher == "basic":  # through the launch script users run
        args = [f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", "trainer.disable_tqdm=true"]
        proc = subprocess.run(
            ["bash", "sweeps/launch.sh", "smoke", "basic", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
        )
    else:
        proc = cli(["-m", "+sweep=smoke", f"hydra/launcher={launcher}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((tmp_path / "results" / "smoke_sweep").glob("tiny-*/metrics.json"))
    assert len(runs) == 4
    assert all(read_json(p)["status"] == "complete" for p in runs)
    if launcher != "basic":
        return  # the re-launch below is the same for every launcher; once is enough
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    histories = {p: p.with_name("history.jsonl").read_bytes() for p in runs}
    proc = cli(["-m", "+sweep=smoke", f"hydra/launcher={launcher}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps
    assert {p: p.with_name("history.jsonl").read_bytes() for p in runs} == histories
    assert proc.stdout.count("skipped (complete)") == 4


def test_a_failing_run_does_not_stop_the_sweep_and_status_reports_it(tmp_path):
    env = {"SPIKELORA_FAIL_RUN": "spike-.*-s1$", "SPIKELORA_FAIL_AFTER_STEP": "3"}
    proc = cli(["-m", "+sweep=smoke"], tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run failed, sweep continues" in proc.stderr
    states = {
        p.parent.name: read_json(p)["status"] for p in (tmp_path / "results" / "smoke_sweep").glob("*/metrics.json")
    }
    failed = "tiny-cola-spike-r8-vth0.1-lr0.01-p0-s1"
    assert states.pop(failed) == "failed"
    assert set(states.values()) == {"complete"} and len(states) == 3
    status = cli([str(tmp_path / "results"), "--sweep", "smoke", "--json"], tmp_path, module="spikelora.status")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)["smoke"]
    assert report["counts"] == {"complete": 3, "failed": 1, "running": 0, "stale": 0, "missing": 0}
    (bad,) = [r for r in report["runs"] if r["state"] == "failed"]
    assert bad["run_name"] == failed and "injected fault" in bad["detail"]
    table = cli([str(tmp_path / "results"), "--sweep", "smoke"], tmp_path, module="spikelora.status")
    assert "failed   " + failed in table.stdout
    # Re-launching retries the failed run only.
    proc = cli(["-m", "+sweep=smoke"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.count("skipped (complete)") == 3
    assert read_json(tmp_path / "results" / "smoke_sweep" / failed / "metrics.json")["status"] == "complete"


def test_status_counts_missing_and_stale_runs(tmp_path):
    run_dir = tmp_path / "results" / "smoke_sweep" / "tiny-cola-lora-r8-lr0.01-p0-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"status": "running"}))
    (run_dir / "heartbeat").write_text("0\n")
    old = time.time() - 3600
    os.utime(run_dir / "heartbeat", (old, old))
    proc = cli([str(tmp_path / "results"), "--sweep", "smoke", "--json"], tmp_path, module="spikelora.status")
    counts = json.loads(proc.stdout)["smoke"]["counts"]
    assert counts == {"complete": 0, "failed": 0, "running": 0, "stale": 1, "missing": 3}
    os.utime(run_dir / "heartbeat")
    proc = cli([str(tmp_path / "results"), "--sweep", "smoke", "--json"], tmp_path, module="spikelora.status")
    assert json.loads(proc.stdout)["smoke"]["counts"]["running"] == 1


def test_a_run_killed_mid_epoch_resumes_to_identical_final_metrics(tmp_path):
    reference = cli(["+experiment=smoke"], tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = read_json(tmp_path / "ref" / "results" / "smoke" / SMOKE_RUN / "metrics.json")

    work = tmp_path / "killed"
    run_dir = work / "results" / "smoke" / SMOKE_RUN
    cmd = [
        sys.executable,
        "-m",
        "spikelora.run",
        "+experiment=smoke",
        f"results_dir={work / 'results'}",
        f"cache_dir={work / 'cache'}",
        "trainer.disable_tqdm=true",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # past the first epoch's checkpoint, in the middle of the second epoch
            steps = [r["step"] for r in read_history(run_dir / "history.jsonl") if r["type"] == "step"]
            if (
                (run_dir / "checkpoints" / "checkpoint-15" / "trainer_state.json").exists()
                and steps
                and max(steps) >= 20
            ):
                break
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = max(r["step"] for r in read_history(run_dir / "history.jsonl") if r["type"] == "step")
    assert 15 < killed_at < 120
    assert read_json(run_dir / "metrics.json")["status"] == "running"

    resumed = cli(["+experiment=smoke"], work)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    got = read_json(run_dir / "metrics.json")
    assert got["status"] == "complete" and got["resumed_from_step"] >= 15
    assert got["final"] == expected["final"]
    assert got["best"] == expected["best"]
    history = read_history(run_dir / "history.jsonl")
    assert [r["step"] for r in history if r["type"] == "step"] == list(range(1, 121))
    assert not (run_dir / "checkpoints").exists()  # removed once complete


def test_two_launches_of_the_same_run_never_write_at_once(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "spikelora.run",
        "+experiment=smoke",
        f"results_dir={tmp_path / 'results'}",
        f"cache_dir={tmp_path / 'cache'}",
        "trainer.disable_tqdm=true",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    stdout = "".join(o[0] for o in outs)
    assert stdout.count(": complete ==") == 1
    assert "skipped (running in another process)" in stdout or "skipped (complete)" in stdout
    run_dir = tmp_path / "results" / "smoke" / SMOKE_RUN
    steps = [r["step"] for r in read_history(run_dir / "history.jsonl") if r["type"] == "step"]
    assert steps == list(range(1, 121))
    assert read_json(run_dir / "metrics.json")["status"] == "complete"
