"""``python -m spikelora.run task=cola adapter=spike r=16``: one fine-tuning run, recorded in results/.

The recipe: plan (validate, identity, directory; nothing written yet) → skip if an identical run
is complete → lock → build data, model and adapter → train (resuming the last attempt's
checkpoint) → record. Each step's concern lives in its own module of the runner's wing,
:mod:`spikelora.experiment`: ``plan``, ``record``, ``build``, ``trainer``, ``callbacks``, ``outcome``.
This front door imports them lazily, so that ``--help`` answers without loading torch.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from .experiment.confdir import CONF_DIR

log = logging.getLogger("spikelora.run")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; return its complete record (``metrics.json``).

    A complete record of the same identity is reused unless ``force``; a run locked by another
    live process is skipped; an attempt that did not complete resumes from its latest checkpoint.
    """
    from .experiment.identity import find_legacy
    from .experiment.plan import plan_run
    from .experiment.record import RunDir

    plan = plan_run(cfg)  # every setting is checked here: nothing is written before it passes
    run_dir = RunDir(plan.run_dir)
    if run_dir.promotion_pending() and run_dir.acquire():
        try:  # a kill during the last promotion: finish it (the record it completes is whole)
            if run_dir.recover_promotion():
                print(f"finished the interrupted promotion of the complete record: {plan.run_dir}")
        finally:
            run_dir.release()
    if not plan.force and (done := run_dir.complete_record()) is not None:
        print(f"skipped (complete): {plan.run_dir}")
        return done
    if not plan.force and (old := find_legacy(plan.run_dir, plan.identity)) is not None:
        results = plan.run_dir.parents[1]
        print(
            f"note: {old} holds this run, recorded under an older identity; it is trained anew. "
            f"To keep it instead, stop and run: python -m spikelora.status {results} --rekey",
            file=sys.stderr,
        )
    if not run_dir.acquire():
        print(f"skipped (running in another process): {plan.run_dir}")
        return {"status": "running", "run_name": plan.run_name}
    try:
        if not plan.force and (done := run_dir.complete_record()) is not None:  # completed meanwhile
            print(f"skipped (complete): {plan.run_dir}")
            return done
        return _attempt(plan, run_dir)
    finally:
        run_dir.release()


def _attempt(plan, run_dir) -> dict[str, Any]:
    from transformers import set_seed

    from .experiment.build import build
    from .experiment.callbacks import Preempted, Preemption
    from .experiment.outcome import assemble, divergence, print_summary
    from .experiment.provenance import git_state, machine, versions
    from .experiment.record import checkpoint_step, utc_now
    from .experiment.tracking import finish_wandb, start_wandb
    from .experiment.trainer import make_trainer, train_or_resume
    from .export import write_card

    t0 = time.time()
    attempt = run_dir.attempt(fresh=plan.force)
    checkpoint = attempt.resume_checkpoint
    for path, damage in attempt.skipped_checkpoints:
        then = f"resuming from {checkpoint.name}" if checkpoint is not None else "starting afresh"
        print(f"warning: {path} is damaged ({damage}): not resumed from; {then}.", file=sys.stderr)
    info = {
        **plan.info(),
        "provenance": {
            "canonical_config": plan.canonical,
            "content": plan.content,
            "versions": versions(),
            "git": git_state(),
            **machine(),
        },
        "timing": {"started_utc": utc_now()},
    }
    kept = attempt.start(plan.config_yaml, info, checkpoint_step(checkpoint))
    wandb_run = None
    with Preemption(list(plan.preempt_signals)) as preemption:
        try:
            wandb_run = start_wandb(plan)
            set_seed(plan.seed)
            built = build(plan)
            for note in built.facts["warnings"]:
                print(f"warning: {note}", file=sys.stderr)
            trainer = make_trainer(plan, built, attempt, kept, callbacks=[preemption])
            train_output = train_or_resume(trainer, checkpoint, preemption)
            if preemption.requested:
                attempt.interrupt(trainer.state.global_step, f"signal {preemption.signum}")
                print(f"interrupted at step {trainer.state.global_step}: {plan.run_dir} (a re-run resumes)")
                raise Preempted(preemption.signum)
            if plan.save_adapter and plan.adapter != "full" and attempt.writer:
                built.model.save_pretrained(str(attempt.adapter_dir))
            metrics = assemble(attempt, plan, built, trainer, train_output, t0)
            if (reason := divergence(metrics)) is not None:
                attempt.diverge(reason)
                finish_wandb(wandb_run, ok=False)
                print(f"diverged: {plan.run_dir}: {reason} (not a result: left out of tables and claims)")
                return {"status": "diverged", "run_name": plan.run_name, "experiment": plan.experiment, "error": reason}
            kept = [d.name for d in (attempt.adapter_dir, attempt.best_adapter_dir) if d.is_dir()]
            metrics["kept_weights"] = kept or (
                "none: full fine-tuning keeps no trained weights"
                if plan.adapter == "full"
                else "none: save_adapter=false"
            )
            for adapter_dir in (attempt.adapter_dir, attempt.best_adapter_dir):
                if adapter_dir.is_dir():
                    write_card(adapter_dir, metrics)
            attempt.finish(metrics, trainer.record_files(), keep_checkpoints=plan.keep_checkpoints)
        except Preempted:
            finish_wandb(wandb_run, ok=False)
            raise
        except BaseException as err:
            attempt.fail(f"{type(err).__name__}: {err}")
            finish_wandb(wandb_run, ok=False)
            raise
    finish_wandb(wandb_run, ok=True)
    print_summary(metrics, plan)
    return {**metrics, "status": "complete"}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """The Hydra entry point; returns the main metric (for Hydra's sweepers, e.g. Optuna)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .experiment.callbacks import Preempted
    from .experiment.outcome import job_result

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    results_dir = str(cfg.results_dir)
    try:
        metrics = run(cfg)
    except Preempted as stop:
        job_result(results_dir, "interrupted", None)
        sys.exit(stop.exit_code)  # requeue-friendly; stops a sweep too (the re-launch resumes it)
    except Exception as err:
        job_result(results_dir, "failed", None, f"{type(err).__name__}: {err}")
        if multirun:
            # One failing run never stops a sweep: it is recorded as failed and the launcher goes
            # on; the sweep ends non-zero (see spikelora.report.multirun.MultirunSummary).
            log.exception("run failed; continuing the sweep")
            print(f"error (run failed, sweep continues): {type(err).__name__}: {err}", file=sys.stderr)
            return None
        if isinstance(err, ValueError):
            # Bad configuration or data: one clear line, not a traceback.
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        raise
    status = str(metrics.get("status"))
    value = job_result(results_dir, status, metrics, metrics.get("error"))
    if status == "diverged" and not multirun:
        print(f"error: the run diverged: {metrics.get('error')}", file=sys.stderr)
        sys.exit(1)
    return value


def fast_help() -> str:
    """``--help`` without Hydra's listing of every option of every group (seconds of config copies)."""
    base = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"), resolve=False)
    groups = {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(CONF_DIR.iterdir())
        if d.is_dir() and d.name != "hydra"
    }
    lines = [
        "usage: python -m spikelora.run [KEY=VALUE ...] [GROUP=OPTION ...] [+experiment=NAME] [-m for a multirun]",
        "",
        "One fine-tuning run (LoRA, SpikeLoRA or full fine-tuning), recorded in results_dir/experiment_name/.",
        "",
        "Config groups (GROUP=OPTION; experiment/sweep/search with a leading +):",
        *(f"  {g:<11} {', '.join(opts)}" for g, opts in groups.items()),
        "",
        "Settings (KEY=VALUE; trainer.* are Hugging Face TrainingArguments):",
        *(f"  {k:<24} {v!s:.70}" for k, v in base.items() if k not in ("defaults", "hydra", "trainer")),
        "",
        "The composed config: python -m spikelora.run --cfg job --resolve [overrides]; Hydra's help: --hydra-help",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        print(fast_help())
        sys.exit(0)
    main()
