"""Sweeps that survive a cluster: grids, real multiruns (basic and submitit_local), resume, faults, status."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clirun import run_cli
from inprocess import main_here, run_here

from spikelora.experiment.record import RunDir, read_history, read_json
from spikelora.experiment.sweeps import sweep_jobs, sweep_names, sweep_plans
from spikelora.report.multirun import _print_comparison
from spikelora.status import main as status_main
from spikelora.status import sweep_status

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
    "spikegpt_clean": 15,
    "cpu_glue": 12,
    "cpu_glue_trends": 18,
    "smoke": 4,
    "ablation_reference": 10,
    "ablation": 60,
    "ablation_stsb": 50,
    "ablation_calibration": 12,
    "ablation_calibration_mrpc": 2,
}
# The ablation's matched controls take SpikeLoRA's measured sparsity (sweeps/ablation.sh passes it).
MATCHED = ["matched_sparsity.stsb=0.7", "matched_sparsity.mrpc=0.75"]


def overrides_of(name: str) -> list[str]:
    return MATCHED if name.startswith("ablation") else []


SMOKE_RUN = "tiny-cola-spike-r8-vth0.1-lr0.01-p0-s0"  # + "-<identity hash>"
SHORT = "trainer.max_steps=6"  # sweeps here test launching, not learning: short runs


def cli(args: list[str], tmp: Path, env: dict | None = None, module: str = "spikelora.run", **kw):
    return run_cli(args, tmp, env, module, **kw)


@pytest.fixture(scope="module")
def expanded() -> dict[str, list]:
    """Every sweep's plans, expanded once for the two tests below."""
    return {name: sweep_plans(name, overrides_of(name)) for name in sweep_names()}


@pytest.mark.slow
def test_every_sweep_composes_with_the_expected_number_of_jobs(expanded):
    assert set(expanded) == set(EXPECTED_JOBS)
    for name, n in EXPECTED_JOBS.items():
        plans = expanded[name]
        assert len(plans) == n, name
        assert len({p.run_dir for p in plans}) == n, f"{name}: two jobs share a run directory"
    seeds = {p.seed for p in expanded["rank"]}
    assert seeds == {0, 1, 2, 3, 4}
    assert {p.lr for p in expanded["rank"]} == {3e-4}
    assert {(p.task, p.adapter) for p in expanded["glue"]} >= {("mnli", "spike"), ("qqp", "lora")}
    # Command-line overrides narrow a grid.
    assert len(sweep_jobs("rank", ["r=8", "seed=0"])) == 2
    assert {p.task for p in sweep_plans("ablation", [*MATCHED, "task=mrpc"])} == {"mrpc"}
    # Every arm of the study is its own run; MRPC trains three epochs, STS-B one.
    study = [p for name in ("ablation_reference", "ablation", "ablation_stsb") for p in expanded[name]]
    assert len({p.run_dir for p in study}) == 120
    assert {(p.task, p.epochs) for p in study} == {("stsb", 1), ("mrpc", 3)}


@pytest.mark.slow
def test_fast_sweep_expansion_equals_a_full_compose_per_job(expanded):
    from hydra import compose, initialize_config_dir

    from spikelora.experiment.plan import plan_run

    samples = {"rank": 7, "glue": 11, "vth": 3, "spikegpt": 5, "dropout": 9, "ablation_stsb": 7, "ablation": 9}
    fast = {name: expanded[name] for name in samples}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for name, stride in samples.items():
            jobs = sweep_jobs(name, overrides_of(name))
            for i in range(0, len(jobs), stride):
                assert (
                    plan_run(compose(config_name="config", overrides=jobs[i]), check_resources=False) == fast[name][i]
                ), jobs[i]


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
@pytest.mark.slow
def test_real_multirun_and_relaunch_trains_nothing_new(launcher, tmp_path):
    if launcher == "basic":  # through the launch script users run
        args = [
            f"results_dir={tmp_path / 'results'}",
            f"cache_dir={tmp_path / 'cache'}",
            "trainer.disable_tqdm=true",
            SHORT,
        ]
        proc = subprocess.run(
            ["bash", "sweeps/launch.sh", "smoke", "basic", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
        )
    else:  # the submitit path (SLURM's, run locally): two of the jobs are enough
        proc = cli(["-m", "+sweep=smoke", f"hydra/launcher={launcher}", "seed=0", "adapter=spike", SHORT], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((tmp_path / "results" / "smoke_sweep").glob("tiny-*/metrics.json"))
    assert len(runs) == (4 if launcher == "basic" else 1)
    assert all(read_json(p)["status"] == "complete" for p in runs)
    if launcher != "basic":
        return  # the re-launch below is the same for every launcher; once is enough
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    histories = {p: p.with_name("history.jsonl").read_bytes() for p in runs}
    proc = cli(["-m", "+sweep=smoke", f"hydra/launcher={launcher}", SHORT], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps
    assert {p: p.with_name("history.jsonl").read_bytes() for p in runs} == histories
    assert proc.stdout.count("skipped (complete)") == 4


@pytest.mark.slow
def test_a_failing_run_does_not_stop_the_sweep_and_status_reports_it(tmp_path, capsys):
    fault = [
        "+callbacks.fault._target_=faults.FailAtStep",
        "+callbacks.fault.step=3",
        "+callbacks.fault.match=spike-.*-s1-",
    ]
    proc = cli(["-m", "+sweep=smoke", SHORT, *fault], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the sweep finishes, then says a job failed
    assert "run failed, sweep continues" in proc.stderr
    assert "== multirun: 4 job(s) ==" in proc.stdout
    table = proc.stdout.split("== multirun: 4 job(s) ==")[1]
    assert len(re.findall(r"^complete\s", table, re.M)) == 3 and len(re.findall(r"^failed\s", table, re.M)) == 1
    runs = {p.name: RunDir(p).state() for p in (tmp_path / "results" / "smoke_sweep").glob("tiny-*")}
    (failed,) = [name for name, st in runs.items() if st.state == "failed"]
    assert failed.startswith("tiny-cola-spike-r8-vth0.1-lr0.01-p0-s1-")
    assert sorted(st.state for st in runs.values()) == ["complete", "complete", "complete", "failed"]
    # status takes the overrides the sweep was launched with (they are part of the run identities)
    status = main_here("spikelora.status", [str(tmp_path / "results"), "--sweep", "smoke", SHORT, "--json"])
    assert status.returncode == 1, status.stderr  # a failed run needs attention
    report = json.loads(status.stdout)["smoke"]
    assert report["counts"]["complete"] == 3 and report["counts"]["failed"] == 1
    assert sum(report["counts"].values()) == 4
    (bad,) = [r for r in report["runs"] if r["state"] == "failed"]
    assert bad["run_name"] == failed and "injected fault" in bad["detail"]
    table = main_here("spikelora.status", [str(tmp_path / "results"), "--sweep", "smoke", SHORT])
    assert "failed   " + failed in table.stdout
    unshort = main_here("spikelora.status", [str(tmp_path / "results"), "--sweep", "smoke", "--json"])
    assert json.loads(unshort.stdout)["smoke"]["counts"]["missing"] == 4  # the full-length runs: none yet
    assert unshort.returncode == 0  # missing runs are not a problem, only not done
    # Re-launching (without the fault: callbacks are not part of a run's identity) retries the failed
    # run only: the sweep's four jobs, run here (the launcher's re-launch: test_real_multirun_...).
    capsys.readouterr()
    records = [run_here(job, tmp_path) for job in sweep_jobs("smoke", [SHORT])]
    assert [r["status"] for r in records] == ["complete"] * 4
    assert capsys.readouterr().out.count("skipped (complete)") == 3
    assert RunDir(tmp_path / "results" / "smoke_sweep" / failed).state().state == "complete"


@pytest.mark.slow
def test_status_tells_stale_from_running_by_the_lock(tmp_path):
    (plan,) = [
        p for p in sweep_plans("smoke", [f"results_dir={tmp_path / 'results'}"]) if p.adapter == "lora" and p.seed == 0
    ]
    attempt = plan.run_dir / "attempt"
    attempt.mkdir(parents=True)
    (attempt / "metrics.json").write_text(json.dumps({"status": "running"}))
    (attempt / "heartbeat").write_text(f"{time.time():.0f}\n")  # fresh: only the free lock says it is dead

    proc = main_here("spikelora.status", [str(tmp_path / "results"), "--sweep", "smoke", "--json"])
    assert proc.returncode == 1, proc.stderr  # a stale run needs attention
    first = json.loads(proc.stdout)["smoke"]["counts"]
    assert (first["stale"], first["missing"], first["running"]) == (1, 3, 0)

    def counts():  # in this process: flock treats each open file description apart, as another process
        from spikelora.status import sweep_status

        return sweep_status(tmp_path / "results", ["smoke"])["smoke"]["counts"]

    assert counts() == first
    holder = RunDir(plan.run_dir)
    assert holder.acquire()  # this test process now holds the lock, as a live run would
    try:
        assert (counts()["running"], counts()["stale"]) == (1, 0)
    finally:
        holder.release()
    (attempt / "metrics.json").write_text("{truncated")
    assert counts()["corrupt"] == 1


@pytest.mark.slow
def test_two_launches_of_the_same_run_never_write_at_once(tmp_path, capsys):
    cmd = [
        sys.executable,
        "-m",
        "spikelora.run",
        "+experiment=smoke",
        f"results_dir={tmp_path / 'results'}",
        f"cache_dir={tmp_path / 'cache'}",
        "trainer.disable_tqdm=true",
        "trainer.max_steps=30",
    ]
    # Deterministically first: while a live process holds the run's lock, a launch skips it and writes
    # nothing. The launch runs in this process: flock treats each open file description apart, so
    # the holder below is "another process" to it.
    from hydra import compose, initialize_config_dir

    from spikelora.experiment.plan import plan_run
    from spikelora.run import run

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=cmd[3:])
    plan = plan_run(cfg, check_resources=False)
    holder = RunDir(plan.run_dir)
    assert holder.acquire()
    try:
        capsys.readouterr()
        held = run(cfg)
    finally:
        holder.release()
    assert held["status"] == "running" and "skipped (running in another process)" in capsys.readouterr().out
    assert not (plan.run_dir / "metrics.json").exists() and not (plan.run_dir / "attempt").exists()
    # Then two real launches at once: exactly one trains, whichever order they reach the lock in.
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    stdout = "".join(o[0] for o in outs)
    assert stdout.count(": complete ==") == 1
    assert "skipped (running in another process)" in stdout or "skipped (complete)" in stdout
    (run_dir,) = (tmp_path / "results" / "smoke").glob(SMOKE_RUN + "-*")
    steps = [r["step"] for r in read_history(run_dir / "history.jsonl") if r["type"] == "step"]
    assert steps == list(range(1, 31))
    assert read_json(run_dir / "metrics.json")["status"] == "complete"


def test_status_takes_the_sweeps_overrides_and_refuses_other_words(tmp_path, capsys):
    from spikelora.status import main, sweep_status

    (tmp_path / "results").mkdir()
    plain = sweep_status(tmp_path / "results", ["smoke"])["smoke"]["runs"]
    short = sweep_status(tmp_path / "results", ["smoke"], [SHORT])["smoke"]["runs"]
    assert len(plain) == len(short) == 4
    assert {r["run_name"] for r in plain}.isdisjoint(r["run_name"] for r in short)  # other identities
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "results"), "--sweep", "smoke", "maxsteps"])
    assert exit_.value.code == 2 and "not an override (KEY=VALUE): maxsteps" in capsys.readouterr().err
    assert main([str(tmp_path / "results"), "--sweep", "smoke", "trainer.nosuchkey=1"]) == 2


@pytest.mark.slow
def test_status_names_the_measured_values_a_sweep_needs(tmp_path):
    without = sweep_status(tmp_path, ["ablation_stsb", "smoke"])
    assert "matched_sparsity.stsb=..." in without["ablation_stsb"]["needs"]
    assert without["ablation_stsb"]["expected"] == 0 and without["smoke"]["expected"] == 4  # the others still report
    given = sweep_status(tmp_path, ["ablation_stsb"], ["matched_sparsity.stsb=0.7"])
    assert given["ablation_stsb"]["expected"] == 50 and given["ablation_stsb"]["counts"]["missing"] == 50
    assert status_main([str(tmp_path), "--sweep", "ablation"]) == 0  # reported, not an error


def test_a_swept_config_group_is_summarised_by_method(tmp_path, capsys):
    """``arm=...`` (the ablation's bundles of adapter settings) is no record key: the end-of-sweep
    comparison groups by method instead of failing on the unknown key."""
    for adapter in ("lora", "spike"):
        run_here(["+experiment=smoke", f"adapter={adapter}", SHORT, "save_adapter=false"], tmp_path)
    runs = sorted(p.parent for p in (tmp_path / "results").glob("*/*/metrics.json"))
    assert len(runs) == 2
    jobs = [
        {"status": "complete", "run_dir": str(run), "overrides": [f"arm={run.name.split('-')[2]}", "seed=0"]}
        for run in runs
    ]
    capsys.readouterr()
    _print_comparison(jobs)
    out = capsys.readouterr().out
    assert "arm: config group(s), not record keys" in out
    assert "no run record has the key" not in out and "no comparison" not in out
    table = out.split("(mean ± std over seeds) ==")[1]
    assert re.search(r"\blora\b", table) and re.search(r"\bspike\b", table), out
