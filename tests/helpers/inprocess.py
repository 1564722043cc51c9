"""The command-line tools' work done in the test process, where the subprocess is not what a test
checks (a subprocess pays ~10 s of imports before it does anything).

``run_here(args, tmp)`` is what ``run_cli(args, tmp)`` trains (the same overrides, composed the
same way, through :func:`spikelora.run.run`): it returns the record and raises what the run
raises. ``main_here(module, args)`` calls a tool's ``main(argv)`` and returns what ``run_cli``
would (exit status, stdout, stderr). Kills and signals, fresh interpreters, console output,
Hydra's multirun launchers and exit-status glue stay in subprocesses (:mod:`clirun`).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import io
import subprocess
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from spikelora.experiment.confdir import CONF_DIR


def runner_overrides(args: list[str], tmp: Path) -> list[str]:
    """``args`` plus what ``run_cli`` adds: cache and results under ``tmp``, no progress bars."""
    extra = [f"cache_dir={tmp / 'cache'}", "trainer.disable_tqdm=true"]
    if not any(a.startswith("results_dir=") for a in args):
        extra.append(f"results_dir={tmp / 'results'}")
    return [*args, *extra]


def compose_run(args: list[str], tmp: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=runner_overrides(args, tmp))


def run_here(args: list[str], tmp: Path) -> dict[str, Any]:
    """One run of ``python -m spikelora.run ARGS`` in this process; its record (``metrics.json``)."""
    from spikelora.run import run

    try:
        return run(compose_run(args, tmp))
    finally:
        settle_heap()


_settled = False


def settle_heap() -> None:
    """After the first run in this process, move what is alive (torch, transformers, datasets, ...:
    most of the heap) out of the garbage collector's sight (:func:`gc.freeze`).

    Each run calls ``gc.collect()`` (``accelerate``'s ``free_memory`` at the start of training),
    which in a test process that holds every library scans millions of objects (~0.5 s a run).
    Frozen objects are never freed, so only what is alive after a full collection is frozen, once;
    each later run's garbage is collected as before.
    """
    global _settled
    if not _settled:
        _settled = True
        gc.collect()
        gc.freeze()


def main_here(module: str, args: list[str]) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` through ``MODULE.main(ARGS)`` in this process (status, report, export)."""
    found = importlib.import_module(module)
    main = getattr(found, "main", None) or importlib.import_module(f"{module}.__main__").main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's refusals
            code = exit_.code
    code = 0 if code is None else code if isinstance(code, int) else 1
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())
