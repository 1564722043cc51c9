"""SpikeLoRA: LoRA whose low-rank activations are gated by a leaky integrate-and-fire neuron.

``import spikelora`` registers the ``SPIKELORA`` PEFT type, after which plain
``peft.get_peft_model(model, SpikeLoraConfig(...))`` and ``PeftModel.from_pretrained`` work.
"""

from .adapter import (
    PEFT_TYPE,
    SpikeLoraConfig,
    SpikeLoraLinear,
    SpikeLoraModel,
    SpikeLoraVariant,
    register,
)
from .neuron import ATanSpike, LIFGate
from .telemetry import SparsityReport, reset_sparsity, sparsity, sparsity_report
from .tokens import token_mask

register()

__version__ = "0.1.0"

__all__ = [
    "PEFT_TYPE",
    "ATanSpike",
    "LIFGate",
    "SparsityReport",
    "SpikeLoraConfig",
    "SpikeLoraLinear",
    "SpikeLoraModel",
    "SpikeLoraVariant",
    "__version__",
    "register",
    "reset_sparsity",
    "sparsity",
    "sparsity_report",
    "token_mask",
]
