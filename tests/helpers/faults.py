"""Faults injected into real runs through the ``callbacks`` config group (tests only).

Usage on the command line: ``+callbacks.fault._target_=faults.FailAtStep +callbacks.fault.step=3``
with ``tests/helpers`` on ``PYTHONPATH``. ``match`` restricts a fault to run directories whose path
matches the regular expression (e.g. one job of a sweep).
"""

from __future__ import annotations

import errno
import os
import re

from transformers import TrainerCallback


class _Fault(TrainerCallback):
    def __init__(self, step: int = 1, match: str = "") -> None:
        self.step = int(step)
        self.match = match

    def applies(self, args) -> bool:
        return not self.match or re.search(self.match, str(args.output_dir)) is not None


class FailAtStep(_Fault):
    """Raise after optimiser step ``step``."""

    def on_step_end(self, args, state, control, **kwargs):
        if self.applies(args) and state.global_step >= self.step:
            raise RuntimeError(f"injected fault at step {state.global_step}")


class KillAtStep(_Fault):
    """Die like ``kill -9`` after optimiser step ``step`` (no handler runs)."""

    def on_step_end(self, args, state, control, **kwargs):
        if self.applies(args) and state.global_step >= self.step:
            os._exit(137)


class KillAtTrainEnd(_Fault):
    """Die after the final checkpoint, before the record is written."""

    def on_train_end(self, args, state, control, **kwargs):
        if self.applies(args):
            os._exit(137)


class SignalAtStep(_Fault):
    """Send this process a signal (default SIGTERM) at optimiser step ``step``, as SLURM would."""

    def __init__(self, step: int = 1, match: str = "", signal: str = "SIGTERM") -> None:
        super().__init__(step, match)
        self.signal = signal
        self.sent = False

    def on_step_end(self, args, state, control, **kwargs):
        import signal as sig

        if self.applies(args) and state.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), sig.Signals[self.signal])


class FillDiskAtEpochEnd(_Fault):
    """Fill the file system that holds the checkpoints (a real, small tmpfs in the tests) just
    before the first epoch's checkpoint is saved, so the save hits ENOSPC for real."""

    def on_epoch_end(self, args, state, control, **kwargs):
        if not self.applies(args):
            return
        filler = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(args.output_dir))), "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as err:
                assert err.errno == errno.ENOSPC
        with open(filler, "ab") as f:  # the last partial blocks too
            try:
                while True:
                    f.write(b"\0")
                    f.flush()
            except OSError:
                pass
