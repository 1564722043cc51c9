"""Models written for SpikeLoRA's experiments, nanoGPT style: one readable file each."""

from .spikegpt import SpikeGPT, SpikeGPTConfig

__all__ = ["SpikeGPT", "SpikeGPTConfig"]
