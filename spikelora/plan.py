"""What one run is, decided before anything is written: validated settings, identity and directory.

The identity of a run is its **canonical configuration**: the fully resolved config minus the
settings that cannot change a result (:data:`NOT_IDENTITY`), with local paths made absolute.
Its hash ends the run directory's name, so two runs that differ in any setting that can change a
result never share a record, and a complete record is only ever reused for an identical run::

    results/<experiment_name>/<task>-<adapter>-r8-vth0.1-lr0.0003-p0-s0-<hash8>/

Validation builds the real objects (the PEFT config with its LIF gate, ``TrainingArguments``),
so a bad value fails here, with a message that names it, before a directory is created.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

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
    "model.hub_id",
    "trainer.disable_tqdm",
    "trainer.dataloader_num_workers",
    "trainer.dataloader_pin_memory",
    "trainer.save_strategy",
    "trainer.save_steps",
    "trainer.save_total_limit",
)
# Config values that name local files: made absolute in the identity (the same relative path
# from another directory is other data).
PATH_KEYS: tuple[str, ...] = ("task.data_dir", "model.name_or_path", "model.checkpoint", "model.tokenizer")
_EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
HASH_LEN = 8


class ConfigError(ValueError):
    """A setting that cannot run, named with the fix; raised before anything is written."""


@dataclass(frozen=True)
class Plan:
    """The effective settings of one run, its identity and where it is recorded."""

    experiment: str
    task: str
    model: str
    adapter: str
    r: int | None
    vth: float | None
    lr: float
    dropout: float | None
    seed: int
    epochs: float
    max_steps: int
    batch_size: int
    max_length: int
    run_name: str
    identity: str
    run_dir: Path
    canonical: dict[str, Any] = field(repr=False, compare=False)

    def info(self) -> dict[str, Any]:
        """The plan as it enters the run record (everything but the canonical config and the path)."""
        out = asdict(self)
        out.pop("canonical")
        out.pop("run_dir")
        return out


def _fmt(x: float) -> str:
    return f"{x:g}"


def is_local_path(value: str) -> bool:
    """Whether a model/tokenizer source names a local path rather than a hub id."""
    return value.startswith(("/", "./", "../", "~")) or Path(value).expanduser().exists()


def canonical_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config that identifies a run's result (see :data:`NOT_IDENTITY`)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    for key in NOT_IDENTITY:
        *parents, leaf = key.split(".")
        node = resolved
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    for key in PATH_KEYS:
        group, leaf = key.split(".")
        value = resolved.get(group, {}).get(leaf)
        # task.data_dir is always a local path (null means the hub); model sources may be hub ids.
        # Whether the path exists yet must not matter (generated data is written by the run).
        local = key == "task.data_dir" or is_local_path(str(value))
        if isinstance(value, str) and value != "byte" and local:
            resolved[group][leaf] = str(Path(value).expanduser().resolve())
    return resolved


def identity_hash(canonical: dict[str, Any]) -> str:
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def _number(name: str, value: Any, *, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}.")
    if not integer and not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}.")
    return value


def plan_run(cfg: DictConfig, check_resources: bool = True) -> Plan:
    """Validate the composed config and derive the run's effective settings, identity and directory.

    ``check_resources=False`` skips what depends on this machine or needs torch (model path, data
    files, hub access, ``TrainingArguments``): for tools that only need run names, such as ``status``.
    """
    from .apply import peft_config
    from .tasks import TASKS

    if cfg.task.name not in TASKS:
        raise ConfigError(f"Unknown task {cfg.task.name!r}: use one of {', '.join(TASKS)}.")
    spec = TASKS[cfg.task.name]
    experiment = str(cfg.experiment_name)
    if not _EXPERIMENT_NAME.match(experiment) or ".." in experiment:
        raise ConfigError(
            f"experiment_name must be one plain directory name (letters, digits, '.', '_', '-'), got "
            f"{experiment!r}: records go to results_dir/experiment_name/ and never outside results_dir."
        )
    if check_resources:
        _check_model(cfg)
    t = cfg.trainer
    lr = _number("lr (trainer.learning_rate)", t.learning_rate)
    if lr <= 0:
        raise ConfigError(f"lr must be a positive number, got {lr}.")
    max_steps = _number("trainer.max_steps", t.max_steps, integer=True)
    if max_steps == 0 or max_steps < -1:
        raise ConfigError(f"trainer.max_steps must be -1 (train for `epochs`) or a positive integer, got {max_steps}.")
    epochs = _number("epochs (trainer.num_train_epochs)", t.num_train_epochs)
    if epochs <= 0:
        raise ConfigError(f"epochs must be positive, got {epochs}.")
    batch = _number("trainer.per_device_train_batch_size", t.per_device_train_batch_size, integer=True)
    if batch <= 0:
        raise ConfigError(f"trainer.per_device_train_batch_size must be a positive integer, got {batch}.")
    seed = _number("seed", cfg.seed, integer=True)
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed}.")
    for key in ("max_train_samples", "max_eval_samples", "early_stopping_patience"):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(f"{key} must be a positive integer or null, got {value!r}.")
    split_seed = cfg.task.get("split_seed", 0)
    if split_seed != "seed" and (isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0):
        raise ConfigError(
            f"task.split_seed must be a non-negative integer (a fixed train/validation split) or 'seed' (a split "
            f"drawn per training seed, as the SpikeGPT authors did), got {split_seed!r}."
        )
    max_length = cfg.max_length
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 8:
        raise ConfigError(f"max_length must be an integer > 8, got {max_length!r}.")
    # Build the real PEFT config (and so the LIF gate): every adapter field is checked here, once.
    peft_config(cfg.adapter, cfg.model.target_modules, cfg.model.get("modules_to_save"))
    adapter = cfg.adapter.type
    r = int(cfg.adapter.r) if adapter != "full" else None
    dropout = float(cfg.adapter.dropout) if adapter != "full" else None
    vth = float(cfg.adapter.v_threshold) if adapter == "spike" else None

    canonical = canonical_config(cfg)
    identity = identity_hash(canonical)
    parts = [] if cfg.model.name == "deberta_v3_base" else [str(cfg.model.name)]
    parts += [spec.name, adapter]
    if r is not None:
        parts.append(f"r{r}")
    if vth is not None:
        parts.append(f"vth{_fmt(vth)}")
    parts.append(f"lr{_fmt(lr)}")
    if dropout is not None:
        parts.append(f"p{_fmt(dropout)}")
    parts += [f"s{seed}", identity]
    name = "-".join(parts)
    run_dir = Path(str(cfg.results_dir)).expanduser() / experiment / name
    plan = Plan(
        experiment=experiment,
        task=spec.name,
        model=str(cfg.model.name),
        adapter=adapter,
        r=r,
        vth=vth,
        lr=float(lr),
        dropout=dropout,
        seed=seed,
        epochs=float(epochs),
        max_steps=max_steps,
        batch_size=batch,
        max_length=max_length,
        run_name=name,
        identity=identity,
        run_dir=run_dir,
        canonical=canonical,
    )
    if check_resources:
        training_arguments(cfg, plan)  # every trainer.* key and value is checked by TrainingArguments itself
        _check_data(cfg, spec)
    return plan


def _check_model(cfg: DictConfig) -> None:
    model = cfg.model
    if OmegaConf.is_missing(model, "name_or_path"):
        raise ConfigError(
            f"model={model.name} needs model.name_or_path: a hub id (e.g. microsoft/deberta-v3-base) or a "
            "local directory holding the model and its tokenizer."
        )
    for key in ("name_or_path", "checkpoint"):
        value = model.get(key)
        if not value:
            continue
        value = str(value)
        path = Path(value).expanduser()
        if is_local_path(value) and not path.exists():
            raise ConfigError(f"model.{key}={value}: no such file or directory. Point it at a local copy.")
        if model.kind == "hf" and key == "name_or_path" and not path.exists() and _offline():
            raise ConfigError(
                f"model.name_or_path={value} is not a local directory and the hub is offline "
                "(HF_HUB_OFFLINE is set): download it once and pass its local directory."
            )


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _check_data(cfg: DictConfig, spec) -> None:
    from .data import check_data_dir

    data_dir = cfg.task.data_dir
    if data_dir is None:
        if _offline():
            raise ConfigError(
                f"task.data_dir is unset, so task {spec.name!r} would load from the hub, which is offline "
                "(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE). Pass task.data_dir=DIR holding the task's original files."
            )
        return
    if cfg.task.get("synthetic", False):
        return  # written by the run itself
    check_data_dir(spec, Path(str(data_dir)).expanduser())


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def training_arguments(cfg: DictConfig, plan: Plan, output_dir: Path | None = None):
    """``TrainingArguments`` from ``trainer.*``: the only place they are built."""
    from transformers import TrainingArguments

    from .tracking import wandb_enabled

    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.update(
        seed=plan.seed,
        output_dir=str(output_dir or plan.run_dir / "attempt" / "checkpoints"),
        report_to=["wandb"] if wandb_enabled(cfg) else [],
        logging_dir=None,
        label_names=["labels"],
    )
    if cfg.get("early_stopping_patience"):
        from .tasks import get_task
        from .trainer import main_metric_key

        kwargs.setdefault("metric_for_best_model", main_metric_key(get_task(plan.task)))
        kwargs.setdefault("greater_is_better", True)
    kwargs.setdefault("dataloader_pin_memory", _has_accelerator())
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return TrainingArguments(**kwargs)
    except TypeError as err:
        raise ConfigError(f"Bad trainer.* key: {err}. trainer.* keys must be TrainingArguments fields.") from err
    except ValueError as err:
        raise ConfigError(f"Bad trainer.* value: {err}") from err
