"""Weights & Biases, through Hugging Face's integration (``report_to=["wandb"]``).

HF's ``WandbCallback`` logs the config, every training log and every evaluation. It reuses a run
that is already open, so this module only opens it with what HF cannot know: a stable id derived
from the run identity (``resume="allow"``: a requeued job continues its W&B run), the experiment
as ``group``, tags, and the effective config.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf


def wandb_enabled(cfg: DictConfig) -> bool:
    return bool(cfg.logger.get("wandb", False))


def wandb_run_id(plan: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{plan.experiment}-{plan.run_name}")[-120:]


def start_wandb(cfg: DictConfig, plan: Any) -> Any:
    """Open (or resume) the run's W&B run; None when ``logger`` does not ask for W&B."""
    if not wandb_enabled(cfg):
        return None
    import wandb

    tags = [f"task:{plan.task}", f"adapter:{plan.adapter}", f"model:{plan.model}"]
    tags += [f"r:{plan.r}"] if plan.r is not None else []
    tags += [f"vth:{plan.vth:g}"] if plan.vth is not None else []
    tags += list(cfg.logger.get("tags") or [])
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group,
        job_type=cfg.logger.get("job_type") or "train",
        name=plan.run_name,
        id=wandb_run_id(plan),
        resume="allow",
        tags=tags,
        mode=cfg.logger.mode,
        dir=str(plan.run_dir),
        config={k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"},
        reinit="finish_previous",
    )


def finish_wandb(run: Any, ok: bool) -> None:
    if run is not None:
        run.finish(exit_code=0 if ok else 1)
