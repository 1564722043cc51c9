"""The Hugging Face ``Trainer`` with what the paper reports recorded as it trains.

Per optimiser step (``history.jsonl`` records of type ``step``): the training loss of the step,
the global pre-clip gradient L2 norm and the learning rate. They are kept on the device and
written at each logging step, so recording adds no host sync per step.

Per evaluation (type ``eval``): the task metrics, SpikeLoRA sparsity over the whole evaluation
set weighted by real tokens (module mean and token-pooled, plus every module), and two
generalisation gaps:

``gen_gap_ref``    ``eval_loss`` minus the last logged training loss, i.e. the running mean over
                   the last logging window (the authors' definition)
``gen_gap_epoch``  ``eval_loss`` minus the mean training loss over the optimiser steps since the
                   previous evaluation (the final epoch when evaluating every epoch)

Per training log (type ``train_log``): HF's logged values plus the sparsity seen in training
since the previous log.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
import wandb
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainerState
from transformers.trainer_callback import ProgressCallback

from ..ops import ops_report, reset_ops
from ..telemetry import load_counter_state, reference_sparsity, reset_sparsity, sparsity_report
from .callbacks import COUNTERS_FILE, BestAdapter, CounterCheckpoint, TrainingProgress, instantiate_callbacks
from .plan import Plan
from .record import MODULE_OPS, MODULE_SPARSITY
from .tasks import TaskSpec, compute_metrics

if not hasattr(Trainer, "_get_grad_norm"):  # pragma: no cover - guards a transformers upgrade
    raise ImportError(
        "spikelora.experiment.trainer records per-step gradient norms through Trainer._get_grad_norm, which this "
        "transformers version lacks; install the version range pinned in pyproject.toml."
    )


class SpikeLoraTrainer(Trainer):
    """``Trainer`` that writes step, log and eval records to a recorder (a :class:`spikelora.experiment.record.Attempt`).

    ``recorder`` needs ``append_history(records)`` and ``heartbeat()``.
    """

    def __init__(
        self,
        *args: Any,
        task: TaskSpec,
        recorder: Any,
        spike: bool,
        energy: dict[str, Any] | None = None,
        ops_convention: str = "neurobench",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, compute_metrics=self._task_metrics, **kwargs)
        self.task = task
        self.recorder = recorder
        self.spike = spike
        self._pending_loss: torch.Tensor | None = None
        self._pending_steps: list[tuple[int, int, torch.Tensor, Any, float]] = []
        self._window_losses: list[float] = []  # per-step losses since the previous evaluation
        self._log_window: list[float] = []  # per-step losses since the previous training log
        self._eval_depth = 0
        self.eval_records: list[dict[str, Any]] = []
        self.module_sparsity: dict[str, dict[str, float]] = {}
        self.ops: dict[str, dict[str, Any]] = {}  # per split: the last evaluation's operation counts
        self.module_ops: dict[str, dict[str, Any]] = {}
        self.energy: dict[str, Any] | None = energy
        self.ops_convention = ops_convention
        self.non_token_sparsity: dict[str, dict[str, float]] = {}

    def restore_records(self, kept: list[dict[str, Any]]) -> None:
        """On resume: the evaluations already recorded, and the step losses since the last one."""
        self.eval_records = [r for r in kept if r.get("type") == "eval"]
        for r in self.eval_records:
            if "module_sparsity" in r:
                self.module_sparsity[r["split"]] = r["module_sparsity"]
            if "ops" in r:
                self.ops[r["split"]], self.module_ops[r["split"]] = r["ops"], r["module_ops"]
        last_eval = max((r["step"] for r in self.eval_records), default=0)
        self._window_losses = [r["loss"] for r in kept if r.get("type") == "step" and r["step"] > last_eval]
        last_log = max((r["step"] for r in kept if r.get("type") == "train_log"), default=0)
        self._log_window = [r["loss"] for r in kept if r.get("type") == "step" and r["step"] > last_log]
        for r in self.eval_records:
            if r.get("non_token_sparsity"):
                self.non_token_sparsity[r["split"]] = r["non_token_sparsity"]

    # -------------------------------------------------------------- per step
    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Returned losses are already scaled for gradient accumulation: their sum is the step's loss.
        self._pending_loss = loss if self._pending_loss is None else self._pending_loss + loss
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        lr = self.lr_scheduler.get_last_lr()[0] if self.lr_scheduler is not None else self.args.learning_rate
        # state.epoch still holds the previous step's value, whose floor is this step's epoch index.
        epoch_index = math.floor(self.state.epoch or 0.0)
        loss = self._pending_loss if self._pending_loss is not None else torch.tensor(float("nan"))
        self._pending_steps.append((self.state.global_step + 1, epoch_index, loss, grad_norm, lr))
        self._pending_loss = None
        return grad_norm

    def _flush_steps(self) -> None:
        if not self._pending_steps:
            return
        device = self._pending_steps[0][2].device
        values = torch.stack(
            [
                torch.stack(
                    [
                        loss.detach().float().reshape(()).to(device),
                        torch.as_tensor(norm if norm is not None else float("nan"), dtype=torch.float32)
                        .reshape(())
                        .to(device),
                    ]
                )
                for _, _, loss, norm, _ in self._pending_steps
            ]
        ).tolist()  # the one host transfer for all steps since the last flush
        records = []
        for (step, epoch_index, _, _, lr), (loss, norm) in zip(self._pending_steps, values):
            records.append(
                {"type": "step", "step": step, "epoch_index": epoch_index, "loss": loss, "grad_norm": norm, "lr": lr}
            )
            self._window_losses.append(loss)
            self._log_window.append(loss)
        self._pending_steps.clear()
        self.recorder.append_history(records)

    # -------------------------------------------------------------- logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        is_eval = any(k.startswith("eval_") for k in logs)
        if not is_eval:
            self._flush_steps()
            if "loss" in logs and self._log_window:
                # The window's mean from the step records (HF's own running sum restarts on resume).
                logs["loss"] = sum(self._log_window) / len(self._log_window)
                self._log_window = []
            if self.spike and "loss" in logs:
                report = sparsity_report(self.model, phase="train")
                reset_sparsity(self.model, phase="train")
                # Plain names: HF prefixes training logs itself (W&B shows train/sparsity).
                logs["sparsity"] = report.mean
                logs["sparsity_pooled"] = report.pooled
                if report.below_half:
                    logs["sparsity_below_half"] = report.below_half_mean
        super().log(logs, start_time)
        self.recorder.heartbeat()
        if not is_eval and "loss" in logs:
            # HF's end-of-training summary is not kept: after a resume its train_loss and runtime cover
            # only this process (the record's `train` block is computed from the whole history instead).
            entry = {"type": "train_log", "step": self.state.global_step, **self.state.log_history[-1]}
            self.recorder.append_history([entry])

    # -------------------------------------------------------------- evaluation
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        self._eval_depth += 1
        try:
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self._eval_depth -= 1
            if self._eval_depth == 0:
                self._window_losses = []

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        self._flush_steps()
        reset_ops(self.model, phase="eval")  # the gates' sparsity counters and the operation counters
        output = super().evaluation_loop(
            dataloader,
            description,
            prediction_loss_only=prediction_loss_only,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        p, m = metric_key_prefix, output.metrics
        if self.spike:
            report = sparsity_report(self.model, phase="eval")
            m[f"{p}_sparsity"] = report.mean
            m[f"{p}_sparsity_pooled"] = report.pooled
            # The authors' figure (last call of each gate, padding included): comparable with the paper's.
            m[f"{p}_sparsity_reference"] = reference_sparsity(self.model)
            # How much of the sparsity is the sign alone (a one-sided gate silences every h < 0), and
            # for continuous gates (sigmoid) the share of gate values below 0.5 (they have no exact zeros).
            m[f"{p}_sparsity_negative"] = report.negative_mean
            if report.below_half:
                m[f"{p}_sparsity_below_half"] = report.below_half_mean
            self.module_sparsity[p] = report.modules
            self.non_token_sparsity[p] = report.non_token
        self.ops[p], self.module_ops[p] = ops_report(
            self.model, energy=self.energy, convention=self.ops_convention, phase="eval"
        )
        reset_ops(self.model, phase="eval")
        eval_loss = m.get(f"{p}_loss")
        ref = self._last_logged_train_loss()
        window = self._window_losses
        epoch_mean = sum(window) / len(window) if window else None
        m[f"{p}_train_loss_ref"] = ref
        m[f"{p}_train_loss_epoch"] = epoch_mean
        m[f"{p}_gen_gap_ref"] = eval_loss - ref if eval_loss is not None and ref is not None else None
        m[f"{p}_gen_gap_epoch"] = eval_loss - epoch_mean if eval_loss is not None and epoch_mean is not None else None
        record = {
            "type": "eval",
            "split": p,
            "step": self.state.global_step,
            "epoch": self.state.epoch,
            **m,
        }
        if self.spike:
            record["module_sparsity"] = self.module_sparsity[p]
            record["non_token_sparsity"] = self.non_token_sparsity[p]
        record["ops"], record["module_ops"] = self.ops[p], self.module_ops[p]
        self.eval_records.append(record)
        self.recorder.append_history([record])
        if self.spike and "wandb" in self.args.report_to:
            _wandb_module_table(p, self.module_sparsity[p])
        return output

    def _last_logged_train_loss(self) -> float | None:
        for entry in reversed(self.state.log_history):
            if "loss" in entry and not any(k.startswith("eval_") for k in entry):
                return float(entry["loss"])
        return None

    def _task_metrics(self, prediction) -> dict[str, float]:
        predictions = prediction.predictions
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        return compute_metrics(self.task, predictions, prediction.label_ids)

    def record_files(self) -> dict[str, Any]:
        """The per-module files of the record (see :mod:`spikelora.experiment.record`)."""
        return {MODULE_SPARSITY: dict(self.module_sparsity) or None, MODULE_OPS: dict(self.module_ops) or None}

    def finish_recording(self) -> None:
        """Write whatever step records are still pending (call after ``train``)."""
        self._flush_steps()


def _wandb_module_table(split: str, modules: dict[str, float]) -> None:
    """Per-module sparsity of an evaluation as a W&B table (HF's callback logs the scalars)."""
    if wandb.run is not None:
        table = wandb.Table(columns=["module", "sparsity"], data=[[k, v] for k, v in modules.items()])
        wandb.run.log({f"{split}/module_sparsity": table}, commit=False)


def make_trainer(plan: Plan, built: Any, recorder: Any, kept: list[dict], callbacks: list) -> SpikeLoraTrainer:
    """The trainer of a run, with the history already recorded (on resume) restored."""
    eval_sets = built.eval_sets
    trainer = SpikeLoraTrainer(
        model=built.model,
        args=plan.training_arguments(recorder.checkpoint_dir),
        train_dataset=built.data["train"],
        eval_dataset=eval_sets if len(eval_sets) > 1 else next(iter(eval_sets.values())),
        data_collator=DataCollatorWithPadding(built.tokenizer),
        processing_class=built.tokenizer,
        task=built.spec,
        recorder=recorder,
        spike=plan.spike,
        energy=plan.energy,
        ops_convention=plan.ops_convention,
        callbacks=[
            *callbacks,
            CounterCheckpoint(),
            *(plan.adapter_spec.callbacks() if plan.adapter_spec else []),  # AdaLoRA: its budget allocation
            *_optional_callbacks(plan, recorder, kept),
            *instantiate_callbacks(plan.callbacks),
        ],
    )
    _quiet_progress(trainer)
    trainer.restore_records(kept)
    return trainer


def _optional_callbacks(plan: Plan, recorder: Any, kept: list[dict]) -> list:
    found = []
    if plan.save_best and plan.adapter != "full":
        found.append(BestAdapter(plan.main_metric, recorder.best_adapter_dir, kept))
    if plan.early_stopping_patience:
        found.append(EarlyStoppingCallback(early_stopping_patience=int(plan.early_stopping_patience)))
    return found


def _quiet_progress(trainer: Trainer) -> None:
    """One progress bar (training), not a second one nested inside it at every evaluation."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(TrainingProgress())


def train_or_resume(trainer: SpikeLoraTrainer, checkpoint: Any, preemption: Any = None) -> Any:
    """Train (from ``checkpoint`` if given) and make sure the last step has an evaluation.

    A checkpoint at the end of training is not trained from again (Trainer would run one more
    step past ``max_steps``): its weights and state are loaded and only what is missing is done.
    Returns the ``TrainOutput`` (None when nothing was trained).
    """
    output = None
    state_file = None if checkpoint is None else checkpoint / "trainer_state.json"
    counters = None if checkpoint is None else checkpoint / COUNTERS_FILE
    if counters is not None and counters.is_file():
        load_counter_state(trainer.model, torch.load(counters, weights_only=True))
    if state_file is not None and _training_done(state_file):
        trainer._load_from_checkpoint(str(checkpoint))
        trainer.state = TrainerState.load_from_json(str(state_file))
    else:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    trainer.finish_recording()
    if preemption is not None and preemption.requested:
        return output  # checkpointed mid-training: no final evaluation
    if not any(r["step"] == trainer.state.global_step for r in trainer.eval_records):
        trainer.evaluate()  # the last evaluation predates the last step (max_steps, eval_strategy=no)
    return output


def _training_done(state_file: Any) -> bool:
    state = json.loads(state_file.read_text())
    return bool(state.get("max_steps")) and state.get("global_step", 0) >= state["max_steps"]
