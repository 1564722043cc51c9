"""Turn the ``adapter`` config group into a trainable model: LoRA, SpikeLoRA or full fine-tuning."""

from __future__ import annotations

import math
import warnings
from typing import Any

from peft import LoraConfig, get_peft_model
from torch import nn

from .adapter import GATE_FIELDS, SpikeLoraConfig

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
    r = adapter.r
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"r must be a positive integer (the adapter rank), got r={r!r}.")
    dropout = adapter.dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
    alpha = adapter.alpha
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0):
        raise ValueError(f"adapter.alpha must be a positive number (or null for sqrt(r)), got {alpha!r}.")
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    common = dict(
        r=r,
        lora_alpha=float(alpha) if alpha is not None else math.sqrt(r),
        use_rslora=bool(adapter.use_rslora),
        lora_dropout=float(dropout),
        target_modules=targets,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        task_type=task_type,
    )
    if adapter.type == "lora":
        return LoraConfig(**common)
    gate = {name: adapter[name] for name in GATE_FIELDS}  # checked by the gate (neuron.validate_gate_args)
    return SpikeLoraConfig(**common, **gate)


def apply_adapter(model: nn.Module, adapter: Any, target_modules: Any, modules_to_save: list[str] | None) -> nn.Module:
    """Wrap ``model`` with the adapter (PEFT), or make every parameter trainable (``full``)."""
    from transformers import PreTrainedModel

    task_type = "SEQ_CLS" if isinstance(model, PreTrainedModel) else None
    config = peft_config(adapter, target_modules, modules_to_save, task_type)
    if config is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    with warnings.catch_warnings():
        # PEFT reads `model.is_gradient_checkpointing`, which transformers 5 deprecates: not ours to fix.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, config)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
