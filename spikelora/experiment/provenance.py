"""What produced a run: code, packages, machine, and the content fingerprints of data and model.

A fingerprint is the sha256 of a file's bytes. Hashing is done once per file per process: the
digest is cached by the file's real path, inode, size and modification time, so a sweep run in one
process (Hydra's basic launcher) hashes GLUE's large files once, and an edited file (its size or
mtime changes) is hashed again.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import datasets
import peft
import torch
import transformers

from .. import __version__
from .record import sha256_file

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The files of a model directory that can change its weights or its tokenizer.
WEIGHT_SUFFIXES = (".json", ".safetensors", ".bin", ".pth", ".pt", ".model", ".txt")
_SHA_CACHE: dict[tuple, str] = {}


def sha256_cached(path: Path) -> str:
    """``sha256_file(path)``, computed once per (real path, inode, size, mtime) in this process."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(Path(real))
    return _SHA_CACHE[key]


def path_fingerprint(path: Path) -> dict[str, str]:
    """``{relative name: sha256}`` of a file, or of a directory's config and weight files."""
    path = Path(path).expanduser()
    if path.is_file():
        return {path.name: sha256_cached(path)}
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    return {str(p.relative_to(path)): sha256_cached(p) for p in files}


def versions() -> dict[str, str]:
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
    """``{file name: sha256}`` of data files (cached: see :func:`sha256_cached`)."""
    return {p.name: sha256_cached(p) for p in sorted(paths)}
