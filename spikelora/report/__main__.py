"""Command line: ``python -m spikelora.report [RESULTS_DIR] --out reports/`` and ``... select-vth``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import build_report, select_vth


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spikelora.report", description=build_report.__doc__)
    parser.add_argument("results_dir", nargs="?", default="results")
    parser.add_argument("--out", default="reports", help="output directory (default: reports/)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds each cell should have (default 5)")
    parser.add_argument(
        "--gap", choices=["ref", "epoch"], default="ref", help="generalisation gap definition (default: ref)"
    )
    args = parser.parse_args(argv)
    report = build_report(args.results_dir, args.out, expected_seeds=args.seeds, gap=args.gap)
    print(
        f"{report.n_complete} complete runs -> {len(report.tables)} tables, {len(report.figures)} figure files "
        f"in {Path(args.out)} (see {Path(args.out) / 'report.md'}); {len(report.excluded)} runs left out."
    )
    for run_dir, why in report.excluded:
        print(f"  left out: {run_dir} ({why})")
    return 0


def _select_vth(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spikelora.report select-vth", description=select_vth.__doc__)
    parser.add_argument("results_dir", nargs="?", default="results")
    parser.add_argument("--delta-a", type=float, default=1.0, help="MCC tolerance δ_A, in MCC percentage points")
    parser.add_argument("--delta-l", type=float, default=0.05, help="eval loss tolerance δ_L")
    parser.add_argument("--experiment", default="vth")
    args = parser.parse_args(argv)
    try:
        choice = select_vth(args.results_dir, args.delta_a, args.delta_l, args.experiment)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"A* (best MCC) = {choice.best_mcc:.2f}   L* (lowest eval loss) = {choice.lowest_loss:.4f}")
    print(f"{'V_θ':>6} {'MCC':>8} {'loss':>8}  admissible (MCC >= A*-{args.delta_a:g}, loss <= L*+{args.delta_l:g})")
    for v, a, loss, ok in choice.candidates:
        print(f"{v:>6g} {a:>8.2f} {loss:>8.4f}  {'yes' if ok else 'no'}")
    print(f"selected V_θ = {choice.vth:g}" if choice.vth is not None else "no V_θ satisfies both tolerances")
    return 0


def main(argv: list[str] | None = None) -> int:
    from ..record import RecordError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "select-vth":
            return _select_vth(argv[1:])
        return _report(argv)
    except RecordError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
