"""``python -m spikelora.run task=cola adapter=spike r=16``: one fine-tuning run, recorded in results/.

The flow: config (Hydra, ``conf/``) → data + model + adapter → :class:`SpikeLoraTrainer` →
:class:`RunStore` (``results/<experiment>/<run_name>/``). A run whose record is complete is
skipped unless ``force=true``.
"""

from __future__ import annotations

import logging
import math
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("spikelora.run")


@dataclass(frozen=True)
class Plan:
    """The resolved hyperparameters of one run and where it is recorded."""

    task: str
    adapter: str
    model: str
    r: int | None
    vth: float | None
    lr: float
    dropout: float | None
    seed: int
    epochs: float
    batch_size: int
    run_name: str
    run_dir: Path


def _fmt(x: float) -> str:
    return f"{x:g}"


def plan_run(cfg: DictConfig) -> Plan:
    """Validate the composed config and derive the run's hyperparameters and name."""
    from .tasks import get_task

    spec = get_task(cfg.task.name)
    adapter = cfg.adapter.type
    lr = cfg.lr if cfg.lr is not None else cfg.task.lr
    if cfg.trainer.learning_rate is not None:
        lr = cfg.trainer.learning_rate
    epochs = cfg.epochs if cfg.epochs is not None else cfg.task.epochs
    if cfg.trainer.num_train_epochs is not None:
        epochs = cfg.trainer.num_train_epochs
    batch = cfg.trainer.per_device_train_batch_size or cfg.task.batch_size
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    if not (isinstance(epochs, (int, float)) and epochs > 0):
        raise ValueError(f"epochs must be positive, got {epochs!r}.")
    if not (isinstance(batch, int) and batch > 0):
        raise ValueError(f"the batch size must be a positive integer, got {batch!r}.")
    if not isinstance(cfg.seed, int):
        raise ValueError(f"seed must be an integer, got {cfg.seed!r}.")
    if not (isinstance(cfg.max_length, int) and cfg.max_length > 8):
        raise ValueError(f"max_length must be an integer > 8, got {cfg.max_length!r}.")
    r = vth = dropout = None
    if adapter != "full":
        r = cfg.adapter.r
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            raise ValueError(f"r must be a positive integer (the adapter rank), got r={r!r}.")
        dropout = float(cfg.adapter.dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
    if adapter == "spike":
        vth = float(cfg.adapter.v_threshold)
        if not (math.isfinite(vth) and vth >= 0):
            raise ValueError(f"vth (the firing threshold) must be >= 0, got {vth}.")
    parts = [] if cfg.model.name == "deberta_v3_base" else [cfg.model.name]
    parts += [spec.name, adapter]
    if r is not None:
        parts.append(f"r{r}")
    if vth is not None:
        parts.append(f"vth{_fmt(vth)}")
    parts.append(f"lr{_fmt(lr)}")
    if dropout is not None:
        parts.append(f"p{_fmt(dropout)}")
    parts.append(f"s{cfg.seed}")
    name = "-".join(parts)
    run_dir = Path(cfg.results_dir).expanduser() / str(cfg.experiment_name) / name
    return Plan(spec.name, adapter, cfg.model.name, r, vth, float(lr), dropout, cfg.seed, epochs, batch, name, run_dir)


def training_arguments(cfg: DictConfig, plan: Plan):
    from transformers import TrainingArguments

    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.update(
        learning_rate=plan.lr,
        num_train_epochs=plan.epochs,
        per_device_train_batch_size=plan.batch_size,
        seed=plan.seed,
        output_dir=str(plan.run_dir / "checkpoints"),
        report_to=[],
        logging_dir=None,
        label_names=["labels"],
    )
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return TrainingArguments(**kwargs)
    except TypeError as err:
        raise ValueError(f"Bad trainer.* key: {err}. trainer.* keys must be TrainingArguments fields.") from err


def versions() -> dict[str, str]:
    import datasets
    import peft
    import torch
    import transformers

    from . import __version__

    return {
        "spikelora": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "datasets": datasets.__version__,
    }


def _start_wandb(cfg: DictConfig, plan: Plan):
    if not cfg.logger.get("wandb", False):
        return None
    import wandb

    return wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group,
        name=plan.run_name,
        tags=list(cfg.logger.tags or []),
        mode=cfg.logger.mode,
        dir=str(plan.run_dir),
        config=OmegaConf.to_container(cfg, resolve=True),
        reinit="finish_previous",
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; return its ``metrics.json`` content.

    A complete record is skipped (unless ``force``); a run directory locked by another live
    process is skipped; an interrupted run resumes from its latest checkpoint.
    """
    from .store import STATUS_FAILED, RunStore, read_json
    from .tasks import get_task

    plan = plan_run(cfg)
    spec = get_task(plan.task)
    args = training_arguments(cfg, plan)  # a bad trainer.* key fails here, before anything is written
    store = RunStore(plan.run_dir)
    if store.is_complete() and not cfg.force:
        log.info("Skipping %s: a complete record exists in %s (force=true re-runs it).", plan.run_name, plan.run_dir)
        print(f"skipped (complete): {plan.run_dir}")
        return read_json(store.metrics_path)
    if not store.acquire():
        print(f"skipped (running in another process): {plan.run_dir}")
        return {"status": "running", "run_name": plan.run_name}
    if store.is_complete() and not cfg.force:  # completed by another process since the check above
        store.release()
        print(f"skipped (complete): {plan.run_dir}")
        return read_json(store.metrics_path)
    try:
        return _execute(cfg, plan, spec, store, args)
    except BaseException as err:
        # A run that fails before training starts (bad data file, model not found) is recorded too.
        if store.status() != STATUS_FAILED:
            store.fail(
                {"run_name": plan.run_name, "experiment": str(cfg.experiment_name)}, f"{type(err).__name__}: {err}"
            )
        raise
    finally:
        store.release()


def _execute(cfg: DictConfig, plan: Plan, spec, store, args) -> dict[str, Any]:
    from transformers import DataCollatorWithPadding, set_seed

    from .apply import apply_adapter, count_parameters
    from .data import load_task_data, source_fingerprint, tokenize_task
    from .models import build_model_and_tokenizer
    from .synthetic import write_synthetic
    from .trainer import SpikeLoraTrainer, main_metric_key

    t0 = time.time()
    set_seed(plan.seed)
    data_dir = cfg.task.data_dir
    if cfg.task.get("synthetic", False):
        if data_dir is None:
            raise ValueError("task.synthetic=true needs task.data_dir: where to write the generated files.")
        write_synthetic(spec.name, data_dir)
    split_seed = int(cfg.task.get("split_seed", 0))
    raw = load_task_data(spec, data_dir, split_seed=split_seed)
    model, tokenizer = build_model_and_tokenizer(cfg.model, spec, seed=plan.seed)
    cache_dir = cfg.cache_dir if cfg.cache_dir else None
    data, from_cache = tokenize_task(
        raw, tokenizer, spec, cfg.max_length, cache_dir, source_fingerprint(spec, data_dir, split_seed)
    )
    model = apply_adapter(model, cfg.adapter, cfg.model.target_modules, cfg.model.get("modules_to_save"))
    trainable, total = count_parameters(model)
    eval_sets = {s: data[s] for s in spec.eval_splits}
    info = {
        "run_name": plan.run_name,
        "experiment": str(cfg.experiment_name),
        "task": plan.task,
        "model": plan.model,
        "adapter": plan.adapter,
        "r": plan.r,
        "vth": plan.vth,
        "lr": plan.lr,
        "dropout": plan.dropout,
        "seed": plan.seed,
        "epochs": plan.epochs,
        "batch_size": plan.batch_size,
        "train_samples": len(data["train"]),
        "eval_samples": {s: len(d) for s, d in eval_sets.items()},
        "trainable_params": trainable,
        "total_params": total,
        "tokenized_from_cache": from_cache,
        "versions": versions(),
    }
    if cfg.force:
        shutil.rmtree(store.checkpoint_dir, ignore_errors=True)
    checkpoint = store.latest_checkpoint()
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    if checkpoint is not None:
        step = int(checkpoint.name.split("-")[1])
        kept = store.resume(config_yaml, info, step)
        info["resumed_from_step"] = step
        print(f"resuming {plan.run_name} from {checkpoint}")
    else:
        kept = []
        store.start(config_yaml, info)
    wandb_run = None
    try:
        wandb_run = _start_wandb(cfg, plan)
        trainer = SpikeLoraTrainer(
            model=model,
            args=args,
            train_dataset=data["train"],
            eval_dataset=eval_sets if len(eval_sets) > 1 else next(iter(eval_sets.values())),
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            task=spec,
            store=store,
            spike=plan.adapter == "spike",
            wandb_run=wandb_run,
        )
        trainer.restore_records(kept)
        _maybe_inject_fault(trainer, plan.run_name)
        train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        trainer.finish_recording()
        evaluated_now = [r for r in trainer.eval_records if r["step"] == trainer.state.global_step]
        if not evaluated_now:  # the last evaluation predates the last step (max_steps, eval_strategy=no)
            trainer.evaluate()
        if cfg.save_adapter and plan.adapter != "full" and store.writer:
            model.save_pretrained(str(plan.run_dir / "adapter"))
        metrics = _assemble(info, trainer, train_output, main_metric_key(spec), time.time() - t0)
        store.finish(metrics, {k: v for k, v in trainer.module_sparsity.items()} or None)
        if not cfg.keep_checkpoints and store.writer:
            shutil.rmtree(store.checkpoint_dir, ignore_errors=True)
    except BaseException as err:
        store.fail({**info, "runtime_s": time.time() - t0}, f"{type(err).__name__}: {err}")
        if wandb_run is not None:
            wandb_run.finish(exit_code=1)
        raise
    if wandb_run is not None:
        wandb_run.summary.update({k: v for k, v in metrics["final"].items() if isinstance(v, (int, float))})
        wandb_run.finish()
    _print_summary(metrics, plan)
    return metrics


def _maybe_inject_fault(trainer, run_name: str) -> None:
    """Fault injection for testing sweeps: ``SPIKELORA_FAIL_RUN=REGEX`` (matched against the run
    name) makes the run raise after ``SPIKELORA_FAIL_AFTER_STEP`` optimiser steps (default 1)."""
    import os
    import re

    pattern = os.environ.get("SPIKELORA_FAIL_RUN")
    if not pattern or not re.search(pattern, run_name):
        return
    from transformers import TrainerCallback

    after = int(os.environ.get("SPIKELORA_FAIL_AFTER_STEP", "1"))

    class InjectedFault(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= after:
                raise RuntimeError(f"injected fault (SPIKELORA_FAIL_RUN) at step {state.global_step}")

    trainer.add_callback(InjectedFault())


def _assemble(info: dict, trainer, train_output, main_key: str, runtime: float) -> dict[str, Any]:
    last_step = trainer.state.global_step
    final: dict[str, Any] = {}
    for record in trainer.eval_records:
        if record["step"] == last_step:
            final.update({k: v for k, v in record.items() if k not in ("type", "split", "module_sparsity")})
    by_eval: dict[tuple, dict] = {}
    for record in trainer.eval_records:
        by_eval.setdefault((record["step"], record["epoch"]), {}).update(record)
    candidates = [r for r in by_eval.values() if r.get(main_key) is not None]
    best = max(candidates, key=lambda r: r[main_key]) if candidates else {}
    best = {k: v for k, v in best.items() if k not in ("type", "split", "module_sparsity")}
    prefix = main_key[: -len(trainer.task.metrics[0]) - 1]  # "eval" or "eval_<first split>"
    return {
        **info,
        "main_metric": main_key,
        "final": final,
        "best": best,
        "gen_gap_ref": final.get(f"{prefix}_gen_gap_ref"),
        "gen_gap_epoch": final.get(f"{prefix}_gen_gap_epoch"),
        "eval_sparsity": final.get(f"{prefix}_sparsity"),
        "eval_sparsity_pooled": final.get(f"{prefix}_sparsity_pooled"),
        "train": {
            "train_loss_mean": train_output.training_loss,
            "global_step": last_step,
            "train_runtime_s": train_output.metrics.get("train_runtime"),
        },
        "non_token_sparsity": trainer.non_token_sparsity or None,
        "runtime_s": runtime,
    }


def _print_summary(metrics: dict[str, Any], plan: Plan) -> None:
    final = metrics["final"]
    lines = [
        "",
        f"== {plan.run_name}: complete ==",
        f"record:      {plan.run_dir}",
        f"steps:       {metrics['train']['global_step']}   runtime {metrics['runtime_s']:.1f}s",
        f"train size:  {metrics['train_samples']}   eval size: {metrics['eval_samples']}",
    ]
    for key, value in final.items():
        if isinstance(value, float) and key.endswith(
            (
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
        ):
            lines.append(f"{key:<34} {value:.4f}")
    best = metrics.get("best") or {}
    if best:
        lines.append(f"best {metrics['main_metric']}: {best.get(metrics['main_metric'])} at epoch {best.get('epoch')}")
    print("\n".join(lines))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        run(cfg)
    except Exception as err:
        if multirun:
            # One failing run never stops a sweep: it is recorded as failed (when it got that far)
            # and the launcher goes on with the next job.
            log.exception("run failed; continuing the sweep")
            print(f"error (run failed, sweep continues): {type(err).__name__}: {err}", file=sys.stderr)
            return
        if isinstance(err, ValueError):
            # Bad configuration or data: one clear line, not a traceback.
            log.error("%s", err)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
