"""SpikeLoRA: LoRA whose low-rank activations are gated by a leaky integrate-and-fire neuron.

``import spikelora`` makes the ``SPIKELORA`` PEFT type known, after which plain
``peft.get_peft_model(model, SpikeLoraConfig(...))`` and ``PeftModel.from_pretrained`` work.

The import itself is light: the public names load on first use, and the PEFT registration runs
as soon as ``peft`` is imported (at once if it already is). So the command-line tools answer
``--help`` without loading torch, and an adapter user pays nothing extra.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

_API = {
    "PEFT_TYPE": "adapter",
    "SpikeLoraConfig": "adapter",
    "SpikeLoraLinear": "adapter",
    "SpikeLoraModel": "adapter",
    "SpikeLoraVariant": "adapter",
    "register": "adapter",
    "ZeroSkipSpikeLoraVariant": "adapter",
    "set_zero_skip": "adapter",
    "ops_report": "ops",
    "reset_ops": "ops",
    "track_ops": "ops",
    "untrack_ops": "ops",
    "reference_sparsity": "telemetry",
    "ATanSpike": "neuron",
    "GATES": "neuron",
    "Gate": "neuron",
    "LIFGate": "neuron",
    "make_gate": "neuron",
    "SpikeAdaLoraConfig": "adapter",
    "SpikeAdaLoraModel": "adapter",
    "SparsityReport": "telemetry",
    "reset_sparsity": "telemetry",
    "sparsity": "telemetry",
    "sparsity_report": "telemetry",
    "token_mask": "tokens",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'spikelora' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


def _register() -> None:
    adapter = sys.modules.get(f"{__name__}.adapter")
    if adapter is not None and not hasattr(adapter, "register"):
        return  # peft is being imported by spikelora.adapter itself, which registers when it is done
    importlib.import_module(".adapter", __name__).register()


class _RegisterAfterPeft(importlib.abc.MetaPathFinder):
    """Runs :func:`spikelora.register` right after the ``peft`` package finishes importing."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "peft":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("peft")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            _register()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


if "peft" in sys.modules:
    _register()
elif not any(isinstance(f, _RegisterAfterPeft) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterPeft())
