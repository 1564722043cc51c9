"""Turn the ``adapter`` config group into a trainable model: LoRA, SpikeLoRA or full fine-tuning."""

from __future__ import annotations

import math
from typing import Any

from peft import LoraConfig, get_peft_model
from torch import nn

from .adapter import SpikeLoraConfig

ADAPTER_TYPES = ("lora", "spike", "full")


def peft_config(
    adapter: Any, target_modules: Any, modules_to_save: list[str] | None, task_type: str | None = "SEQ_CLS"
) -> LoraConfig | None:
    """The PEFT config of ``adapter`` (``None`` for full fine-tuning).

    ``task_type="SEQ_CLS"`` suits Hugging Face classifiers (PEFT also trains their head); plain
    PyTorch models such as SpikeGPT take ``None`` and name their head in ``modules_to_save``.
    """
    if adapter.type not in ADAPTER_TYPES:
        raise ValueError(f"Unknown adapter type {adapter.type!r}: use one of {', '.join(ADAPTER_TYPES)}.")
    if adapter.type == "full":
        return None
    r = int(adapter.r)  # validated by spikelora.run.plan_run (and SpikeLoraConfig)
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    common = dict(
        r=r,
        lora_alpha=float(adapter.alpha) if adapter.alpha is not None else math.sqrt(r),
        use_rslora=bool(adapter.use_rslora),
        lora_dropout=float(adapter.dropout),
        target_modules=targets,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        task_type=task_type,
    )
    if adapter.type == "lora":
        return LoraConfig(**common)
    return SpikeLoraConfig(
        **common,
        v_threshold=float(adapter.v_threshold),
        tau=float(adapter.tau),
        surrogate_alpha=float(adapter.surrogate_alpha),
        decay_input=bool(adapter.decay_input),
        spike_mode=str(adapter.spike_mode),
        spike_reset=str(adapter.spike_reset),
        learnable_threshold=bool(adapter.learnable_threshold),
        learnable_tau=bool(adapter.learnable_tau),
    )


def apply_adapter(model: nn.Module, adapter: Any, target_modules: Any, modules_to_save: list[str] | None) -> nn.Module:
    """Wrap ``model`` with the adapter (PEFT), or make every parameter trainable (``full``)."""
    from transformers import PreTrainedModel

    task_type = "SEQ_CLS" if isinstance(model, PreTrainedModel) else None
    config = peft_config(adapter, target_modules, modules_to_save, task_type)
    if config is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    return get_peft_model(model, config)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
