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
    ZeroSkipSpikeLoraVariant,
    register,
    set_zero_skip,
)
from .neuron import ATanSpike, LIFGate
from .ops import ops_report, reset_ops, track_ops, untrack_ops
from .telemetry import SparsityReport, reference_sparsity, reset_sparsity, sparsity, sparsity_report
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
    "ZeroSkipSpikeLoraVariant",
    "__version__",
    "ops_report",
    "reference_sparsity",
    "register",
    "reset_ops",
    "reset_sparsity",
    "set_zero_skip",
    "sparsity",
    "sparsity_report",
    "token_mask",
    "track_ops",
    "untrack_ops",
]
