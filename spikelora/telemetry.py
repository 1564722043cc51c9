"""Reading the sparsity counters of SpikeLoRA gates.

Sparsity is the share of gate units that did not fire (``S = 0``), accumulated over every call
since the last reset and over real tokens only (see :mod:`spikelora.tokens`). Calls in train and
in eval mode are counted apart, so a trainer can read both without resetting one for the other. Reading is the
only host synchronisation: one transfer for the whole model, however many modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .neuron import COUNTERS, LIFGate, _phases

OPS_COUNTERS = "_spikelora_ops"  # where spikelora.ops.track_ops keeps a layer's row counters


@dataclass
class SparsityReport:
    """Sparsity of every gated module, with two global figures.

    Attributes:
        modules: ``{module_name: sparsity}`` over real tokens (modules that saw none are left out).
        mean: unweighted mean over ``modules`` — the paper's "average sparsity across all modules".
        pooled: zeros / gate units summed over all modules (token-weighted).
        tokens: gate units counted per module, ``{module_name: count}``.
        non_token: ``{module_name: sparsity}`` of calls that were not over the batch's tokens
            (e.g. DeBERTa's query/key projection of the relative-position table), kept apart.
    """

    modules: dict[str, float] = field(default_factory=dict)
    mean: float = float("nan")
    pooled: float = float("nan")
    tokens: dict[str, int] = field(default_factory=dict)
    non_token: dict[str, float] = field(default_factory=dict)


def _gates(model: nn.Module, adapter_name: str | None) -> list[tuple[str, LIFGate]]:
    found = []
    for name, module in model.named_modules():
        gates = getattr(module, "lora_spike", None)
        if not isinstance(gates, nn.ModuleDict):
            continue
        if adapter_name is None:
            active = getattr(module, "active_adapters", None) or list(gates.keys())
            chosen = [a for a in active if a in gates] or list(gates.keys())[:1]
            if len(chosen) > 1:
                raise ValueError(f"Several SpikeLoRA adapters are active ({chosen}); pass adapter_name= to choose one.")
            key = chosen[0] if chosen else None
        else:
            key = adapter_name if adapter_name in gates else None
        if key is not None:
            found.append((_clean(name), gates[key]))
    return found


def _clean(name: str) -> str:
    # PeftModel wraps the user's model twice; report names as in the base model.
    return name.removeprefix("base_model.model.")


def sparsity_report(model: nn.Module, adapter_name: str | None = None, phase: str | None = None) -> SparsityReport:
    """Collect every gate's counters of ``model`` (a ``PeftModel`` or any module holding gates).

    ``phase``: ``"train"`` (calls made in train mode), ``"eval"`` (in eval mode) or ``None`` (both).
    """
    gates = _gates(model, adapter_name)
    if not gates:
        return SparsityReport()
    counts = torch.stack([g.counts(phase) for _, g in gates])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Under DDP each rank saw its own shard: sum the counters of all ranks (every rank must call this).
        torch.distributed.all_reduce(counts)
    counts = counts.cpu().tolist()
    report = SparsityReport()
    fired_sum = total_sum = 0
    for (name, _), (t_fired, t_total, o_fired, o_total) in zip(gates, counts):
        if t_total:
            report.modules[name] = 1.0 - t_fired / t_total
            report.tokens[name] = t_total
            fired_sum += t_fired
            total_sum += t_total
        if o_total:
            report.non_token[name] = 1.0 - o_fired / o_total
    if report.modules:
        report.mean = sum(report.modules.values()) / len(report.modules)
        report.pooled = 1.0 - fired_sum / total_sum
    return report


def sparsity(model: nn.Module, adapter_name: str | None = None, phase: str | None = None) -> dict[str, float]:
    """``{module_name: fraction of gate units that did not fire}`` over real tokens since the last reset.

    For the global figures (module mean, token-pooled) and the non-token calls use
    :func:`sparsity_report`; ``phase`` as there.
    """
    return sparsity_report(model, adapter_name, phase).modules


def reset_sparsity(model: nn.Module, phase: str | None = None) -> None:
    """Zero the counters of every gate in ``model`` (all adapters), of one phase or both.

    The row counters of :func:`spikelora.ops.track_ops` are zeroed with them: the effective
    operation counts are read from the gates' counters, so both must cover the same calls.
    """
    phases = _phases(phase)
    for module in model.modules():
        if isinstance(module, LIFGate):
            module.reset_counts(phase)
        for key, counters in (getattr(module, OPS_COUNTERS, None) or {}).items():
            if key[0] in phases:
                for t in counters:
                    t.zero_()


def reference_sparsity(model: nn.Module, adapter_name: str | None = None) -> float:
    """The authors' sparsity figure: unweighted mean over modules of the zero share of each gate's last call.

    As ``spikeloralib`` computes it: each module's figure is ``(S == 0).mean()`` over the whole
    spike tensor of its most recent forward call — padding included, and for DeBERTa's
    ``query_proj``/``key_proj`` the second call over the relative-position table — and the
    modules are averaged without weights. Read after evaluation it describes the last eval batch
    only. Per rank under DDP (the authors' code does no reduction). ``nan`` when no gate has run.
    One host transfer.
    """
    gates = [g for _, g in _gates(model, adapter_name)]
    if not gates:
        return float("nan")
    last = torch.stack([g.last_counts() for g in gates]).cpu().tolist()
    shares = [1.0 - fired / total for fired, total in last if total]
    return sum(shares) / len(shares) if shares else float("nan")


def counter_state(model: nn.Module, phase: str = "train") -> dict[str, torch.Tensor]:
    """The gates' counters of ``phase`` (CPU copies), to carry them across a checkpoint and resume."""
    return {
        f"{name}.{phase}_{c}": getattr(module, f"{phase}_{c}").detach().cpu().clone()
        for name, module in model.named_modules()
        if isinstance(module, LIFGate)
        for c in COUNTERS
    }


def load_counter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Restore counters saved by :func:`counter_state` (names must match: the same model and adapters)."""
    modules = dict(model.named_modules())
    for key, value in state.items():
        name, _, buffer = key.rpartition(".")
        getattr(modules[name], buffer).copy_(value)
