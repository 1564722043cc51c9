"""A run's identity: what it was configured with and what it read.

The identity hash covers two things:

``config``   the fully resolved config minus the settings that cannot change a result
             (:data:`NOT_IDENTITY`) and minus every local path (:data:`PATH_KEYS`);
``content``  the sha256 of every file the run reads: the task's data files (or, for generated
             data, the generator) and the local model's config and weight files.

Paths leave the identity once their content is in it, so the same folder spelt two ways
(``a/../glue`` and ``glue``), moved, or copied elsewhere is one identity, and a file edited in
place is another (a re-run trains anew). Hub ids stay in ``config``: their content is the hub's.

Records made before content entered the identity (``identity_scheme`` 1, paths instead of
content) are recognised as such; :func:`record_identity` recomputes a record's identity from the
config and fingerprints it holds, which is what ``python -m spikelora.status --rekey`` uses.
"""

from __future__ import annotations

import hashlib
import json
from copy import deepcopy
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .backbones import is_local_path
from .data import task_files
from .provenance import files_sha256
from .record import RecordError, RunDir, read_json, write_json
from .synthetic import SYNTHETIC_VERSION
from .tasks import TaskSpec

IDENTITY_SCHEME = 2
HASH_LEN = 8
# Settings that never change a result: where things are written, how they are shown, what is
# kept afterwards. Everything else in the resolved config enters the identity hash.
NOT_IDENTITY: tuple[str, ...] = (
    "logger",
    "results_dir",
    "experiment_name",
    "force",
    "cache_dir",
    "keep_checkpoints",
    "save_adapter",
    "save_best",
    "preempt_signals",
    "callbacks",
    "energy",
    "ops_convention",
    "glue_dir",  # feeds task.data_dir, whose content is in the identity
    # Per-task tables of +experiment=ablation: each feeds a setting that is in the identity (lr,
    # epochs, adapter.target_sparsity / effective_of), so a change for one task re-keys that task only.
    "ablation_lr",
    "ablation_epochs",
    "matched_sparsity",
    "model.hub_id",
    "model._target_",  # the class is named by model.kind, adapter.type (a moved class is not new data)
    "adapter._target_",
    "trainer.disable_tqdm",
    "trainer.dataloader_num_workers",
    "trainer.dataloader_pin_memory",
    "trainer.save_strategy",
    "trainer.save_steps",
    "trainer.save_total_limit",
)
# Settings added after records were made, with their defaults: at the default a setting leaves the
# identity as it was before it existed (so those records keep their names); any other value enters it.
ADDED_DEFAULTS: dict[str, Any] = {
    "adapter.gate": "lif",
    "adapter.two_sided": False,
    "adapter.temperature": None,
    "adapter.topk": None,
    "adapter.target_sparsity": None,
    "model.wkv": "auto",
    "model.lif": "auto",
    "adapter.temporal_impl": "auto",
    "model.quantization": None,
    "model.compute_dtype": "float32",
}
# Config values that may name local files: their content replaces them in the identity.
PATH_KEYS: tuple[str, ...] = ("task.data_dir", "model.name_or_path", "model.checkpoint", "model.tokenizer")


def _drop(tree: dict, key: str) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for p in parents:
        node = node.get(p, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node.pop(leaf, None)


def strip_config(resolved: dict[str, Any]) -> dict[str, Any]:
    """The identity's ``config`` part of a resolved config (a plain dict; not changed in place)."""
    out = deepcopy(resolved)
    out.pop("hydra", None)
    for key in NOT_IDENTITY:
        _drop(out, key)
    for key, default in ADDED_DEFAULTS.items():
        group, leaf = key.split(".")
        node = out.get(group)
        if isinstance(node, dict) and leaf in node and _same(node[leaf], default):
            node.pop(leaf)
    for key in PATH_KEYS:
        group, leaf = key.split(".")
        value = out.get(group, {}).get(leaf) if isinstance(out.get(group), dict) else None
        # task.data_dir is always local (null means the hub); model sources may be hub ids.
        if isinstance(value, str) and value != "byte" and (key == "task.data_dir" or is_local_path(value)):
            out[group].pop(leaf)
    return out


def _same(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default


def canonical_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config that, with the content fingerprints, identifies a run's result."""
    return strip_config(OmegaConf.to_container(cfg, resolve=True))


def synthetic_content(task: str) -> dict[str, Any]:
    """What identifies generated data: the task and the generator's version (the run rewrites its files)."""
    return {"synthetic": task, "generator": SYNTHETIC_VERSION}


def data_content(spec: TaskSpec, data_dir: Path | None, synthetic: bool) -> dict[str, Any]:
    """What identifies the data: the files' sha256, the generator of synthetic data, or the hub."""
    if synthetic:
        return synthetic_content(spec.name)
    if data_dir is None:
        return {"hub": list(spec.hub)}
    paths = [data_dir / name for name in task_files(spec)]
    if not all(p.is_file() for p in paths):
        return {"files_sha256": None}  # not readable here (status on another machine): matches nothing
    return {"files_sha256": files_sha256(paths)}


def identity_hash(config: dict[str, Any], content: dict[str, Any]) -> str:
    text = json.dumps({"config": config, "content": content}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def _scheme1_parts(record: dict[str, Any]) -> tuple[dict, dict] | None:
    """(config, content) of a scheme-1 record under the current scheme, from what it recorded."""
    prov = record.get("provenance") or {}
    canonical, data, model = prov.get("canonical_config"), prov.get("data"), prov.get("model")
    if not isinstance(canonical, dict) or not isinstance(data, dict) or not isinstance(model, dict):
        return None
    task = canonical.get("task") or {}
    if task.get("synthetic"):
        data_part: dict[str, Any] = synthetic_content(str(task.get("name")))
    elif "files_sha256" in data:
        data_part = {"files_sha256": data["files_sha256"]}
    else:
        data_part = {"hub": data.get("hub")}
    model_part = {}
    model_cfg = canonical.get("model") or {}
    for key in ("name_or_path", "checkpoint", "tokenizer"):
        value = model_cfg.get(key)
        if isinstance(value, str) and value != "byte" and value.startswith("/"):
            if key == "tokenizer" or "files_sha256" not in model:
                return None  # a local tokenizer file was not fingerprinted under scheme 1
            model_part[key] = model["files_sha256"]
    return strip_config(canonical), {"data": data_part, "model": model_part}


def _current_parts(record: dict[str, Any]) -> tuple[dict, dict] | None:
    """(config, content) of a record under the current scheme and the current :data:`NOT_IDENTITY`:
    a scheme-2 record's canonical config is stripped again, so a setting declared result-neutral
    after the record was made leaves its identity."""
    prov = record.get("provenance") or {}
    if record.get("identity_scheme") == IDENTITY_SCHEME:
        if not isinstance(prov.get("canonical_config"), dict):
            return None
        return strip_config(prov["canonical_config"]), prov.get("content") or {}
    return _scheme1_parts(record)


def record_identity(record: dict[str, Any]) -> str | None:
    """The identity a record's run has under the current scheme, from the config and the fingerprints
    it recorded (None when it lacks them). For a current record it equals ``record["identity"]``."""
    parts = _current_parts(record)
    return identity_hash(*parts) if parts is not None else None


def is_legacy(record: dict[str, Any]) -> bool:
    """Whether a record carries an older identity than its run has now: made before content entered
    the identity (scheme 1), or before a setting it recorded was declared result-neutral."""
    if record.get("identity_scheme") != IDENTITY_SCHEME:
        return True
    current = record_identity(record)
    return current is not None and current != record.get("identity")


def rekey(run: RunDir) -> Path | None:
    """Give a complete legacy record the name of its current identity (renaming its directory);
    None if it is not legacy or lacks the fingerprints. The record's data and history are unchanged."""
    record = run.complete_record()
    if record is None or not is_legacy(record) or (parts := _current_parts(record)) is None:
        return None
    config, content = parts
    identity = identity_hash(config, content)
    old_name = str(record.get("run_name") or run.path.name)
    new_name = f"{old_name.rsplit('-', 1)[0]}-{identity}"
    target = run.path.with_name(new_name)
    if target.exists():
        raise RecordError(f"{target} exists already: cannot rekey {run.path} onto it.")
    prov = dict(record.get("provenance") or {})
    prov.update(canonical_config=config, content=content)
    updated = {
        **record,
        "run_name": new_name,
        "identity": identity,
        "identity_scheme": IDENTITY_SCHEME,
        "rekeyed_from": old_name,
        "provenance": prov,
    }
    run.path.rename(target)  # first: a failure below leaves a legacy record that a re-try renames again
    write_json(target / run.metrics_path.name, updated)
    return target


def find_legacy(
    run_dir: Path, identity: str, seen: dict[Path, list[tuple[Path, str | None]]] | None = None
) -> Path | None:
    """A legacy record beside ``run_dir`` (same readable name, another hash) whose run has ``identity``
    under the current scheme: the same run, recorded before content entered the identity.
    ``seen`` caches the experiment directory's legacy records across calls."""
    seen = {} if seen is None else seen
    parent = run_dir.parent
    if parent not in seen:
        found = []
        for path in sorted(parent.glob("*-????????")) if parent.is_dir() else []:
            try:  # metrics.json alone: the histories are checked only for a match, below
                record = read_json(path / "metrics.json")
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("status") == "complete" and is_legacy(record):
                found.append((path, record_identity(record)))
        seen[parent] = found
    prefix = run_dir.name.rsplit("-", 1)[0]
    for path, legacy_identity in seen[parent]:
        if path.name.rsplit("-", 1)[0] == prefix and legacy_identity == identity and RunDir(path).is_complete():
            return path
    return None
