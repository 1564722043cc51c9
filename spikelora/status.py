"""``python -m spikelora.status [RESULTS_DIR] [--json]``: where every study of the paper stands.

For each sweep in ``conf/sweep`` it expands the grid into its runs and classifies each one:

``complete``  a complete record
``failed``    recorded as failed (the error is shown)
``running``   recorded as running with a heartbeat younger than ``--stale-minutes``
``stale``     recorded as running, but the heartbeat is older (killed, preempted, node lost)
``missing``   no record yet

Re-launching a sweep trains exactly the failed, stale and missing runs (stale ones resume from
their checkpoints).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .store import STATUS_COMPLETE, STATUS_FAILED, STATUS_RUNNING, RunStore, read_json
from .sweeps import sweep_names, sweep_plans

STATES = ("complete", "failed", "running", "stale", "missing")


def run_state(run_dir: Path, stale_seconds: float) -> tuple[str, str]:
    """(state, detail) of one run directory."""
    store = RunStore(run_dir)
    status = store.status()
    if status is None:
        return "missing", ""
    if status == STATUS_COMPLETE:
        return "complete", ""
    if status == STATUS_FAILED:
        return "failed", str(read_json(store.metrics_path).get("error", ""))[:300]
    if status == STATUS_RUNNING:
        age = store.heartbeat_age()
        if age is not None and age < stale_seconds:
            return "running", f"heartbeat {age:.0f}s ago"
        return "stale", "no heartbeat" if age is None else f"heartbeat {age / 60:.0f} min ago"
    return "failed", f"unknown status {status!r}"


def sweep_status(results_dir: str | Path, sweeps: list[str] | None = None, stale_minutes: float = 30.0) -> dict:
    """``{sweep: {"counts": {state: n}, "runs": [{run_name, run_dir, state, detail}]}}``."""
    out = {}
    for name in sweeps or sweep_names():
        plans = sweep_plans(name, [f"results_dir={results_dir}"])
        runs = []
        counts = dict.fromkeys(STATES, 0)
        for plan in plans:
            state, detail = run_state(plan.run_dir, stale_minutes * 60)
            counts[state] += 1
            runs.append({"run_name": plan.run_name, "run_dir": str(plan.run_dir), "state": state, "detail": detail})
        out[name] = {"expected": len(plans), "counts": counts, "runs": runs}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spikelora.status", description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", nargs="?", default="results")
    parser.add_argument("--sweep", action="append", help="only these sweeps (repeatable); default: all")
    parser.add_argument("--stale-minutes", type=float, default=30.0, help="heartbeat age that marks a run stale")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        status = sweep_status(args.results_dir, args.sweep, args.stale_minutes)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"{'sweep':<14} {'expected':>8} " + " ".join(f"{s:>9}" for s in STATES))
    for name, s in status.items():
        print(f"{name:<14} {s['expected']:>8} " + " ".join(f"{s['counts'][k]:>9}" for k in STATES))
    for name, s in status.items():
        pending = [r for r in s["runs"] if r["state"] not in ("complete", "missing")]
        missing = [r for r in s["runs"] if r["state"] == "missing"]
        if pending or (missing and len(missing) < s["expected"]):
            print(f"\n{name}:")
            for r in pending:
                print(f"  {r['state']:<8} {r['run_name']}  {r['detail']}")
            for r in missing:
                print(f"  missing  {r['run_name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
