"""Trainer callbacks for cross-cutting concerns: preemption, heartbeat, user callbacks from the config."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from ..telemetry import counter_state
from .record import write_checkpoint_manifest

log = logging.getLogger(__name__)


class Preempted(BaseException):
    """Raised after a preempted attempt was checkpointed and recorded: stops the process (and a sweep).

    A ``BaseException`` so that a multirun's per-job error policy does not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"preempted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 143 for SIGTERM


class Preemption(TrainerCallback):
    """Turn SLURM's warning signal into a checkpoint at the current step and a clean stop.

    Used as a context manager around the attempt, it installs handlers for ``signals`` (names
    such as ``SIGTERM``, ``SIGUSR1``) that only set a flag; at the end of the current optimiser
    step the callback asks the Trainer to save a checkpoint and stop, and keeps it from
    evaluating at the end of an epoch it cut short (an uninterrupted run would not evaluate there).
    """

    def __init__(self, signals: list[str] | tuple[str, ...] = ("SIGTERM",)) -> None:
        self.signals = [signal.Signals[s] if isinstance(s, str) else signal.Signals(s) for s in signals]
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> Preemption:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            # Logging and evaluation due at this step still happen, as in an uninterrupted run.
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch_done = abs((state.epoch or 0.0) - round(state.epoch or 0.0)) < 1e-6
        if self.requested and not epoch_done:
            # The loop was cut mid-epoch: no epoch-end evaluation (the resumed run makes it later).
            control.should_evaluate = False
            control.should_save = False
        return control


class TrainingProgress(ProgressCallback):
    """HF's progress bar for training only (evaluations are short and print their metrics)."""

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        return None


class BestAdapter(TrainerCallback):
    """Keep the adapter of the best evaluation so far (``save_best=true``) beside the last one."""

    def __init__(self, main_key: str, directory: Any, kept: list[dict]) -> None:
        self.main_key = main_key
        self.directory = directory
        values = [r[main_key] for r in kept if r.get("type") == "eval" and r.get(main_key) is not None]
        self.best = max(values) if values else None  # restored on resume, with the directory

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        value = (metrics or {}).get(self.main_key)
        if value is None or (self.best is not None and value <= self.best):
            return
        self.best = value
        if state.is_world_process_zero and model is not None:
            model.save_pretrained(str(self.directory))


COUNTERS_FILE = "spikelora_counters.pt"


class CounterCheckpoint(TrainerCallback):
    """Saves the gates' training counters with each checkpoint, so that the training sparsity of the
    logging window a preemption cut is the same after the resume as without it."""

    def on_save(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and model is not None:
            path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", COUNTERS_FILE)
            if os.path.isdir(os.path.dirname(path)):
                torch.save(counter_state(model), path)
                # Last: the manifest that a resume checks the checkpoint against (written only if it reads back).
                damage = write_checkpoint_manifest(Path(os.path.dirname(path)))
                if damage is not None:
                    log.warning(
                        "checkpoint-%d does not read back (%s): a resume will not use it", state.global_step, damage
                    )


def instantiate_callbacks(callbacks_cfg: Any) -> list[TrainerCallback]:
    """The ``callbacks`` config group: ``{name: {_target_: module.Class, ...}}`` built with Hydra."""
    if not callbacks_cfg:
        return []
    built = []
    for name, conf in callbacks_cfg.items():
        cb = instantiate(conf)
        if not isinstance(cb, TrainerCallback):
            raise ValueError(f"callbacks.{name} builds {type(cb).__name__}, not a transformers TrainerCallback.")
        built.append(cb)
    return built
