"""What one run is, decided before anything is written: validated settings, identity and directory.

:func:`plan_run` turns the composed Hydra config into a :class:`Plan`: the adapter and the backbone
are instantiated from their ``_target_`` configs, every other setting is copied into a typed
field, and each part checks itself in ``__post_init__``. After planning only the ``Plan`` and the
objects built from it travel (build, trainer, tracking never read the raw config).

The run's identity (see :mod:`spikelora.experiment.identity`) is its configuration without the
settings that cannot change a result and without local paths, plus the sha256 of everything it
reads. Its hash ends the run directory's name, so two runs that differ in any setting or in any
byte of their data never share a record::

    results/<experiment_name>/<task>-<adapter>-r8-vth0.1-lr0.0003-p0-s0-<hash8>/

Validation builds the real objects (the PEFT config with its LIF gate, ``TrainingArguments``),
so a bad value fails here, with a message that names it, before a directory is created.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import TrainingArguments

from .adapters import AdapterSpec
from .backbones import Backbone, hub_offline
from .data import check_data_dir
from .identity import IDENTITY_SCHEME, canonical_config, data_content, identity_hash
from .record import RunDir, check_path_part, gate_variant
from .tasks import TASKS, TaskSpec

# The fields of a Plan that enter the run record (metrics.json) as they are.
RECORD_FIELDS = (
    "experiment",
    "task",
    "model",
    "adapter",
    "r",
    "vth",
    "lr",
    "dropout",
    "seed",
    "epochs",
    "max_steps",
    "batch_size",
    "max_length",
    "run_name",
    "identity",
    "gate",
    "quantization",
)


class ConfigError(ValueError):
    """A setting that cannot run, named with the fix; raised before anything is written."""


def _fmt(x: float) -> str:
    return f"{x:g}"


def _number(name: str, value: Any, *, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}.")
    if not integer and not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}.")
    return value


def _optional_positive(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ConfigError(f"{name} must be a positive integer or null, got {value!r}.")


@dataclass(frozen=True)
class DataPlan:
    """Where the task's data comes from and how much of it is used."""

    task: TaskSpec
    data_dir: Path | None  # None: the hub
    synthetic: bool = False
    split_seed: int = 0  # the train/validation split of tasks without one (Subj)
    max_length: int = 256
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    cache_dir: Path | None = None  # tokenised datasets
    content: dict[str, Any] = field(default_factory=dict)  # what identifies it (see identity.data_content)

    def __post_init__(self) -> None:
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length <= 8:
            raise ConfigError(f"max_length must be an integer > 8, got {self.max_length!r}.")
        _optional_positive("max_train_samples", self.max_train_samples)
        _optional_positive("max_eval_samples", self.max_eval_samples)
        if self.synthetic and self.data_dir is None:
            raise ConfigError("task.synthetic=true needs task.data_dir: where to write the generated files.")


@dataclass(frozen=True)
class LoggerPlan:
    """Weights & Biases settings (``wandb=False``: the local record only)."""

    wandb: bool = False
    project: str | None = None
    entity: str | None = None
    group: str | None = None
    job_type: str | None = None
    mode: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The effective settings of one run, its identity and where it is recorded.

    ``run_name``, ``identity`` and ``run_dir`` are derived here, once every field has passed its
    checks: from the canonical config and the content fingerprints (the identity) and ``results_dir``.
    """

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
    results_dir: Path = field(repr=False, compare=False)
    gate: str | None = None  # the gate of a gated adapter (lif, relu, ...; "+two_sided" when so)
    quantization: str | None = None  # the base's quantisation (nf4, fp4-bfloat16, int8; None: full precision)
    # What the run is built from (compare=False: equal settings plan equal runs).
    spec: TaskSpec = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    adapter_spec: AdapterSpec = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    backbone: Backbone = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    data: DataPlan = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    trainer_args: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    logger: LoggerPlan = field(repr=False, compare=False, default_factory=LoggerPlan)
    callbacks: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    energy: dict[str, Any] | None = field(repr=False, compare=False, default=None)
    ops_convention: str = field(repr=False, compare=False, default="neurobench")
    force: bool = field(repr=False, compare=False, default=False)
    save_adapter: bool = field(repr=False, compare=False, default=True)
    save_best: bool = field(repr=False, compare=False, default=False)
    keep_checkpoints: bool = field(repr=False, compare=False, default=False)
    early_stopping_patience: int | None = field(repr=False, compare=False, default=None)
    preempt_signals: tuple[str, ...] = field(repr=False, compare=False, default=("SIGTERM",))
    canonical: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    content: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    config_yaml: str = field(repr=False, compare=False, default="")  # the resolved config, for the record
    config: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)  # the same, for W&B
    warnings: tuple[str, ...] = field(repr=False, compare=False, default=())  # settings that run but look unmeant
    # Derived in __post_init__.
    identity: str = field(init=False)
    run_name: str = field(init=False)
    run_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        for key, value in (
            ("experiment_name", self.experiment),
            ("model.name", self.model),
            ("adapter.type", self.adapter),
        ):
            try:
                check_path_part(key, value)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        _number("lr (trainer.learning_rate)", self.lr)
        _number("trainer.max_steps", self.max_steps, integer=True)
        _number("epochs (trainer.num_train_epochs)", self.epochs)
        _number("trainer.per_device_train_batch_size", self.batch_size, integer=True)
        _number("seed", self.seed, integer=True)
        if self.lr <= 0:
            raise ConfigError(f"lr must be a positive number, got {self.lr}.")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(
                f"trainer.max_steps must be -1 (train for `epochs`) or a positive integer, got {self.max_steps}."
            )
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}.")
        if self.batch_size <= 0:
            raise ConfigError(f"trainer.per_device_train_batch_size must be a positive integer, got {self.batch_size}.")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer in [0, 2**32), got {self.seed}.")
        _optional_positive("early_stopping_patience", self.early_stopping_patience)
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "epochs", float(self.epochs))
        identity = identity_hash(self.canonical, self.content)
        parts = [] if self.model == "deberta_v3_base" else [self.model]
        if self.quantization is not None:
            parts.append(self.quantization)  # a quantised base is another model: named apart
        parts += [self.task, self.adapter]
        if self.gate not in (None, "lif"):
            parts.append(self.gate)  # another gate is another method: named apart (LIF names unchanged)
        if self.gate is not None:
            parts += gate_variant(self.canonical.get("adapter") or {})
        if self.r is not None:
            parts.append(f"r{self.r}")
        if self.vth is not None:
            parts.append(f"vth{_fmt(self.vth)}")
        parts.append(f"lr{_fmt(self.lr)}")
        if self.dropout is not None:
            parts.append(f"p{_fmt(self.dropout)}")
        parts += [f"s{self.seed}", identity]
        name = "-".join(parts)
        object.__setattr__(self, "identity", identity)
        object.__setattr__(self, "run_name", name)
        object.__setattr__(self, "run_dir", RunDir.path_for(self.results_dir, self.experiment, name))

    @property
    def spike(self) -> bool:
        return bool(self.adapter_spec is not None and self.adapter_spec.spike)

    @property
    def main_metric(self) -> str:
        return self.spec.main_metric

    def info(self) -> dict[str, Any]:
        """The plan as it enters the run record."""
        return {**{k: getattr(self, k) for k in RECORD_FIELDS}, "identity_scheme": IDENTITY_SCHEME}

    def training_arguments(self, output_dir: Path | None = None) -> TrainingArguments:
        """``TrainingArguments`` from ``trainer.*``: the only place they are built."""
        kwargs = dict(self.trainer_args)
        kwargs.update(
            seed=self.seed,
            output_dir=str(output_dir or RunDir(self.run_dir).attempt_checkpoint_dir),
            report_to=["wandb"] if self.logger.wandb else [],
            logging_dir=None,
            label_names=["labels"],
        )
        if self.early_stopping_patience:
            kwargs.setdefault("metric_for_best_model", self.main_metric)
            kwargs.setdefault("greater_is_better", True)
        kwargs.setdefault("dataloader_pin_memory", torch.cuda.is_available())
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        try:
            return TrainingArguments(**kwargs)
        except TypeError as err:
            raise ConfigError(f"Bad trainer.* key: {err}. trainer.* keys must be TrainingArguments fields.") from err
        except ValueError as err:
            raise ConfigError(f"Bad trainer.* value: {err}") from err


def _instantiate(node: DictConfig, group: str, kind: type) -> Any:
    """The object a config group's ``_target_`` names, with Hydra's wrapping taken off its errors."""
    if "_target_" not in node:
        raise ConfigError(f"The {group} config has no _target_: every conf/{group}/*.yaml names its class.")
    try:
        obj = instantiate(node, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ValueError):
            raise ConfigError(str(cause)) from cause
        raise ConfigError(f"{group}: {err}") from err
    if not isinstance(obj, kind):
        raise ConfigError(f"{group}._target_ builds {type(obj).__name__}, not a {kind.__name__}.")
    return obj


def _check_model_source(model: DictConfig) -> None:
    if OmegaConf.is_missing(model, "name_or_path"):
        raise ConfigError(
            f"model={model.name} needs model.name_or_path: a hub id (e.g. microsoft/deberta-v3-base) or a "
            "local directory holding the model and its tokenizer."
        )


def plan_run(cfg: DictConfig, check_resources: bool = True) -> Plan:
    """Validate the composed config and derive the run's effective settings, identity and directory.

    ``check_resources=False`` skips what depends on this machine (model path, hub access, data
    files present, the model's position limit): for tools that only need run names, such as
    ``status``. The data files that are there are still fingerprinted: they are in the identity.
    """
    if cfg.task.name not in TASKS:
        raise ConfigError(f"Unknown task {cfg.task.name!r}: use one of {', '.join(TASKS)}.")
    spec = TASKS[cfg.task.name]
    _check_model_source(cfg.model)
    backbone = _instantiate(cfg.model, "model", Backbone)
    adapter = _instantiate(cfg.adapter, "adapter", AdapterSpec)
    if check_resources:
        try:
            backbone.check()
        except ValueError as err:
            raise ConfigError(str(err)) from None
    split_seed = cfg.task.get("split_seed", 0)
    if split_seed != "seed" and (isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0):
        raise ConfigError(
            f"task.split_seed must be a non-negative integer (a fixed train/validation split) or 'seed' (a split "
            f"drawn per training seed, as the SpikeGPT authors did), got {split_seed!r}."
        )
    # Build the real PEFT config (and so the LIF gate): every adapter field is checked here, once.
    try:
        adapter.peft_config(backbone.target_modules, backbone.modules_to_save)
    except ValueError as err:
        raise ConfigError(str(err)) from None

    raw_dir = cfg.task.data_dir
    data_dir = Path(str(raw_dir)).expanduser().resolve() if raw_dir is not None else None
    synthetic = bool(cfg.task.get("synthetic", False))
    cache_dir = Path(str(cfg.cache_dir)).expanduser() if cfg.cache_dir else None
    data = DataPlan(
        task=spec,
        data_dir=data_dir,
        synthetic=synthetic,
        split_seed=_number("seed", cfg.seed, integer=True) if split_seed == "seed" else int(split_seed),
        max_length=cfg.max_length,
        max_train_samples=cfg.get("max_train_samples"),
        max_eval_samples=cfg.get("max_eval_samples"),
        cache_dir=cache_dir,
        content=data_content(spec, data_dir, synthetic),
    )
    if check_resources:
        _check_data(data)
        limit = backbone.max_positions()
        if limit is not None and data.max_length > limit:
            raise ConfigError(
                f"max_length={data.max_length} is beyond model {backbone.name}'s {limit} positions: "
                f"set max_length to at most {limit}."
            )
        width = backbone.width()
        if adapter.r is not None and width is not None and adapter.r > width:
            raise ConfigError(
                f"r={adapter.r} is larger than the width of model {backbone.name}'s layers ({width}): an update "
                f"of a {width}-wide layer has rank {width} at most, so this cannot be meant. Set r to at most {width}."
            )

    if backbone.quantization is not None and adapter.type in ("full", "spike_adalora"):
        raise ConfigError(
            f"adapter={adapter.type} cannot run on a quantised base (model.quantization={backbone.quantization}): "
            + (
                "a 4-bit or int8 weight cannot be trained in full; use an adapter (spike, lora, dora, adalora)."
                if adapter.type == "full"
                else "SpikeAdaLoRA adapts float nn.Linear layers only; use adapter=spike or adapter=adalora, or "
                "model.quantization=null."
            )
        )
    notes = _warnings(adapter)
    canonical = canonical_config(cfg)
    try:
        content = {"data": data.content, "model": backbone.content()}
    except OSError as err:
        raise ConfigError(f"Cannot read the model's files to fingerprint them: {err}") from None
    logger = cfg.logger
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    t = cfg.trainer
    plan = Plan(
        experiment=str(cfg.experiment_name),
        task=spec.name,
        model=backbone.name,
        adapter=adapter.type,
        r=adapter.r,
        vth=adapter.vth,
        lr=t.learning_rate,
        dropout=float(adapter.dropout) if adapter.dropout is not None else None,
        seed=cfg.seed,
        epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        batch_size=t.per_device_train_batch_size,
        max_length=data.max_length,
        results_dir=Path(str(cfg.results_dir)).expanduser(),
        gate=_gate_label(adapter),
        quantization=backbone.quantisation_label(),
        spec=spec,
        adapter_spec=adapter,
        backbone=backbone,
        data=data,
        trainer_args=OmegaConf.to_container(cfg.trainer, resolve=True),
        logger=LoggerPlan(
            wandb=bool(logger.get("wandb", False)),
            project=logger.get("project"),
            entity=logger.get("entity"),
            group=logger.get("group"),
            job_type=logger.get("job_type") or "train",
            mode=logger.get("mode"),
            tags=tuple(logger.get("tags") or ()),
        ),
        callbacks=OmegaConf.to_container(cfg.callbacks, resolve=True) if cfg.get("callbacks") else {},
        energy=OmegaConf.to_container(cfg.energy, resolve=True) if cfg.get("energy") else None,
        ops_convention=str(cfg.get("ops_convention", "neurobench")),
        force=bool(cfg.force),
        save_adapter=bool(cfg.save_adapter),
        save_best=bool(cfg.get("save_best")),
        keep_checkpoints=bool(cfg.keep_checkpoints),
        early_stopping_patience=cfg.get("early_stopping_patience"),
        preempt_signals=tuple(cfg.preempt_signals),
        canonical=canonical,
        content=content,
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        config=resolved,
        warnings=notes,
    )
    if check_resources:
        plan.training_arguments()  # every trainer.* key and value is checked by TrainingArguments itself
    return plan


def _gate_label(adapter: AdapterSpec) -> str | None:
    gate = getattr(adapter, "gate", None)
    if gate is None:
        return None
    return f"{gate}+two_sided" if getattr(adapter, "two_sided", False) else str(gate)


# An effective threshold this far above the paper's largest (τ·V_θ = 4 at V_θ = 2) silences every gate.
SILENT_THRESHOLD = 10.0


def _warnings(adapter: AdapterSpec) -> tuple[str, ...]:
    """Settings that run but make the adapter inert: said, not refused (a collapse is a result too)."""
    notes = []
    theta = getattr(adapter, "effective_threshold", None)
    if theta is not None and theta >= SILENT_THRESHOLD:
        notes.append(
            f"the gates' effective threshold on h is {theta:g} (tau * vth): far above any low-rank activation, "
            "so every gate will likely stay silent (sparsity 100 %) and the adapter learn nothing"
        )
    return tuple(notes)


def _check_data(data: DataPlan) -> None:
    if data.data_dir is None:
        if hub_offline():
            raise ConfigError(
                f"task.data_dir is unset, so task {data.task.name!r} would load from the hub, which is offline "
                "(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE). Pass task.data_dir=DIR holding the task's original files."
            )
        return
    if data.synthetic:
        return  # written by the run itself
    check_data_dir(data.task, data.data_dir)
