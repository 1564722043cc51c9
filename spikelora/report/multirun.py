"""The end of a Hydra multirun: a table of every job (overrides, status, main metric) and a
comparison of its complete runs; the sweep exits 1 if any job did not complete.

Named in ``conf/config.yaml`` (``hydra.callbacks.summary``); it reads what each job left in its
Hydra output directory (:data:`spikelora.experiment.outcome.JOB_FILE`) and the records themselves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ..experiment.outcome import JOB_FILE
from ..experiment.record import RecordError, RunDir
from .compare import multirun_summary


class MultirunSummary(Callback):
    """At the end of a multirun: a table of every job (overrides, status, main metric); exit 1 if any failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = []
        for path in sorted(
            sweep_dir.glob(f"*/{JOB_FILE}"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
        ):
            try:
                jobs.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError):
                jobs.append({"overrides": [path.parent.name], "status": "unknown", "main_metric": None})
        if not jobs:
            return
        print(f"\n== multirun: {len(jobs)} job(s) ==")
        print(f"{'status':<12} {'main metric':>11}  job")
        for job in jobs:
            value = job.get("main_metric")
            shown = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
            label = job.get("run_name") or " ".join(job.get("overrides", []))
            print(f"{job.get('status', '?'):<12} {shown:>11}  {label}")
        _print_comparison(jobs)
        bad = [j for j in jobs if j.get("status") not in ("complete", "running")]
        if bad:
            print(f"{len(bad)} job(s) did not complete; re-launch the same command to retry them.", file=sys.stderr)
            sys.exit(1)


def _print_comparison(jobs: list[dict]) -> None:
    """Mean ± std over seeds of this multirun's complete runs, grouped by the swept keys."""
    records = []
    for job in jobs:
        if job.get("status") == "complete" and job.get("run_dir"):
            try:
                records.append({**RunDir(job["run_dir"]).load(), "run_dir": job["run_dir"]})
            except RecordError:
                continue
    values: dict[str, set] = {}
    for job in jobs:
        for item in job.get("overrides", []):
            key, _, value = item.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    swept = [k for k, v in values.items() if len(v) > 1 and k != "seed" and "." not in k]
    # A swept config group that records do not carry (``arm``: a bundle of adapter settings) is
    # told apart by the method label, which every comparison groups by anyway.
    groups = [k for k in swept if not any(k in r for r in records)]
    swept = [k for k in swept if k not in groups]
    if groups and records:
        print(f"\n({', '.join(groups)}: config group(s), not record keys; their runs are told apart by method)")
    if not records or not (swept or groups):
        return
    print(f"\n== by {', '.join(swept or ['method'])} (mean ± std over seeds) ==")
    try:
        print(multirun_summary(records, swept))
    except (KeyError, ValueError) as err:  # a key the records do not carry: the job table above stands
        print(f"(no comparison: {err})")
