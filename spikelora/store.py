"""The results store: one directory per run under ``results/<experiment_name>/<run_name>/``.

Files of a run:

``config.yaml``          the resolved configuration
``metrics.json``         final metrics, gen gaps, sparsity, sample counts, runtime, versions, ``status``
``history.jsonl``        one JSON object a line: ``step`` (per optimiser step), ``train_log``, ``eval``
``module_sparsity.json`` ``{split: {module_name: sparsity}}`` of the last evaluation (SpikeLoRA)
``heartbeat``            touched at every logging step (age = liveness, for the status tool)
``checkpoints/``         the latest epoch checkpoint while the run is not complete
``.lock``                held by the process training the run

Whole files are written atomically (temporary file, fsync, rename), so a run that dies never
leaves a ``status: complete`` record behind; ``history.jsonl`` is append-only and its reader
drops a torn last line.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON readers reject them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_history(path: Path) -> list[dict]:
    """The records of a ``history.jsonl``; a torn last line (a run killed mid-write) is dropped."""
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
    return records


def is_main_process() -> bool:
    """Rank 0 of a torchrun/accelerate launch (or a plain process): the only one that writes records."""
    return int(os.environ.get("RANK", "0")) == 0


class RunStore:
    """Reads and writes the record of one run directory.

    Only the main process of a distributed launch writes. ``acquire()`` takes an exclusive lock on
    the directory (released when the process ends, even when killed), so two launches of the
    same run never write into it at once. ``heartbeat()`` is called at every logging step; the
    status tool reads its age to tell a live run from a dead one.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.metrics_path = self.dir / "metrics.json"
        self.history_path = self.dir / "history.jsonl"
        self.config_path = self.dir / "config.yaml"
        self.sparsity_path = self.dir / "module_sparsity.json"
        self.heartbeat_path = self.dir / "heartbeat"
        self.checkpoint_dir = self.dir / "checkpoints"
        self.writer = is_main_process()
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ state
    def status(self) -> str | None:
        if not self.metrics_path.exists():
            return None
        try:
            return read_json(self.metrics_path).get("status")
        except (json.JSONDecodeError, OSError):
            return None

    def is_complete(self) -> bool:
        return self.status() == STATUS_COMPLETE

    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat, or None if there is none."""
        try:
            return time.time() - self.heartbeat_path.stat().st_mtime
        except FileNotFoundError:
            return None

    def latest_checkpoint(self) -> Path | None:
        """The newest complete ``checkpoints/checkpoint-N`` (HF writes ``trainer_state.json`` last)."""
        found = []
        for path in self.checkpoint_dir.glob("checkpoint-*"):
            m = re.fullmatch(r"checkpoint-(\d+)", path.name)
            if m and (path / "trainer_state.json").exists():
                found.append((int(m.group(1)), path))
        return max(found)[1] if found else None

    # ------------------------------------------------------------------ locking
    def acquire(self) -> bool:
        """Lock the run directory for this process; False if another live process holds it."""
        if not self.writer:
            return True
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ writing
    def start(self, config_yaml: str, info: dict[str, Any]) -> None:
        """Begin a fresh run: config, a ``running`` record and an empty history."""
        if not self.writer:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config_path, config_yaml)
        write_atomic(self.history_path, "")
        self.sparsity_path.unlink(missing_ok=True)
        write_json(self.metrics_path, {"status": STATUS_RUNNING, **info})
        self.heartbeat()

    def resume(self, config_yaml: str, info: dict[str, Any], step: int) -> list[dict]:
        """Continue from a checkpoint at ``step``: drop history written after it; return what is kept."""
        kept = [r for r in read_history(self.history_path) if r.get("step", 0) <= step]
        if self.writer:
            write_atomic(self.config_path, config_yaml)
            write_atomic(self.history_path, "".join(json.dumps(_clean(r)) + "\n" for r in kept))
            write_json(self.metrics_path, {"status": STATUS_RUNNING, **info, "resumed_from_step": step})
            self.heartbeat()
        return kept

    def heartbeat(self) -> None:
        if self.writer:
            self.heartbeat_path.write_text(f"{time.time():.0f}\n", encoding="utf-8")

    def append_history(self, records: Iterable[dict]) -> None:
        if not self.writer:
            return
        lines = "".join(json.dumps(_clean(r)) + "\n" for r in records)
        if lines:
            with self.history_path.open("a", encoding="utf-8") as f:
                f.write(lines)
                f.flush()

    def finish(self, metrics: dict[str, Any], module_sparsity: dict[str, Any] | None) -> None:
        if not self.writer:
            return
        if module_sparsity:
            write_json(self.sparsity_path, module_sparsity)
        write_json(self.metrics_path, {**metrics, "status": STATUS_COMPLETE})

    def fail(self, info: dict[str, Any], error: str) -> None:
        if self.writer:
            write_json(self.metrics_path, {**info, "status": STATUS_FAILED, "error": error})
