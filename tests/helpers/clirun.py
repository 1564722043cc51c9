"""The project's command-line tools run as users run them: a subprocess from the repository root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from environment import pinned

ROOT = Path(__file__).resolve().parents[2]
HELPERS = str(Path(__file__).resolve().parent)


def run_cli(
    args: list[str], tmp: Path, env: dict | None = None, module: str = "spikelora.run", **kw
) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS``; for the runner, results and cache go under ``tmp`` unless ``args`` say where.

    The fault callbacks of ``tests/helpers`` are importable in the child (``PYTHONPATH``). The child
    gets the pinned environment (:mod:`environment`: nothing of the caller's HF_HUB_OFFLINE, WANDB_*,
    ...) plus ``env``: a test that needs one of those variables passes it here.
    """
    cmd = [sys.executable, "-m", module, *args]
    if module == "spikelora.run":
        cmd += [f"cache_dir={tmp / 'cache'}", "trainer.disable_tqdm=true"]
        if not any(a.startswith("results_dir=") for a in args):
            cmd.append(f"results_dir={tmp / 'results'}")
    full_env = {**pinned(), "HYDRA_FULL_ERROR": "0", "PYTHONPATH": HELPERS, **(env or {})}
    kw.setdefault("timeout", 900)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=full_env, **kw)
