"""The environment the tests run in, whatever the caller's shell holds.

Some variables change what the runner does: ``HF_HUB_OFFLINE=1`` adds refusals to the plan, a
``WANDB_MODE`` changes the W&B logger's mode, ``SPIKELORA_GLUE_DIR``/``SPIKELORA_CACHE`` move files,
``RANK`` decides whether records are written. None of them may leak from the caller into a test,
in-process or in a process a test starts: they are removed, and a test that tests one of them sets
it itself (``monkeypatch.setenv``, or ``env=`` of :func:`clirun.run_cli`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

PINNED = (
    # Hugging Face's offline switches (the plan refuses hub ids and hub datasets when they are set)
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    # the runner's own
    "SPIKELORA_GLUE_DIR",
    "SPIKELORA_CACHE",
    "HYDRA_FULL_ERROR",
    # torch.distributed: a rank other than 0 writes no record
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)
PINNED_PREFIXES = ("WANDB_",)  # WANDB_MODE, WANDB_DISABLED, WANDB_PROJECT, WANDB_DIR, WANDB_API_KEY, ...


def is_pinned(name: str) -> bool:
    return name in PINNED or name.startswith(PINNED_PREFIXES)


def pinned(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) without the pinned variables."""
    return {k: v for k, v in (os.environ if environ is None else environ).items() if not is_pinned(k)}


# What the caller had set, for the tests that take an input from it on purpose (SPIKELORA_GLUE_DIR:
# where the real GLUE files are); nothing else reads it.
CALLER: dict[str, str] = {}


def pin(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Remove the pinned variables from ``os.environ`` (undone with ``monkeypatch``); their names."""
    names = sorted(name for name in os.environ if is_pinned(name))
    for name in names:
        CALLER.setdefault(name, os.environ[name])
        monkeypatch.delenv(name)
    return names
