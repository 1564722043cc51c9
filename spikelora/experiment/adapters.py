"""The ``adapter`` config group as objects: each ``conf/adapter/*.yaml`` names one of these classes
in ``_target_`` and Hydra's ``instantiate`` builds it, checked in ``__post_init__``.

A new adapter is one YAML file plus one :class:`AdapterSpec` subclass that returns its PEFT config
(or, like full fine-tuning, prepares the model itself in :meth:`AdapterSpec.apply`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from peft import LoraConfig, PeftConfig, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from ..adapter import GATE_FIELDS, SpikeLoraConfig


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
class SpikeLoraAdapter(LoraAdapter):
    """SpikeLoRA (:class:`spikelora.SpikeLoraConfig`); the gate checks its own fields."""

    type: str = "spike"
    v_threshold: float = 0.1
    tau: float = 2.0
    surrogate_alpha: float = 2.0
    decay_input: bool = True
    spike_mode: str = "step"
    spike_reset: str = "hard"
    learnable_threshold: bool = False
    learnable_tau: bool = False

    spike: ClassVar[bool] = True

    @property
    def vth(self) -> float:
        return float(self.v_threshold)

    @property
    def effective_threshold(self) -> float:
        """The threshold on h itself: τ·V_θ with ``decay_input`` (the neuron sees h/τ), else V_θ."""
        return float(self.v_threshold) * (float(self.tau) if self.decay_input else 1.0)

    def peft_config(
        self, target_modules: Any, modules_to_save: list[str] | None, task_type: str | None = "SEQ_CLS"
    ) -> PeftConfig:
        gate = {name: getattr(self, name) for name in GATE_FIELDS}  # checked by neuron.validate_gate_args
        return SpikeLoraConfig(**self._common(target_modules, modules_to_save, task_type), **gate)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
