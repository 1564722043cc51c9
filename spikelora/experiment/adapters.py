"""The ``adapter`` config group as objects: each ``conf/adapter/*.yaml`` names one of these classes
in ``_target_`` and Hydra's ``instantiate`` builds it, checked in ``__post_init__``.

A new adapter is one YAML file plus one :class:`AdapterSpec` subclass that returns its PEFT config
(or, like full fine-tuning, prepares the model itself in :meth:`AdapterSpec.apply`). An adapter
that must act during training (AdaLoRA's budget allocation) returns its ``TrainerCallback`` objects
from :meth:`AdapterSpec.callbacks`, which the trainer adds to its own.

The baselines and controls of issue 17: ``dora`` (PEFT's ``use_dora``), ``adalora`` (PEFT's
AdaLoRA; :class:`AdaLoraBudget` calls ``update_and_allocate`` after every optimiser step, with the
schedule derived from the run's own number of steps), ``spike_adalora`` (the paper's Eq. 5 on
AdaLoRA, :class:`spikelora.adapter.SpikeAdaLoraConfig`) and ``lora_effective`` (LoRA at a
SpikeLoRA run's effective rank). Rank dropout at a SpikeLoRA run's rate is ``adapter=spike
adapter.gate=random adapter.target_sparsity=<rate>``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from peft import AdaLoraConfig, AdaLoraModel, LoraConfig, PeftConfig, get_peft_model
from torch import nn
from transformers import PreTrainedModel, TrainerCallback

from ..adapter import GATE_FIELDS, SpikeAdaLoraConfig, SpikeLoraConfig


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


@dataclass(frozen=True)
class AdapterSpec:
    """What the run trains besides (or instead of) the base model; ``type`` names it in run names."""

    type: str

    spike: ClassVar[bool] = False  # whether the adapter has gates whose sparsity is recorded

    @property
    def r(self) -> int | None:
        return None

    @property
    def dropout(self) -> float | None:
        return None

    @property
    def vth(self) -> float | None:
        return None

    def callbacks(self) -> list[TrainerCallback]:
        """``TrainerCallback`` objects the trainer must run for this adapter (none by default)."""
        return []

    def peft_config(
        self, target_modules: Any, modules_to_save: list[str] | None, task_type: str | None = "SEQ_CLS"
    ) -> PeftConfig | None:
        """The PEFT config (``None``: not a PEFT method). ``task_type="SEQ_CLS"`` suits Hugging Face
        classifiers (PEFT also trains their head); plain PyTorch models such as SpikeGPT take ``None``
        and name their head in ``modules_to_save``."""
        return None

    def apply(self, model: nn.Module, target_modules: Any, modules_to_save: list[str] | None) -> nn.Module:
        """``model`` wrapped with the adapter through PEFT."""
        task_type = "SEQ_CLS" if isinstance(model, PreTrainedModel) else None
        config = self.peft_config(target_modules, modules_to_save, task_type)
        with warnings.catch_warnings():
            # PEFT reads `model.is_gradient_checkpointing`, which transformers 5 deprecates: not ours to fix.
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            return get_peft_model(model, config)


class FullFineTuning(AdapterSpec):
    """Every parameter trains; no adapter.

    Low-rank settings that an experiment sets for every adapter (``adapter.alpha``, ``use_rslora``)
    are accepted and have no effect here (they stay in the resolved config, as they always did)."""

    def __init__(self, type: str = "full", **unused: Any) -> None:
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "unused", dict(unused))

    def apply(self, model: nn.Module, target_modules: Any, modules_to_save: list[str] | None) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model


@dataclass(frozen=True)
class LoraAdapter(AdapterSpec):
    """Plain PEFT LoRA (``alpha=None``: sqrt(r), so that rsLoRA's scaling is 1 at every rank)."""

    type: str = "lora"
    r: int = 8  # type: ignore[assignment]
    alpha: float | None = None
    use_rslora: bool = True
    dropout: float = 0.0  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"r must be a positive integer (the adapter rank), got r={self.r!r}.")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        if self.alpha is not None and (not _is_number(self.alpha) or not self.alpha > 0):
            raise ValueError(f"adapter.alpha must be a positive number (or null for sqrt(r)), got {self.alpha!r}.")
        if not isinstance(self.use_rslora, bool):
            raise ValueError(f"adapter.use_rslora must be true or false, got {self.use_rslora!r}.")

    def _common(self, target_modules: Any, modules_to_save: list[str] | None, task_type: str | None) -> dict:
        return dict(
            r=self.r,
            lora_alpha=float(self.alpha) if self.alpha is not None else math.sqrt(self.r),
            use_rslora=self.use_rslora,
            lora_dropout=float(self.dropout),
            target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
            modules_to_save=list(modules_to_save) if modules_to_save else None,
            task_type=task_type,
        )

    def peft_config(
        self, target_modules: Any, modules_to_save: list[str] | None, task_type: str | None = "SEQ_CLS"
    ) -> PeftConfig:
        return LoraConfig(**self._common(target_modules, modules_to_save, task_type))


@dataclass(frozen=True)
class DoraAdapter(LoraAdapter):
    """PEFT's DoRA (``LoraConfig(use_dora=True)``): LoRA's direction plus a learned magnitude per output."""

    type: str = "dora"

    def peft_config(
        self, target_modules: Any, modules_to_save: list[str] | None, task_type: str | None = "SEQ_CLS"
    ) -> PeftConfig:
        return LoraConfig(**self._common(target_modules, modules_to_save, task_type), use_dora=True)


def effective_rank(r: int, sparsity: float) -> int:
    """The rank SpikeLoRA at rank ``r`` uses on average: ``round(r × (1 − sparsity))`` (halves up).

    LoRA at this rank makes the same B-side operations per token as the SpikeLoRA run
    (``(1 − sparsity) · r · d_out``); ``sparsity`` is that run's measured ``eval_sparsity``.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"adapter.effective_of must be a sparsity in [0, 1), got {sparsity!r}.")
    rank = math.floor(r * (1.0 - sparsity) + 0.5)
    if rank < 1:
        raise ValueError(
            f"r={r} × (1 − {sparsity}) rounds to rank 0; set adapter.effective_r=1 to train LoRA at rank 1."
        )
    return rank


@dataclass(frozen=True)
class LoraEffectiveAdapter(LoraAdapter):
    """The control "LoRA at SpikeLoRA's effective rank": plain LoRA at ``r × (1 − sparsity)``.

    ``r`` is the SpikeLoRA run's rank (so that the record pairs with it); the rank trained is
    :attr:`effective_rank`: ``effective_r`` if given, else :func:`effective_rank` of
    ``effective_of`` (that run's measured ``eval_sparsity``). ``alpha=None``: sqrt(effective rank)
    with rsLoRA, scaling 1 as in the other runs.
    """

    type: str = "lora_effective"
    effective_of: float | None = None
    effective_r: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.effective_of is None) == (self.effective_r is None):
            raise ValueError(
                "adapter=lora_effective needs exactly one of adapter.effective_of=<the SpikeLoRA run's eval_sparsity> "
                "(rank round(r × (1 − sparsity))) or adapter.effective_r=<rank>."
            )
        if self.effective_r is not None and (
            isinstance(self.effective_r, bool) or not isinstance(self.effective_r, int) or self.effective_r < 1
        ):
            raise ValueError(f"adapter.effective_r must be a positive integer, got {self.effective_r!r}.")
        self.effective_rank  # noqa: B018 - checks effective_of

    @property
    def effective_rank(self) -> int:
        if self.effective_r is not None:
            return self.effective_r
        return effective_rank(self.r, self.effective_of)

    def _common(self, target_modules: Any, modules_to_save: list[str] | None, task_type: str | None) -> dict:
        rank = self.effective_rank
        return {
            **super()._common(target_modules, modules_to_save, task_type),
            "r": rank,
            "lora_alpha": float(self.alpha) if self.alpha is not None else math.sqrt(rank),
        }


@dataclass(frozen=True)
class GateFields:
    """The gate's settings (see :func:`spikelora.neuron.make_gate`); the names are ``GATE_FIELDS``."""

    gate: str = "lif"
    v_threshold: float = 0.1
    tau: float = 2.0
    surrogate_alpha: float = 2.0
    decay_input: bool = True
    spike_mode: str = "step"
    spike_reset: str = "hard"
    learnable_threshold: bool = False
    learnable_tau: bool = False
    two_sided: bool = False
    temperature: float | None = None
    topk: int | None = None
    target_sparsity: float | None = None
    temporal_impl: str = "auto"

    spike: ClassVar[bool] = True

    @property
    def vth(self) -> float | None:
        # topk and random gates have no threshold: no V_θ in the run's name or record
        return None if self.gate in ("topk", "random") else float(self.v_threshold)

    def gate_kwargs(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in GATE_FIELDS}  # checked by neuron.make_gate


@dataclass(frozen=True)
class SpikeLoraAdapter(GateFields, LoraAdapter):
    """SpikeLoRA (:class:`spikelora.SpikeLoraConfig`) with any gate of the family; the gate checks its own fields."""

    type: str = "spike"

    def peft_config(
        self, target_modules: Any, modules_to_save: list[str] | None, task_type: str | None = "SEQ_CLS"
    ) -> PeftConfig:
        return SpikeLoraConfig(**self._common(target_modules, modules_to_save, task_type), **self.gate_kwargs())


def _steps(name: str, value: Any, total: int | None = None) -> int:
    """A schedule length: an integer number of steps, or a float in [0, 1) as a share of ``total``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"adapter.{name} must be a number of steps or a share of the run's steps in [0, 1), got {value!r}."
        )
    if isinstance(value, float):
        if not 0.0 <= value < 1.0:
            raise ValueError(
                f"adapter.{name}={value}: a float is a share of the run's optimiser steps and must be in [0, 1); "
                "give an integer for a number of steps."
            )
        return 0 if total is None else math.floor(value * total + 0.5)
    if value < 0:
        raise ValueError(f"adapter.{name} must be >= 0, got {value}.")
    return value


@dataclass(frozen=True)
class AdaLoraAdapter(AdapterSpec):
    """PEFT's AdaLoRA (``peft.AdaLoraConfig``), its budget allocated at every optimiser step.

    ``r`` is AdaLoRA's ``target_r`` (the average rank after pruning), ``init_r`` the rank each
    module starts with (``None``: ``round(1.5 r)``, PEFT's 12 for 8). ``alpha=None``: ``init_r``,
    so that AdaLoRA's scaling ``alpha / ranknum`` is 1 as in the other runs. ``tinit`` / ``tfinal``
    (initial warm-up, final fine-tuning) are integers (steps) or floats in [0, 1) (shares of the
    run's optimiser steps): the schedule is derived from the real number of steps when training
    begins (:class:`AdaLoraBudget`). The defaults follow the AdaLoRA authors' DeBERTaV3 CoLA script
    (tinit 800, tfinal 3500 of about 6700 steps, ΔT 10, β 0.85, orthogonal regularisation 0.1).
    """

    type: str = "adalora"
    r: int = 8  # type: ignore[assignment]
    init_r: int | None = None
    alpha: float | None = None
    dropout: float = 0.0  # type: ignore[assignment]
    tinit: float = 0.1
    tfinal: float = 0.5
    delta_t: int = 10
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"r must be a positive integer (AdaLoRA's target rank), got r={self.r!r}.")
        if self.init_r is not None and (
            isinstance(self.init_r, bool) or not isinstance(self.init_r, int) or self.init_r < self.r
        ):
            raise ValueError(
                f"adapter.init_r must be an integer >= r={self.r} (or null for 1.5 r), got {self.init_r!r}."
            )
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        if self.alpha is not None and (not _is_number(self.alpha) or not self.alpha > 0):
            raise ValueError(f"adapter.alpha must be a positive number (or null for init_r), got {self.alpha!r}.")
        _steps("tinit", self.tinit)
        _steps("tfinal", self.tfinal)
        if isinstance(self.delta_t, bool) or not isinstance(self.delta_t, int) or self.delta_t < 1:
            raise ValueError(
                f"adapter.delta_t must be a positive integer (steps between allocations), got {self.delta_t!r}."
            )
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 < value < 1.0:
                raise ValueError(f"adapter.{name} must be in (0, 1), got {value!r}.")
        if not _is_number(self.orth_reg_weight) or self.orth_reg_weight < 0:
            raise ValueError(f"adapter.orth_reg_weight must be >= 0, got {self.orth_reg_weight!r}.")

    @property
    def initial_rank(self) -> int:
        return self.init_r if self.init_r is not None else math.floor(1.5 * self.r + 0.5)

    def schedule(self, total_steps: int) -> tuple[int, int]:
        """``(tinit, tfinal)`` in steps for a run of ``total_steps`` optimiser steps (checked)."""
        tinit, tfinal = _steps("tinit", self.tinit, total_steps), _steps("tfinal", self.tfinal, total_steps)
        if not tinit < total_steps - tfinal:
            raise ValueError(
                f"AdaLoRA's schedule leaves no budgeting phase in this run's {total_steps} optimiser steps "
                f"(tinit={tinit}, tfinal={tfinal}): lower adapter.tinit / adapter.tfinal or train longer."
            )
        return tinit, tfinal

    def _planning_total(self) -> int:
        # Before the run's steps are known: the shortest run the schedule allows, so that PEFT's
        # checks pass; AdaLoraBudget writes the real schedule into the config when training begins.
        total = 1
        while True:
            try:
                self.schedule(total)
                return total
            except ValueError:
                total += 1

    def _config_kwargs(
        self, target_modules: Any, modules_to_save: list[str] | None, task_type: str | None, total_step: int | None
    ) -> dict[str, Any]:
        total = total_step if total_step is not None else self._planning_total()
        tinit, tfinal = self.schedule(total)
        init_r = self.initial_rank
        return dict(
            target_r=self.r,
            init_r=init_r,
            lora_alpha=float(self.alpha) if self.alpha is not None else float(init_r),
            lora_dropout=float(self.dropout),
            tinit=tinit,
            tfinal=tfinal,
            deltaT=self.delta_t,
            beta1=float(self.beta1),
            beta2=float(self.beta2),
            orth_reg_weight=float(self.orth_reg_weight),
            total_step=total,
            target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
            modules_to_save=list(modules_to_save) if modules_to_save else None,
            task_type=task_type,
        )

    def peft_config(
        self,
        target_modules: Any,
        modules_to_save: list[str] | None,
        task_type: str | None = "SEQ_CLS",
        total_step: int | None = None,
    ) -> PeftConfig:
        """PEFT's ``AdaLoraConfig``; without ``total_step`` its schedule is provisional (see :class:`AdaLoraBudget`)."""
        kwargs = self._config_kwargs(target_modules, modules_to_save, task_type, total_step)
        return self.config_class(**kwargs, **self.gate_kwargs())

    config_class: ClassVar[type] = AdaLoraConfig

    def gate_kwargs(self) -> dict[str, Any]:
        return {}  # plain AdaLoRA has no gate

    def callbacks(self) -> list[TrainerCallback]:
        return [AdaLoraBudget(self)]


@dataclass(frozen=True)
class SpikeAdaLoraAdapter(GateFields, AdaLoraAdapter):
    """The paper's Eq. 5 done right (:class:`spikelora.adapter.SpikeAdaLoraConfig`): AdaLoRA with the
    gate (LIF by default, surrogate gradient, stateless per call) on its low-rank activations."""

    type: str = "spike_adalora"

    config_class: ClassVar[type] = SpikeAdaLoraConfig


class AdaLoraBudget(TrainerCallback):
    """Runs AdaLoRA's budget allocation in a Hugging Face ``Trainer``, as PEFT's docs prescribe.

    ``on_train_begin``: the schedule from the run's real number of optimiser steps
    (``state.max_steps``, the Trainer's own count: epochs, batch size, gradient accumulation and
    devices included) is written into the model's AdaLoRA config (``total_step``, ``tinit``,
    ``tfinal``), which PEFT's rank allocator reads at every step; the saved adapter_config.json
    holds it. ``on_optimizer_step`` (after ``optimizer.step()``, before ``zero_grad()``, gradients
    still present): ``update_and_allocate(global_step)`` with the 0-based step, as in PEFT's example.
    """

    def __init__(self, spec: AdaLoraAdapter) -> None:
        self.spec = spec
        self.calls = 0

    @staticmethod
    def tuner(model: nn.Module) -> AdaLoraModel:
        tuner = getattr(model, "base_model", None)
        if not isinstance(tuner, AdaLoraModel):
            raise TypeError(f"AdaLoraBudget needs a PEFT AdaLoRA model, got {type(model).__name__}.")
        return tuner

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        tuner = self.tuner(model)
        config = tuner.peft_config[tuner.trainable_adapter_name]
        config.tinit, config.tfinal = self.spec.schedule(state.max_steps)
        tuner.rankallocator.set_total_step(state.max_steps)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.tuner(model).update_and_allocate(state.global_step)
        self.calls += 1


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
