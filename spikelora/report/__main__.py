"""Command line: ``python -m spikelora.report [RESULTS_DIR] --out reports/`` and its subcommands.

Subcommands: ``claims`` (the claims ledger), ``compare`` (any runs, grouped), ``select-vth``
(Eq. 6–7). Without a subcommand it writes the paper's tables and figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..experiment.confdir import default_results_dir
from ..experiment.record import scan

SUBCOMMANDS = {
    "claims": "the claims ledger: each empirical claim of the paper, ours, effect, 95 % CI, test, verdict",
    "compare": "compare any runs: mean ± std over seeds per group (--by KEYS --metric KEY)",
    "select-vth": "choose V_θ by the paper's Eq. 6–7 from a V_θ sweep",
    "method-comparison": "one JSON per run in the shape of PEFT's method_comparison results",
    "matched-sparsity": "SpikeLoRA's mean sparsity per task, as overrides for the ablation's matched controls",
}


def _report(argv: list[str]) -> int:
    epilog = "subcommands (python -m spikelora.report SUBCOMMAND --help):\n" + "\n".join(
        f"  {name:<11} {text}" for name, text in SUBCOMMANDS.items()
    )
    parser = argparse.ArgumentParser(
        prog="python -m spikelora.report",
        usage="python -m spikelora.report [{claims,compare,select-vth,method-comparison}] [RESULTS_DIR] [options]",
        description="Without a subcommand: write every table and figure that the runs in RESULTS_DIR allow into --out.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results_dir", nargs="?", default=None, help="default: results_dir of conf/config.yaml")
    parser.add_argument("--out", default="reports", help="output directory (default: reports/)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds each cell should have (default 5)")
    parser.add_argument(
        "--gap", choices=["ref", "epoch"], default="ref", help="generalisation gap definition (default: ref)"
    )
    args = parser.parse_args(argv)
    args.results_dir = args.results_dir or default_results_dir()
    from .build import build_report

    report = build_report(args.results_dir, args.out, expected_seeds=args.seeds, gap=args.gap)
    print(
        f"{report.n_complete} complete runs -> {len(report.tables)} tables, {len(report.figures)} figure files "
        f"in {Path(args.out)} (see {Path(args.out) / 'report.md'}); {len(report.excluded)} runs left out."
    )
    for run_dir, why in report.excluded:
        print(f"  left out: {run_dir} ({why})")
    return 0


def _select_vth(argv: list[str]) -> int:
    from .build import select_vth

    parser = argparse.ArgumentParser(prog="python -m spikelora.report select-vth", description=select_vth.__doc__)
    parser.add_argument("results_dir", nargs="?", default=None, help="default: results_dir of conf/config.yaml")
    parser.add_argument("--delta-a", type=float, default=1.0, help="MCC tolerance δ_A, in MCC percentage points")
    parser.add_argument("--delta-l", type=float, default=0.05, help="eval loss tolerance δ_L")
    parser.add_argument("--experiment", default="vth")
    args = parser.parse_args(argv)
    args.results_dir = args.results_dir or default_results_dir()
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


def _claims(argv: list[str]) -> int:
    from . import claims

    parser = argparse.ArgumentParser(
        prog="python -m spikelora.report claims",
        description=claims.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results_dir", nargs="?", default=None, help="default: results_dir of conf/config.yaml")
    parser.add_argument("--out", default="reports", help="output directory (default: reports/)")
    parser.add_argument("--gap", choices=["ref", "epoch"], default="ref", help="generalisation gap definition")
    args = parser.parse_args(argv)
    args.results_dir = args.results_dir or default_results_dir()
    ledger = claims.write_claims(args.results_dir, args.out, gap=args.gap)
    counts: dict[str, int] = {}
    for c in ledger:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    print(f"{len(ledger)} claim rows ({summary}) -> {Path(args.out) / 'claims.md'}, {Path(args.out) / 'claims.json'}")
    _print_left_out(scan(args.results_dir)[1])
    return 0


def _split(values: list[str]) -> list[str]:
    return [k.strip() for v in values for k in v.split(",") if k.strip()]


def _compare(argv: list[str]) -> int:
    from . import compare

    parser = argparse.ArgumentParser(
        prog="python -m spikelora.report compare",
        description=compare.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results_dir", nargs="?", default=None, help="default: results_dir of conf/config.yaml")
    parser.add_argument("--by", action="append", default=[], help="record keys to group by (comma-separated)")
    parser.add_argument(
        "--metric", action="append", default=[], help="record keys to average (comma-separated; repeatable)"
    )
    parser.add_argument("--experiment", default=None, help="only runs of this experiment name")
    parser.add_argument("--x", default=None, help="the key on the x axis of the metric figure (default: first swept)")
    parser.add_argument("--out", default="reports/compare", help="output directory (default: reports/compare/)")
    args = parser.parse_args(argv)
    args.results_dir = args.results_dir or default_results_dir()
    metrics = _split(args.metric) or ["main"]
    try:
        table, paths = compare.compare(
            args.results_dir, _split(args.by), metrics, args.out, experiment=args.experiment, x=args.x
        )
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    print(compare.format_compare(table), end="")
    print(f"{len(table)} groups -> {', '.join(str(p) for p in paths if p.suffix != '.pdf')}")
    return 0


def _matched_sparsity(argv: list[str]) -> int:
    from . import questions

    parser = argparse.ArgumentParser(
        prog="python -m spikelora.report matched-sparsity",
        description=questions.matched_sparsity.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results_dir", help="the study's runs, e.g. results/ablation")
    parser.add_argument("--min-seeds", type=int, default=5, help="complete SpikeLoRA runs each task needs (default 5)")
    parser.add_argument("--task", action="append", help="only this task (repeatable; default: every task on disk)")
    args = parser.parse_args(argv)
    try:
        values = questions.matched_sparsity(args.results_dir, min_seeds=args.min_seeds, tasks=args.task)
    except questions.StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(" ".join(f"matched_sparsity.{task}={value}" for task, value in values.items()))
    return 0


def _method_comparison(argv: list[str]) -> int:
    from . import method_comparison

    parser = argparse.ArgumentParser(
        prog="python -m spikelora.report method-comparison", description=method_comparison.__doc__
    )
    parser.add_argument("results_dir", nargs="?", default=None, help="default: results_dir of conf/config.yaml")
    parser.add_argument("--out", default="reports/method_comparison", help="output directory")
    args = parser.parse_args(argv)
    args.results_dir = args.results_dir or default_results_dir()
    written, left_out = method_comparison.write_method_comparison(args.results_dir, args.out)
    print(f"{len(written)} run(s) -> {args.out}")
    _print_left_out(left_out)
    return 0


def _print_left_out(left_out: list[tuple[str, str]]) -> None:
    for run_dir, why in left_out:
        print(f"  left out: {run_dir} ({why})")


def main(argv: list[str] | None = None) -> int:
    from ..experiment.record import RecordError

    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "select-vth": _select_vth,
        "claims": _claims,
        "compare": _compare,
        "method-comparison": _method_comparison,
        "matched-sparsity": _matched_sparsity,
    }
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return _report(argv)
    except RecordError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
