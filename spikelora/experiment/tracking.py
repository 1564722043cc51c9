"""Weights & Biases, through Hugging Face's integration (``report_to=["wandb"]``).

HF's ``WandbCallback`` logs the config, every training log and every evaluation. It reuses a run
that is already open, so this module only opens it with what HF cannot know: a stable id derived
from the run identity (``resume="allow"``: a requeued job continues its W&B run), the experiment
as ``group``, tags, and the effective config.
"""

from __future__ import annotations

import re
from typing import Any

import wandb

from .plan import Plan
from .record import RunDir


def wandb_run_id(plan: Plan) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{plan.experiment}-{plan.run_name}")[-120:]


def start_wandb(plan: Plan) -> Any:
    """Open (or resume) the run's W&B run; None when ``logger`` does not ask for W&B."""
    log = plan.logger
    if not log.wandb:
        return None
    tags = [f"task:{plan.task}", f"adapter:{plan.adapter}", f"model:{plan.model}"]
    tags += [f"r:{plan.r}"] if plan.r is not None else []
    tags += [f"vth:{plan.vth:g}"] if plan.vth is not None else []
    tags += list(log.tags)
    return wandb.init(
        project=log.project,
        entity=log.entity,
        group=log.group,
        job_type=log.job_type,
        name=plan.run_name,
        id=wandb_run_id(plan),
        resume="allow",
        tags=tags,
        mode=log.mode,
        dir=str(RunDir(plan.run_dir).ensure()),
        config=plan.config,
        reinit="finish_previous",
    )


def finish_wandb(run: Any, ok: bool) -> None:
    if run is not None:
        run.finish(exit_code=0 if ok else 1)
