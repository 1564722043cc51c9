"""Reading the sparsity counters of SpikeLoRA gates.

Sparsity is the share of gate units that did not fire (``S = 0``; for every gate of
:data:`spikelora.neuron.GATES`, the units it set to zero), accumulated over every call since the
last reset and over real tokens only (see :mod:`spikelora.tokens`). Beside it: the share of units
whose activation was negative (those a one-sided gate silences by their sign alone) and, for the
sigmoid gate, which has no exact zeros, the share of gate values below 0.5. Calls in train and
in eval mode are counted apart, so a trainer can read both without resetting one for the other. Reading is the
only host synchronisation: one transfer for the whole model, however many modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .neuron import AUX_COUNTERS, COUNTERS, Gate, _phases

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
        negative: ``{module_name: share}`` of units whose activation ``h`` was negative, over real
            tokens. A one-sided gate (``h ≥ θ`` with θ ≥ 0) silences all of them: this much of its
            sparsity is the sign alone.
        negative_mean: unweighted mean of ``negative`` over modules (as ``mean``).
        below_half: ``{module_name: share}`` of gate values below 0.5, for gates with a continuous
            value (the sigmoid gate; other modules are left out).
        below_half_mean: unweighted mean of ``below_half`` (``nan`` when no module has one).
        gates: ``{gate kind: number of modules}`` (``lif``, ``threshold``, ...).
    """

    modules: dict[str, float] = field(default_factory=dict)
    mean: float = float("nan")
    pooled: float = float("nan")
    tokens: dict[str, int] = field(default_factory=dict)
    non_token: dict[str, float] = field(default_factory=dict)
    negative: dict[str, float] = field(default_factory=dict)
    negative_mean: float = float("nan")
    below_half: dict[str, float] = field(default_factory=dict)
    below_half_mean: float = float("nan")
    gates: dict[str, int] = field(default_factory=dict)


def _gates(model: nn.Module, adapter_name: str | None) -> list[tuple[str, Gate]]:
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
    counts = torch.stack([torch.cat([g.counts(phase), g.aux_counts(phase)]) for _, g in gates])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Under DDP each rank saw its own shard: sum the counters of all ranks (every rank must call this).
        torch.distributed.all_reduce(counts)
    counts = counts.cpu().tolist()  # the one host transfer
    report = SparsityReport()
    fired_sum = total_sum = 0
    for (name, gate), row in zip(gates, counts):
        t_fired, t_total, o_fired, o_total = row[: len(COUNTERS)]
        aux = dict(zip(AUX_COUNTERS, row[len(COUNTERS) :]))
        report.gates[gate.kind] = report.gates.get(gate.kind, 0) + 1
        if t_total:
            report.modules[name] = 1.0 - t_fired / t_total
            report.tokens[name] = t_total
            report.negative[name] = aux["token_negative"] / t_total
            if gate.soft:
                report.below_half[name] = aux["token_below_half"] / t_total
            fired_sum += t_fired
            total_sum += t_total
        if o_total:
            report.non_token[name] = 1.0 - o_fired / o_total
    if report.modules:
        report.mean = sum(report.modules.values()) / len(report.modules)
        report.pooled = 1.0 - fired_sum / total_sum
        report.negative_mean = sum(report.negative.values()) / len(report.negative)
    if report.below_half:
        report.below_half_mean = sum(report.below_half.values()) / len(report.below_half)
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
        if isinstance(module, Gate):
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
        f"{name}.{phase}_{c}": module.counter(phase, c).detach().cpu().clone()
        for name, module in model.named_modules()
        if isinstance(module, Gate)
        for c in COUNTERS + AUX_COUNTERS
    }


def load_counter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Restore counters saved by :func:`counter_state` (names must match: the same model and adapters)."""
    modules = dict(model.named_modules())
    for key, value in state.items():
        name, _, counter = key.rpartition(".")  # "<module>.train_token_fired"
        phase, _, slot = counter.partition("_")
        modules[name].counter(phase, slot).copy_(value)
