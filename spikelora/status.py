"""``python -m spikelora.status [RESULTS_DIR] [--sweep NAME] [KEY=VALUE ...] [--json]``: where every study stands.

For each sweep in ``conf/sweep`` it expands the grid into its runs and classifies each one:

``complete``     a complete record (its history intact)
``running``      a live process holds the run's lock
``interrupted``  preempted (SIGTERM): checkpointed at a step, a re-run resumes it
``failed``       the last attempt failed (the error is shown)
``diverged``     the last attempt trained, but its training or evaluation loss is not finite (not a result)
``stale``        recorded as running but no process holds the lock (killed, node lost)
``corrupt``      a record that cannot be read or whose history is missing or changed
``legacy``       a complete record whose directory carries an older hash than its run has now
                 (made before the identity covered the data's content, or before a setting it
                 recorded was declared result-neutral); ``--rekey`` gives it its current name
``missing``      no record yet

Exit status (``--json`` too): 0 when no run needs attention, 1 when any run is failed, diverged,
corrupt or stale (:data:`ATTENTION`), 2 for a bad command line or results directory.

Re-launching a sweep trains exactly the runs that are not complete (interrupted and stale ones
resume from their checkpoints). A sweep launched with overrides (``sweeps/launch.sh rank basic
trainer.max_steps=100``) has other run identities: give ``status`` the same overrides. The states are defined in :mod:`spikelora.experiment.record`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf.errors import MissingMandatoryValue

from .experiment.confdir import default_results_dir
from .experiment.record import STATES, RecordError, RunDir, check_results_dir

# The states a script must see: the run did not produce a result and no live process is on it.
ATTENTION = ("failed", "diverged", "corrupt", "stale")


def sweep_status(results_dir: str | Path, sweeps: list[str] | None = None, overrides: list[str] = ()) -> dict:
    """``{sweep: {"counts": {state: n}, "runs": [{run_name, run_dir, state, detail}]}}``.

    ``overrides``: those the sweep was launched with (``trainer.max_steps=100``); they change run identities.
    """
    from .experiment.identity import find_legacy  # torch and Hydra: not for --help
    from .experiment.sweeps import missing_values, sweep_names, sweep_plans

    check_results_dir(results_dir)
    out = {}
    seen: dict = {}
    for name in sweeps or sweep_names():
        counts = dict.fromkeys(STATES, 0)
        try:
            plans = sweep_plans(name, [*overrides, f"results_dir={results_dir}"])
        except MissingMandatoryValue as err:
            # A grid that takes a measured value (the ablation's matched controls): without it the
            # runs have no identity yet; say what to pass rather than fail every other sweep.
            missing = missing_values(name, [*overrides, f"results_dir={results_dir}"]) or [err.full_key]
            need = ", ".join(f"{k}=..." for k in missing)
            out[name] = {"expected": 0, "counts": counts, "runs": [], "needs": need}
            continue
        runs = []
        for plan in plans:
            state, detail = RunDir(plan.run_dir).state()
            if state == "missing" and (old := find_legacy(plan.run_dir, plan.identity, seen)) is not None:
                state, detail = "legacy", f"recorded under an older identity as {old.name}: --rekey adopts it"
            counts[state] += 1
            runs.append({"run_name": plan.run_name, "run_dir": str(plan.run_dir), "state": state, "detail": detail})
        out[name] = {"expected": len(plans), "counts": counts, "runs": runs}
    return out


def rekey_all(results_dir: str | Path) -> list[tuple[Path, Path]]:
    """Rekey every legacy record below ``results_dir`` (see :func:`spikelora.experiment.identity.rekey`)."""
    from .experiment.identity import rekey
    from .experiment.record import run_dirs

    done = []
    for run in run_dirs(results_dir):
        new = rekey(run)
        if new is not None:
            print(f"rekeyed: {run.path.name} -> {new.name}")
            done.append((run.path, new))
    print(f"{len(done)} legacy record(s) rekeyed in {results_dir}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spikelora.status",
        description=__doc__.split("\n\n")[0],
        epilog="states: complete running interrupted failed diverged stale corrupt legacy missing "
        "(docs/runner.md, Status). Exit status: 0 nothing needs attention; 1 some run is "
        f"{', '.join(ATTENTION)}; 2 bad arguments or results directory.",
    )
    parser.add_argument("results_dir", nargs="?", default=None, help="default: results_dir of conf/config.yaml")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="the overrides the sweep was launched with (as Hydra's)"
    )
    parser.add_argument("--sweep", action="append", help="only these sweeps (repeatable); default: all")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--rekey",
        action="store_true",
        help="rename every legacy record (an older identity) after its current identity, "
        "computed from the data and model fingerprints it recorded; then report as usual",
    )
    args = parser.parse_intermixed_args(argv)
    if args.results_dir is not None and "=" in args.results_dir:  # only overrides were given
        args.overrides, args.results_dir = [args.results_dir, *args.overrides], None
    args.results_dir = args.results_dir or default_results_dir()
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"not an override (KEY=VALUE): {' '.join(bad)}; the results directory comes first")
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        if args.rekey:
            rekey_all(args.results_dir)
        status = sweep_status(args.results_dir, args.sweep, args.overrides)
    except (ValueError, RecordError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    attention = sum(s["counts"][k] for s in status.values() for k in ATTENTION)
    code = 1 if attention else 0
    if args.json:
        print(json.dumps(status, indent=2))
        return code
    print(f"{'sweep':<14} {'expected':>8} " + " ".join(f"{s:>9}" for s in STATES))
    for name, s in status.items():
        if "needs" in s:
            print(f"{name:<14} {'-':>8} needs {s['needs']} (the overrides it was launched with)")
            continue
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
    if attention:
        print(f"\n{attention} run(s) need attention ({', '.join(ATTENTION)}): exit status 1", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
