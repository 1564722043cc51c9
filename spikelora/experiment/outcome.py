"""What a run reports when it ends: the complete record's content, the console summary, and the
per-job result that a multirun's summary (:mod:`spikelora.report.multirun`) reads."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from .record import RunDir, utc_now

JOB_FILE = "spikelora_job.json"


def assemble(attempt, plan, built, trainer, train_output, t0: float) -> dict[str, Any]:
    """The complete record of an attempt (``metrics.json``) from the trainer's evaluations and the history.

    Everything is derived from the history and the evaluation records, never from the Trainer's
    own counters of this process, so a resumed attempt's record equals an uninterrupted one's.
    """
    main_key = built.spec.main_metric
    last_step = trainer.state.global_step
    strip = ("type", "split", "module_sparsity", "non_token_sparsity", "ops", "module_ops")
    final: dict[str, Any] = {}
    by_eval: dict[tuple, dict] = {}
    for record in trainer.eval_records:
        if record["step"] == last_step:
            final.update({k: v for k, v in record.items() if k not in strip})
        by_eval.setdefault((record["step"], record["epoch"]), {}).update(record)
    candidates = [r for r in by_eval.values() if r.get(main_key) is not None]
    best = max(candidates, key=lambda r: r[main_key]) if candidates else {}
    best = {k: v for k, v in best.items() if k not in strip}
    prefix = built.spec.eval_prefix
    steps = [r for r in attempt.history() if r.get("type") == "step"]
    losses = [r["loss"] for r in steps if r.get("loss") is not None]
    # NaN/inf are written to the history as null: those steps are the non-finite ones.
    nonfinite = [r["step"] for r in steps if r.get("loss") is None]
    timing = dict(attempt.info.get("timing", {}))
    timing.update(
        ended_utc=utc_now(),
        runtime_s=time.time() - t0,
        train_runtime_s=(train_output.metrics.get("train_runtime") if train_output is not None else None),
        tokenized_from_cache=built.tokenized_from_cache,
        resumed_from_step=attempt.info.get("resumed_from_step"),  # set by Attempt.start
    )
    info = {k: v for k, v in attempt.info.items() if k not in ("timing", "resumed_from_step")}
    info["provenance"] = {**info.get("provenance", {}), "data": built.facts["data"], "model": built.facts["model_id"]}
    return {
        **info,
        **{k: v for k, v in built.facts.items() if k not in ("data", "model_id")},
        "main_metric": main_key,
        "final": final,
        "best": best,
        "gen_gap_ref": final.get(f"{prefix}_gen_gap_ref"),
        "gen_gap_epoch": final.get(f"{prefix}_gen_gap_epoch"),
        "eval_sparsity": final.get(f"{prefix}_sparsity"),
        "eval_sparsity_pooled": final.get(f"{prefix}_sparsity_pooled"),
        "train": {
            "train_loss_mean": sum(losses) / len(losses) if losses else None,
            "global_step": last_step,
            "steps_recorded": len(losses),
            "steps_nonfinite": len(nonfinite),
            "first_nonfinite_step": nonfinite[0] if nonfinite else None,
        },
        "eval_sparsity_reference": final.get(f"{prefix}_sparsity_reference"),
        "ops": trainer.ops.get(prefix),  # per real token, the final evaluation (see spikelora.ops)
        "non_token_sparsity": trainer.non_token_sparsity or None,
        "timing": timing,
    }


def divergence(metrics: dict[str, Any]) -> str | None:
    """Why an attempt's result is not a result (None if it is): a non-finite training loss at some
    step (counted by :func:`assemble` from the history), or a non-finite loss at the final evaluation."""
    train = metrics.get("train") or {}
    reasons = []
    if train.get("steps_nonfinite"):
        total = train["steps_nonfinite"] + train.get("steps_recorded", 0)
        reasons.append(
            f"training loss not finite at {train['steps_nonfinite']} of {total} steps "
            f"(first: step {train['first_nonfinite_step']})"
        )
    # The final loss, not the main metric: a finite model can have an undefined metric (Pearson of
    # constant predictions is NaN), which is a poor result, not a diverged one.
    final, main = metrics.get("final") or {}, metrics.get("main_metric", "")
    loss_key = main.rsplit("_", 1)[0] + "_loss"
    if loss_key in final and not _finite(final[loss_key]):
        reasons.append(f"{loss_key} = {final[loss_key]} at the final evaluation")
    mean = train.get("train_loss_mean")
    if mean is not None and not _finite(mean):
        reasons.append(f"train_loss_mean = {mean}")
    return "; ".join(reasons) or None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def print_summary(metrics: dict[str, Any], plan) -> None:
    final = metrics["final"]
    lines = [
        "",
        f"== {plan.run_name}: complete ==",
        f"record:      {plan.run_dir}",
        f"steps:       {metrics['train']['global_step']}   runtime {metrics['timing']['runtime_s']:.1f}s",
        f"train size:  {metrics['train_samples']}   eval size: {metrics['eval_samples']}",
    ]
    suffixes = (
        "_loss",
        "_mcc",
        "_accuracy",
        "_f1",
        "_pearson",
        "_spearman",
        "_sparsity",
        "_gen_gap_ref",
        "_gen_gap_epoch",
    )
    for key, value in final.items():
        if isinstance(value, float) and key.endswith(suffixes):
            lines.append(f"{key:<34} {value:.4f}")
    best = metrics.get("best") or {}
    main = metrics["main_metric"]
    if best.get(main) is not None:
        lines.append(f"best {main}: {best[main]:.4f} at epoch {best.get('epoch', 0):.2f} (step {best.get('step')})")
    print("\n".join(lines))


def _hydra_output_dir() -> Path | None:
    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def job_result(results_dir: str, status: str, metrics: dict | None, error: str | None = None) -> float | None:
    """Leave this job's outcome in its Hydra output directory (for the multirun table); return its main metric."""
    value = None
    name = run_dir = None
    if metrics:
        value = (metrics.get("final") or {}).get(metrics.get("main_metric", ""))
        name = metrics.get("run_name")
        if metrics.get("experiment") and name:
            run_dir = str(RunDir.path_for(results_dir, str(metrics["experiment"]), name))
    out = _hydra_output_dir()
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            overrides = list(HydraConfig.get().overrides.task)
            (out / JOB_FILE).write_text(
                json.dumps(
                    {
                        "overrides": overrides,
                        "run_name": name,
                        "run_dir": run_dir,
                        "status": status,
                        "main_metric": value,
                        "error": error,
                    }
                )
            )
        except OSError:
            pass  # the table is a convenience; the run record is what counts
    return value
