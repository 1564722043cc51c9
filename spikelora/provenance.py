"""What produced a run: code, packages, machine, data and model fingerprints."""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from .record import sha256_file

_PROJECT_ROOT = Path(__file__).resolve().parents[1]
WEIGHT_SUFFIXES = (".json", ".safetensors", ".bin", ".pth", ".pt", ".model", ".txt")


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


def git_state(root: Path = _PROJECT_ROOT) -> dict[str, Any] | None:
    """Commit and dirty flag of the project checkout this code runs from (None outside a checkout)."""
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def machine() -> dict[str, str]:
    return {"host": socket.gethostname(), "platform": platform.platform()}


def files_sha256(paths: list[Path]) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(paths)}


def model_fingerprint(model_cfg: Any, model: Any) -> dict[str, Any]:
    """Identifier and fingerprint of the model: the sha256 of its local config/weight files, or the
    hub id with the commit it resolved to, or (built from a config) the hash of that config."""
    source = model_cfg.get("name_or_path") or model_cfg.get("checkpoint")
    out: dict[str, Any] = {"name": str(model_cfg.name), "kind": str(model_cfg.kind), "source": source}
    if model_cfg.get("hub_id"):
        out["hub_id"] = str(model_cfg.hub_id)
    path = Path(str(source)).expanduser() if source else None
    if path is not None and path.exists():
        files = (
            [path]
            if path.is_file()
            else [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
        )
        out["files_sha256"] = {str(p.relative_to(path) if path.is_dir() else p.name): sha256_file(p) for p in files}
    elif source:
        out["hub_commit"] = getattr(getattr(model, "config", None), "_commit_hash", None)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        text = config.to_json_string(use_diff=False)
    else:
        text = json.dumps(getattr(config, "__dict__", {}) or {}, sort_keys=True, default=str)
    out["config_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return out
