"""The run directory: its layout, its schema, and the only code that writes or reads it.

One directory per run identity (see :mod:`spikelora.experiment.identity`)::

    results/<experiment_name>/<run_name>-<hash8>/
        metrics.json          the last COMPLETE record (written last, when an attempt completes)
        config.yaml           the resolved config of that record
        history.jsonl         its step / train_log / eval records, one JSON object a line
        module_sparsity.json  {split: {module: sparsity}} of its last evaluation (SpikeLoRA)
        module_ops.json       per-module operation counts of its last evaluation (when recorded)
        adapter/              the trained adapter (LoRA, SpikeLoRA), with its model card
        adapter_best/         the best evaluation's adapter (save_best=true)
        checkpoints/          kept only with keep_checkpoints=true
        attempt/              the attempt in progress, or the last one that did not complete:
            metrics.json      status running | failed | interrupted, with its provenance
            config.yaml, history.jsonl, heartbeat, checkpoints/ (resumed from on a re-run)
        .lock                 held (flock) by the process running an attempt

A new attempt never touches the complete record: it works in ``attempt/`` and replaces the
record only once it has completed. ``metrics.json`` carries the sha256 of its ``history.jsonl``,
so a record whose history went missing or was changed reads as ``corrupt``, never as complete.
Whole files are written atomically (temporary file, fsync, rename) with the user's umask.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"
STATUS_DIVERGED = "diverged"  # trained to the end, but its training or evaluation loss is not finite: never a result
# What status/report call a run directory.
# legacy: a complete record made before content entered the identity (python -m spikelora.status --rekey)
STATES = ("complete", "running", "interrupted", "failed", "diverged", "stale", "corrupt", "legacy", "missing")

METRICS = "metrics.json"
CONFIG = "config.yaml"
HISTORY = "history.jsonl"
MODULE_SPARSITY = "module_sparsity.json"
MODULE_OPS = "module_ops.json"
ADAPTER = "adapter"
ADAPTER_BEST = "adapter_best"
CHECKPOINTS = "checkpoints"
ATTEMPT = "attempt"
HEARTBEAT = "heartbeat"
LOCK = ".lock"
PROMOTE = ".promote.json"  # what a completing attempt moves into the run directory
STAGED = ".complete.json"  # the complete record, staged in attempt/ until it replaces metrics.json
RESERVE = ".reserve"  # ballast freed on a full disk so that the failure can still be recorded
RESERVE_BYTES = 256 * 1024
# Promoted from attempt/ to the run directory when an attempt completes; metrics.json goes last.
RECORD_FILES = (CONFIG, HISTORY, MODULE_SPARSITY, MODULE_OPS, ADAPTER, ADAPTER_BEST)


# The paper's numeric gate settings (SpikeLoraConfig's defaults; tests/test_questions.py checks
# they agree): another value makes a variant of the method, named in run names and report labels
# so that no table or claim pools it with the paper's SpikeLoRA.
PAPER_GATE_SETTINGS: dict[str, float] = {"tau": 2.0, "surrogate_alpha": 2.0}


def gate_variant(adapter: dict[str, Any]) -> list[str]:
    """The ways a gated adapter's settings leave the paper's: ``["temporal", "soft_reset"]``,
    ``["learnable_vth"]``, ``["tau4"]`` ... (empty for the paper's gate; keys absent = defaults)."""
    out: list[str] = []
    if adapter.get("spike_mode", "step") != "step":
        out.append(str(adapter["spike_mode"]))
        if adapter.get("spike_reset", "hard") != "hard":
            out.append(f"{adapter['spike_reset']}_reset")
    # two_sided is not here: it is part of the gate's own name ("lif+two_sided", see plan._gate_label).
    for key, word in (("learnable_threshold", "learnable_vth"), ("learnable_tau", "learnable_tau")):
        if adapter.get(key):
            out.append(word)
    for key, short in (("tau", "tau"), ("surrogate_alpha", "alpha")):
        value = adapter.get(key)
        if value is not None and float(value) != PAPER_GATE_SETTINGS[key]:
            out.append(f"{short}{float(value):g}")
    if adapter.get("decay_input") is False:
        out.append("no_decay_input")
    if adapter.get("temperature") is not None:
        out.append(f"t{float(adapter['temperature']):g}")
    return out


class RecordError(ValueError):
    """A record or results directory that cannot be read as one; the message names the path."""


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_path_part(key: str, value: object) -> str:
    """``value`` if it can be one plain directory-name component, else ``ValueError`` naming ``key``.

    The one check of every value that becomes part of a run's path (experiment_name, and the run
    name's parts: model.name, task, adapter.type), so that no record is ever written outside
    ``results_dir``."""
    text = str(value)
    if not _PLAIN_NAME.match(text) or ".." in text:
        raise ValueError(
            f"{key} must be one plain directory name (letters, digits, '.', '_', '-'; no '..'), got {text!r}: "
            "it becomes part of the run's path, which never leaves results_dir."
        )
    return text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600: lab-mates on a shared directory must read it
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
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(_clean(obj), indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def checkpoint_step(path: Path | None) -> int | None:
    """N of a ``checkpoint-N`` directory (None for no checkpoint or another name)."""
    m = re.fullmatch(r"checkpoint-(\d+)", path.name) if path is not None else None
    return int(m.group(1)) if m else None


CHECKPOINT_MANIFEST = "spikelora_manifest.json"  # size and sha256 of each file, written once it is complete


def _file_damage(path: Path) -> str | None:
    """Why a checkpoint file cannot be loaded (None: it reads as its format says)."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".safetensors":
            with path.open("rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if path.stat().st_size != 8 + n + end:
                return f"{path.name}: {path.stat().st_size} bytes, its header says {8 + n + end}"
        elif path.suffix in (".pt", ".bin", ".pth"):
            if not zipfile.is_zipfile(path):
                return f"{path.name}: not a complete torch archive (truncated?)"
            with zipfile.ZipFile(path) as z:
                if (bad := z.testzip()) is not None:
                    return f"{path.name}: member {bad} fails its CRC"
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        return f"{path.name}: {type(err).__name__}: {err}"
    return None


def write_checkpoint_manifest(checkpoint: Path) -> str | None:
    """Check every file of a checkpoint just written and record its size and sha256 (the manifest is
    written last, and only for a checkpoint whose files all read back); returns the damage if any."""
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != CHECKPOINT_MANIFEST)
    for p in files:
        if (damage := _file_damage(p)) is not None:
            (checkpoint / CHECKPOINT_MANIFEST).unlink(missing_ok=True)
            return damage
    manifest = {str(p.relative_to(checkpoint)): [p.stat().st_size, sha256_file(p)] for p in files}
    write_json(checkpoint / CHECKPOINT_MANIFEST, manifest)
    return None


def checkpoint_damage(checkpoint: Path) -> str | None:
    """Why a checkpoint must not be resumed from (None: it is whole). With a manifest, every file's
    size and sha256 must match it; without one (written before manifests), each file must read as
    its format says."""
    if not (checkpoint / "trainer_state.json").is_file():
        return "trainer_state.json is missing (the checkpoint was not finished)"
    manifest_path = checkpoint / CHECKPOINT_MANIFEST
    if manifest_path.is_file():
        try:
            manifest = read_json(manifest_path)
        except (OSError, ValueError) as err:
            return f"{CHECKPOINT_MANIFEST}: {err}"
        for name, (size, digest) in manifest.items():
            path = checkpoint / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name}: {path.stat().st_size} bytes, {size} when it was written"
            if sha256_file(path) != digest:
                return f"{name}: changed since it was written (sha256)"
        return None
    for p in sorted(checkpoint.rglob("*")):
        if p.is_file() and (damage := _file_damage(p)) is not None:
            return damage
    return None


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_main_process() -> bool:
    """Rank 0 of a torchrun/accelerate launch (or a plain process): the only one that writes records."""
    return int(os.environ.get("RANK", "0")) == 0


def validate_record(m: Any, where: Path) -> dict:
    """``m`` if it is a complete record of the current schema, else :class:`RecordError` naming the problem."""
    if not isinstance(m, dict):
        raise RecordError(f"{where}: a record must be a JSON object, found {type(m).__name__}.")
    if m.get("status") != STATUS_COMPLETE:
        raise RecordError(f"{where}: status is {m.get('status')!r}, not complete.")
    for key, kind in (("final", dict), ("best", dict), ("train", dict), ("files", dict), ("main_metric", str)):
        if not isinstance(m.get(key), kind):
            raise RecordError(f"{where}: {key!r} must be a {kind.__name__}, found {m.get(key)!r:.60}.")
    for section in ("final", "best"):
        for key, value in m[section].items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise RecordError(f"{where}: {section}.{key} is not a number: {value!r:.60}.")
    return m


class RunState(NamedTuple):
    """What a run directory holds: one of :data:`STATES`, and a detail for people."""

    state: str
    detail: str = ""


class RunDir:
    """One run directory: reading its record, locking it, and starting attempts in it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.attempt_checkpoint_dir = self.path / ATTEMPT / CHECKPOINTS
        self.metrics_path = self.path / METRICS
        self.history_path = self.path / HISTORY
        self.config_path = self.path / CONFIG
        self.module_sparsity_path = self.path / MODULE_SPARSITY
        self.module_ops_path = self.path / MODULE_OPS
        self.adapter_dir = self.path / ADAPTER
        self.attempt_dir = self.path / ATTEMPT
        self.writer = is_main_process()
        self._lock_fd: int | None = None

    @staticmethod
    def path_for(results_dir: str | Path, experiment: str, run_name: str) -> Path:
        """Where the run ``run_name`` of ``experiment`` is recorded: the one place this is spelt."""
        root = Path(str(results_dir)).expanduser()
        path = root / check_path_part("experiment_name", experiment) / check_path_part("run name", run_name)
        return path

    def ensure(self) -> Path:
        """The run directory, created if needed."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    # ------------------------------------------------------------------ reading
    def load(self) -> dict[str, Any]:
        """The complete record; :class:`RecordError` if there is none or it is damaged."""
        try:
            m = read_json(self.metrics_path)
        except FileNotFoundError:
            raise RecordError(f"{self.path}: no complete record ({METRICS} is missing).") from None
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
            raise RecordError(f"{self.metrics_path}: unreadable ({err}).") from None
        validate_record(m, self.metrics_path)
        want = m["files"].get(HISTORY)
        if not self.history_path.is_file():
            raise RecordError(f"{self.path}: {HISTORY} is missing; the record cannot be trusted.")
        if want != sha256_file(self.history_path):
            raise RecordError(f"{self.path}: {HISTORY} does not match the record (changed after it was written).")
        for key, sizes in m["files"].items():
            if not key.endswith("/") or not isinstance(sizes, dict):
                continue
            folder = self.path / key.rstrip("/")
            for name, size in sizes.items():
                if not (folder / name).is_file() or (folder / name).stat().st_size != size:
                    raise RecordError(f"{self.path}: {key}{name} is missing or changed; the record kept it.")
        return m

    def promotion_pending(self) -> bool:
        """Whether a completing attempt was killed while its record replaced the old one."""
        return (self.attempt_dir / PROMOTE).is_file()

    def recover_promotion(self) -> bool:
        """Finish a promotion that a kill interrupted (the lock must be held); True if there was one."""
        if not self.writer or not self.promotion_pending():
            return False
        Attempt(self).promote()
        return True

    def history(self) -> list[dict]:
        return read_history(self.history_path)

    def module_sparsity(self) -> dict[str, dict[str, float]]:
        """``{split: {module: sparsity}}`` of the record's last evaluation (empty if none)."""
        try:
            data = read_json(self.module_sparsity_path)
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def complete_record(self) -> dict[str, Any] | None:
        """The complete record, or None (missing or damaged): one read, one history checksum."""
        try:
            return self.load()
        except RecordError:
            return None

    def is_complete(self) -> bool:
        return self.complete_record() is not None

    def attempt_record(self) -> dict | None:
        try:
            m = read_json(self.attempt_dir / METRICS)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return m if isinstance(m, dict) else None

    def state(self) -> RunState:
        """Where this run stands (see :data:`STATES`); tests the lock, so a dead run is never ``running``."""
        if self.locked_elsewhere():
            return RunState("running", "lock held by a live process")
        attempt = self.attempt_record()
        last = ""
        if attempt is not None and attempt.get("status") != STATUS_COMPLETE:
            last = f"last attempt {attempt.get('status')}: {str(attempt.get('error', ''))[:200]}".rstrip(": ")
        if self.metrics_path.exists():
            try:
                self.load()
                return RunState("complete", last)
            except RecordError as err:
                return RunState("corrupt", str(err))
        if attempt is None:
            if (self.attempt_dir / METRICS).exists():
                return RunState("corrupt", f"{self.attempt_dir / METRICS}: unreadable")
            return RunState("missing")
        status = attempt.get("status")
        if status == STATUS_FAILED:
            return RunState("failed", str(attempt.get("error", ""))[:300])
        if status == STATUS_DIVERGED:
            return RunState("diverged", str(attempt.get("error", ""))[:300])
        if status == STATUS_INTERRUPTED:
            return RunState("interrupted", f"at step {attempt.get('interrupted_at_step')}; a re-run resumes")
        age = _age(self.attempt_dir / HEARTBEAT)
        detail = "no heartbeat" if age is None else f"heartbeat {age / 60:.0f} min ago"
        return RunState("stale", f"{detail}, lock free: the process is gone; a re-run resumes")

    # ------------------------------------------------------------------ locking
    def acquire(self) -> bool:
        """Lock the run directory for this process; False if another live process holds it."""
        if not self.writer:
            return True
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, _FILE_MODE)
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

    def locked_elsewhere(self) -> bool:
        """Whether another process holds the lock now (read-only: creates nothing)."""
        if self._lock_fd is not None:
            return False
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ attempts
    def attempt(self, fresh: bool) -> Attempt:
        """The attempt to run now (the lock must be held): the previous one, to resume from its
        latest checkpoint, unless ``fresh`` or it has none; the complete record is never touched."""
        attempt = Attempt(self)
        diverged = (self.attempt_record() or {}).get("status") == STATUS_DIVERGED  # resuming would diverge again
        attempt.resume_checkpoint = None if fresh or diverged else attempt.latest_checkpoint()
        if self.writer and attempt.resume_checkpoint is None:
            shutil.rmtree(self.attempt_dir, ignore_errors=True)
        elif self.writer:
            for path, _ in attempt.skipped_checkpoints:  # damaged: never resumed from, nor rotated as newest
                shutil.rmtree(path, ignore_errors=True)
        return attempt


def _age(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


class Attempt:
    """The files of one attempt (``<run_dir>/attempt/``) and its life: start or resume, record, finish."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.dir = run.attempt_dir
        self.metrics_path = self.dir / METRICS
        self.history_path = self.dir / HISTORY
        self.checkpoint_dir = self.dir / CHECKPOINTS
        self.adapter_dir = self.dir / ADAPTER
        self.best_adapter_dir = self.dir / ADAPTER_BEST
        self.writer = run.writer
        self.info: dict[str, Any] = {}
        self.skipped_checkpoints: list[tuple[Path, str]] = []
        self.resume_checkpoint: Path | None = None  # chosen by RunDir.attempt

    def latest_checkpoint(self) -> Path | None:
        """The newest whole ``checkpoints/checkpoint-N`` (see :func:`checkpoint_damage`). A damaged
        newer one is passed over; what was passed over, and why, is in :attr:`skipped_checkpoints`."""
        found = []
        for path in self.checkpoint_dir.glob("checkpoint-*"):
            step = checkpoint_step(path)
            if step is not None and (path / "trainer_state.json").exists():
                found.append((step, path))
        self.skipped_checkpoints = []
        for _, path in sorted(found, reverse=True):
            damage = checkpoint_damage(path)
            if damage is None:
                return path
            self.skipped_checkpoints.append((path, damage))
        return None

    def start(self, config_yaml: str, info: dict[str, Any], resume_step: int | None) -> list[dict]:
        """Write the ``running`` record; on resume, cut the history back to ``resume_step`` and return it."""
        kept = [] if resume_step is None else [r for r in read_history(self.history_path) if r["step"] <= resume_step]
        self.info = dict(info)
        if resume_step is not None:
            self.info["resumed_from_step"] = resume_step
        if self.writer:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / CONFIG, config_yaml)
            write_atomic(self.history_path, "".join(json.dumps(_clean(r)) + "\n" for r in kept))
            write_json(self.metrics_path, {"status": STATUS_RUNNING, **self.info})
            (self.dir / RESERVE).write_bytes(b"\0" * RESERVE_BYTES)
            self.heartbeat()
        return kept

    def heartbeat(self) -> None:
        if self.writer:
            (self.dir / HEARTBEAT).write_text(f"{time.time():.0f}\n", encoding="utf-8")

    def append_history(self, records: Iterable[dict]) -> None:
        if not self.writer:
            return
        lines = "".join(json.dumps(_clean(r)) + "\n" for r in records)
        if lines:
            with self.history_path.open("a", encoding="utf-8") as f:
                f.write(lines)
                f.flush()

    def history(self) -> list[dict]:
        return read_history(self.history_path)

    def finish(self, metrics: dict[str, Any], extra_files: dict[str, Any], keep_checkpoints: bool) -> None:
        """Complete the attempt: write its record and replace the run's complete record with it.

        ``extra_files``: ``{name: JSON object}`` among :data:`RECORD_FILES` (None leaves it out).
        The adapter, if any, is already in ``attempt/adapter``. The record lists what it keeps (the
        history's sha256, each adapter file's size), so a record whose files went missing reads as
        corrupt. The promotion is staged (``.promote.json``, then ``.complete.json``): a kill in the
        middle of it is finished by the next launch (:meth:`RunDir.recover_promotion`).
        """
        if not self.writer:
            return
        for name, obj in extra_files.items():
            if obj is not None:
                write_json(self.dir / name, obj)
        files: dict[str, Any] = {HISTORY: sha256_file(self.history_path)}
        for name in (ADAPTER, ADAPTER_BEST):
            if (self.dir / name).is_dir():
                files[f"{name}/"] = {
                    p.name: p.stat().st_size for p in sorted((self.dir / name).iterdir()) if p.is_file()
                }
        record = {**metrics, "status": STATUS_COMPLETE, "files": files}
        present = [name for name in RECORD_FILES if (self.dir / name).exists()]
        write_json(self.dir / PROMOTE, {"files": present, "keep_checkpoints": bool(keep_checkpoints)})
        write_json(self.dir / STAGED, record)
        self.promote()

    def promote(self) -> None:
        """Move the staged record into the run directory (idempotent: a re-run after a kill completes it)."""
        plan = read_json(self.dir / PROMOTE)
        run = self.run.path
        if (self.dir / STAGED).is_file():
            for name in RECORD_FILES:
                new, old = self.dir / name, run / name
                if name in plan["files"]:
                    if new.exists():  # else moved already, before a kill
                        _replace(new, old)
                elif old.is_dir():
                    shutil.rmtree(old)
                else:
                    old.unlink(missing_ok=True)
            if plan["keep_checkpoints"] and self.checkpoint_dir.exists():
                _replace(self.checkpoint_dir, run / CHECKPOINTS)
            os.replace(self.dir / STAGED, run / METRICS)  # the record becomes complete here
        shutil.rmtree(self.dir, ignore_errors=True)

    def fail(self, error: str) -> None:
        """Record the attempt as failed; the complete record, if any, stays as it was."""
        self._end(STATUS_FAILED, {"error": error})

    def diverge(self, reason: str) -> None:
        """Record an attempt whose loss is not finite; its history stays for inspection."""
        self._end(STATUS_DIVERGED, {"error": reason})

    def interrupt(self, step: int, signal_name: str) -> None:
        """Record a preempted attempt (its checkpoint at ``step`` is saved): a re-run resumes it."""
        self._end(STATUS_INTERRUPTED, {"interrupted_at_step": step, "signal": signal_name})

    def _end(self, status: str, fields: dict[str, Any]) -> None:
        if not self.writer:
            return
        record = {**self.info, "status": status, **fields, "ended_utc": utc_now()}
        try:
            write_json(self.metrics_path, record)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            # Disk full: free the ballast written at the start and what a half-written checkpoint holds,
            # then try once more. If that fails too the record stays `running` with a free lock, which
            # status reports as `stale` (and a re-run resumes).
            (self.dir / RESERVE).unlink(missing_ok=True)
            for path in self.checkpoint_dir.glob("*checkpoint-*"):
                if not (path / "trainer_state.json").exists():
                    shutil.rmtree(path, ignore_errors=True)
            write_json(self.metrics_path, record)


def _replace(new: Path, old: Path) -> None:
    """Move ``new`` over ``old`` (file or directory)."""
    if new.is_dir():
        trash = old.with_name(f".{old.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        if old.exists():
            os.replace(old, trash)
        os.replace(new, old)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, old)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------------------------- scanning
def check_results_dir(results_dir: str | Path) -> Path:
    """``results_dir`` as a Path; :class:`RecordError` if it does not exist or is not a directory."""
    path = Path(results_dir).expanduser()
    if not path.exists():
        raise RecordError(f"{path}: no such results directory (runs write to results_dir=..., default 'results').")
    if not path.is_dir():
        raise RecordError(f"{path} is a file, not a results directory.")
    return path


def run_dirs(results_dir: str | Path) -> list[RunDir]:
    """Every run directory ``<experiment>/<run>/`` below ``results_dir`` (one that holds a record or an attempt).

    ``results_dir`` may also be one experiment's directory (``results/cpu_glue``): its runs alone.
    """
    root = check_results_dir(results_dir)
    found = []
    children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if any((p / METRICS).exists() or (p / ATTEMPT).is_dir() for p in children):
        children = [root]
    for exp in children:
        for run in sorted(p for p in exp.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if (run / METRICS).exists() or (run / ATTEMPT).is_dir():
                found.append(RunDir(run))
    return found


def scan(results_dir: str | Path) -> tuple[list[tuple[RunDir, dict]], list[tuple[str, str]]]:
    """(complete records, [(run dir, why it was left out)]) below ``results_dir``."""
    records, left_out = [], []
    for run in run_dirs(results_dir):
        try:
            records.append((run, run.load()))
        except RecordError as err:
            state = run.state()
            left_out.append((str(run.path), state.state if state.state != "corrupt" else f"corrupt: {err}"))
    return records, left_out
