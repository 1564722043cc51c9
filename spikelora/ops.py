"""Operation and energy accounting of adapted linear layers (LoRA, SpikeLoRA, or none).

For every adapted module, over real tokens only (the token mask of :mod:`spikelora.tokens`,
as for the sparsity counters), the counts per token are:

``base_macs``           ``d_in · d_out`` (the frozen linear)
``A``                   ``d_in · r`` MACs (its input ``dropout(x)`` is real-valued)
``B``                   LoRA: ``r · d_out`` MACs (dense). SpikeLoRA: the *effective* count
                        ``(units that fired) · d_out``
``gate_ops``            SpikeLoRA only: one compare and one multiply per gate unit, ``2 · r``

Each synaptic operation is classified by NeuroBench's convention (``convention="neurobench"``,
the default): an op whose input is binary is an accumulate (AC), an op on a real-valued input a
multiply-accumulate (MAC). SpikeLoRA's B consumes ``h ⊙ S``, which is real-valued, so its
effective ops are MACs. ``convention="spike_ac"`` is the reading some SNN papers use, which
counts B's effective ops as ACs; it is never the default.

Energy is ``E = E_MAC · #MAC + E_AC · #AC (+ E_gate · gate_ops)`` with the 45 nm figures of
Horowitz (ISSCC 2014): 4.6 pJ per 32-bit float MAC, 0.9 pJ per 32-bit float add (AC), and the
gate's compare/select counted at the add's 0.9 pJ (``gate_op_pj``; set it to 0 for the bare
formula). ``conf/energy/horowitz45nm.yaml`` holds the same constants. Data movement is not modelled.

Calls that are not over the batch's tokens (DeBERTa's second pass of ``query_proj``/``key_proj``
over the relative-position table) are kept apart, under ``other`` (totals, and amortised per
real token).

How the counts are kept: SpikeLoRA gates already count fired / seen units on the device
(:meth:`~spikelora.neuron.LIFGate.counts`); the effective B count is read from those.
:func:`track_ops` adds a forward pre-hook to each adapted layer (and to plain ``nn.Linear``
targets for full fine-tuning) that adds the call's real-token rows to 0-d device tensors, and a
hook on the model that opens the token-mask context from ``attention_mask`` (plain PEFT LoRA
does not). No hook ever moves a value to the host; :func:`ops_report` reads everything in one
transfer. A SpikeLoRA model works without :func:`track_ops` too (rows come from its gates);
LoRA and full fine-tuning need it before the forward passes to be counted.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from peft.tuners.adalora import SVDLinear
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from .adapter import _batch_token_mask, quantised_lora_layers
from .neuron import Gate, _in_backward, _phases
from .telemetry import OPS_COUNTERS, _clean, reset_sparsity
from .tokens import current_token_mask, make_token_mask, reset_token_mask, set_token_mask

CONVENTIONS = ("neurobench", "spike_ac")

# Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, 45 nm process:
# 32-bit float add 0.9 pJ, 32-bit float multiply 3.7 pJ (MAC = 4.6 pJ). Same as conf/energy/horowitz45nm.yaml.
HOROWITZ_45NM: dict[str, Any] = {
    "name": "horowitz45nm",
    "mac_pj": 4.6,
    "ac_pj": 0.9,
    "gate_op_pj": 0.9,
    "source": "M. Horowitz, Computing's energy problem (and what we can do about it), ISSCC 2014, 45 nm",
}

_ATTR = OPS_COUNTERS  # {(phase, state, adapters): [token_rows, other_rows]} on the layer
_HOOKS = "_spikelora_ops_hooks"
# PEFT LoRA layers (LoRA, DoRA, SpikeLoRA; on float and bitsandbytes-quantised bases) and AdaLoRA's
ADAPTED = (LoraLinear, SVDLinear, *quantised_lora_layers())
FIGURES = ("base_macs", "adapter_macs", "adapter_macs_dense", "adapter_acs", "gate_ops")


# ---------------------------------------------------------------------------------- tracking
def track_ops(model: nn.Module, target_modules: Iterable[str] | str | None = None) -> nn.Module:
    """Start counting rows of every adapted layer of ``model`` (idempotent); returns ``model``.

    Adapted layers are PEFT ``lora.Linear`` modules (LoRA and SpikeLoRA). A model without any
    (full fine-tuning) has its ``nn.Linear`` modules counted instead: those named by
    ``target_modules`` (PEFT's rule: the full name or its dotted suffix), or all of them when
    ``None``. Call it before the forward passes to be counted.
    """
    if getattr(model, _HOOKS, None) is None:
        handles = [
            model.register_forward_pre_hook(_open_mask, with_kwargs=True),
            model.register_forward_hook(_close_mask, always_call=True),
        ]
        setattr(model, _HOOKS, handles)
        model._spikelora_ops_tokens = []
    layers = _layers(model)
    if not layers:
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and _targeted(n, target_modules)]
        if not layers:
            raise ValueError(f"track_ops: {type(model).__name__} has no adapted layer and no nn.Linear to count.")
    for _, layer in layers:
        if getattr(layer, _HOOKS, None) is None:
            setattr(layer, _ATTR, {})
            setattr(layer, _HOOKS, layer.register_forward_pre_hook(_count_rows, with_kwargs=True))
    return model


def untrack_ops(model: nn.Module) -> None:
    """Remove every hook :func:`track_ops` added (the counters go with them)."""
    for module in model.modules():
        handles = getattr(module, _HOOKS, None)
        if handles is None:
            continue
        for h in handles if isinstance(handles, list) else [handles]:
            h.remove()
        delattr(module, _HOOKS)
        if hasattr(module, _ATTR):
            delattr(module, _ATTR)


def _targeted(name: str, targets: Iterable[str] | str | None) -> bool:
    if targets is None:
        return True
    if isinstance(targets, str):
        return targets == "all-linear" or re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _open_mask(model: nn.Module, args: tuple, kwargs: dict) -> None:
    mask = _batch_token_mask(args, kwargs)
    stack = model._spikelora_ops_tokens
    if mask is None:
        stack.append(None)
        return
    stack.append(set_token_mask(make_token_mask(mask)))


def _close_mask(model: nn.Module, args: tuple, output: Any) -> None:
    stack = model._spikelora_ops_tokens
    if stack:
        handle = stack.pop()
        if handle is not None:
            reset_token_mask(handle)


def _running(layer: nn.Module) -> tuple[str, tuple[str, ...]]:
    """What the layer's forward is about to run: ``("base", ())``, ``("merged", names)`` or ``("adapters", names)``."""
    if not isinstance(layer, ADAPTED):
        return "base", ()
    if layer.disable_adapters:
        return "base", ()
    if layer.merged:
        return "merged", tuple(layer.merged_adapters)
    return "adapters", tuple(a for a in layer.active_adapters if a in layer.lora_A)


@torch.no_grad()
def _count_rows(layer: nn.Module, args: tuple, kwargs: dict) -> None:
    if _in_backward():
        return
    x = args[0] if args else kwargs.get("x", kwargs.get("input"))
    if not isinstance(x, torch.Tensor):
        return
    if kwargs.get("adapter_names") is not None:
        raise NotImplementedError("spikelora.ops does not count mixed-adapter batches (adapter_names=...).")
    phase = "train" if layer.training else "eval"
    key = (phase, *_running(layer))
    counters = getattr(layer, _ATTR)
    pair = counters.get(key)
    if pair is None or pair[0].device != x.device:
        old = pair
        pair = [torch.zeros((), dtype=torch.int64, device=x.device) for _ in range(2)]
        if old is not None:
            for new, o in zip(pair, old):
                new.copy_(o)
        counters[key] = pair
    tokens = current_token_mask()
    if tokens is not None and tokens.matches(x):
        pair[0].add_(tokens.n_real)
    else:
        pair[0 if tokens is None else 1].add_(x.numel() // x.shape[-1])


# ---------------------------------------------------------------------------------- reading
def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ADAPTED)]


def _counted(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = _layers(model)
    if layers:
        return layers
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and hasattr(m, _ATTR)]


def _energy(energy: dict | None) -> dict[str, Any]:
    out = dict(HOROWITZ_45NM)
    if energy is not None:
        unknown = set(energy) - set(HOROWITZ_45NM)
        if unknown:
            raise ValueError(f"Unknown energy keys {sorted(unknown)}; use {sorted(HOROWITZ_45NM)}.")
        out.update(energy)
    for k in ("mac_pj", "ac_pj", "gate_op_pj"):
        out[k] = float(out[k])
    return out


def ops_report(
    model: nn.Module,
    energy: dict | None = None,
    convention: str = "neurobench",
    phase: str | None = "eval",
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``(block, per_module)``: operations and energy per real token since the last reset.

    ``block`` (the whole model): ``tokens`` (real tokens seen), per-token ``base_macs``,
    ``adapter_macs`` (effective), ``adapter_macs_dense`` (what plain unmerged LoRA of the same
    ranks would cost), ``adapter_acs``, ``gate_ops``, ``macs``/``acs`` (all), ``energy_pj``
    ``{base, adapter, gate, total}`` per token, ``other`` (the same figures for calls not over
    tokens, amortised per real token, plus their ``rows``), ``energy`` (constants used),
    ``convention``, ``phase``, ``modules`` (how many were counted) and ``kinds`` (``spike``,
    ``lora``, ``lora_merged``, ``base`` → module count).

    ``per_module``: ``{module_name: {...}}`` with ``kind``, ``d_in``, ``d_out``, ``r``,
    ``tokens``, the same per-token figures, ``fired_per_token`` (SpikeLoRA), ``energy_pj`` and
    ``other`` (totals of non-token calls: ``rows`` and each figure).

    ``phase``: ``"eval"`` (calls in eval mode), ``"train"`` or ``None`` (both). ``energy``
    overrides any of ``mac_pj``, ``ac_pj``, ``gate_op_pj`` (and ``name``/``source``). One host
    transfer for the whole model; under DDP the counts of all ranks are summed (every rank must call).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"Unknown convention {convention!r}: use one of {', '.join(map(repr, CONVENTIONS))}.")
    constants = _energy(energy)
    phases = _phases(phase)
    layers = _counted(model)
    if not layers:
        raise ValueError(f"ops_report: {type(model).__name__} has no adapted layer and no tracked nn.Linear.")

    # Gather every counter into one tensor: per layer, its row counters then its gates' counts.
    plan, tensors = [], []
    for name, layer in layers:
        counters = getattr(layer, _ATTR, None)
        keys = [k for k in (counters or {}) if k[0] in phases]
        gates = {}
        spike = getattr(layer, "lora_spike", None)
        if isinstance(spike, nn.ModuleDict):
            gates = {a: g for a, g in spike.items() if isinstance(g, Gate)}
        for k in keys:
            tensors += counters[k]
        for g in gates.values():
            tensors.append(g.counts(phase))
        if counters is None and not gates:
            raise ValueError(
                f"ops_report: {_clean(name)} ({type(layer).__name__}) has no SpikeLoRA gate and was not tracked; "
                "call spikelora.track_ops(model) before the forward passes to be counted."
            )
        plan.append((name, layer, counters is not None, keys, list(gates)))
    device = tensors[0].device if tensors else torch.device("cpu")
    flat = torch.cat([t.reshape(-1).to(device) for t in tensors]) if tensors else torch.zeros(0, dtype=torch.int64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(flat)
    values = flat.tolist()  # the one host transfer

    per_module: dict[str, dict[str, Any]] = {}
    pos = 0
    for name, layer, tracked, keys, gate_names in plan:
        rows = {}
        for k in keys:
            rows[k] = values[pos : pos + 2]
            pos += 2
        gate_counts = {}
        for a in gate_names:
            gate_counts[a] = values[pos : pos + 4]
            pos += 4
        entry = _module_ops(layer, tracked, rows, gate_counts, convention, constants)
        if entry is not None:
            per_module[_clean(name)] = entry
    return _block(per_module, constants, convention, phase), per_module


def _module_ops(
    layer: nn.Module,
    tracked: bool,
    rows: dict[tuple, list[int]],
    gate_counts: dict[str, list[int]],
    convention: str,
    e: dict[str, Any],
) -> dict[str, Any] | None:
    d_in, d_out = layer.in_features, layer.out_features
    precision = base_precision(layer)
    ranks = dict(getattr(layer, "r", {}))
    tok = {"base": 0, "adapter": 0, "dense": 0, "acs": 0, "gate": 0, "fired": 0}
    oth = dict(tok)
    oth_rows = tok_rows = 0
    kinds = set()

    def add(acc: dict, which: str, value: int) -> None:
        acc[which] += value

    if tracked:
        for (_, state, adapters), (t_rows, o_rows) in rows.items():
            if not t_rows and not o_rows:
                continue
            tok_rows += t_rows
            oth_rows += o_rows
            for acc, n in ((tok, t_rows), (oth, o_rows)):
                add(acc, "base", n * d_in * d_out)
                for a in adapters:
                    r = ranks[a]
                    add(acc, "dense", n * r * (d_in + d_out))
                    if state == "adapters" and a not in gate_counts:
                        add(acc, "adapter", n * r * (d_in + d_out))
            if state == "merged" and adapters:
                kinds.add("lora_merged")
            elif state == "adapters":
                kinds.update("spike" if a in gate_counts else "lora" for a in adapters)
            else:
                kinds.add("base")
    for a, (t_fired, t_total, o_fired, o_total) in gate_counts.items():
        r = ranks[a]
        t_rows, o_rows = t_total // r, o_total // r
        if not t_total and not o_total:
            continue
        kinds.add("spike")
        if not tracked:  # the gate is the only record: its rows are the layer's rows
            tok_rows += t_rows
            oth_rows += o_rows
            for acc, n in ((tok, t_rows), (oth, o_rows)):
                add(acc, "base", n * d_in * d_out)
                add(acc, "dense", n * r * (d_in + d_out))
        for acc, n, fired in ((tok, t_rows, t_fired), (oth, o_rows, o_fired)):
            add(acc, "fired", fired)
            add(acc, "gate", 2 * n * r)
            a_macs, b_ops = n * d_in * r, fired * d_out
            if convention == "spike_ac":
                add(acc, "adapter", a_macs)
                add(acc, "acs", b_ops)
            else:
                add(acc, "adapter", a_macs + b_ops)
    if tracked and gate_counts:
        spike_rows = {a: sum(v[0] for k, v in rows.items() if k[1] == "adapters" and a in k[2]) for a in gate_counts}
        for a, (_, t_total, _, _) in gate_counts.items():
            if t_total // ranks[a] != spike_rows[a]:
                warnings.warn(
                    f"{type(layer).__name__}: gate '{a}' counted {t_total // ranks[a]} token rows, the ops counter "
                    f"{spike_rows[a]}; were the gates' counters reset on their own (LIFGate.reset_counts)?",
                    stacklevel=3,
                )
    if not tok_rows and not oth_rows:
        return None

    def per_token(acc: dict) -> dict[str, float]:
        n = tok_rows or 1
        return {
            "base_macs": acc["base"] / n,
            "adapter_macs": acc["adapter"] / n,
            "adapter_macs_dense": acc["dense"] / n,
            "adapter_acs": acc["acs"] / n,
            "gate_ops": acc["gate"] / n,
        }

    entry: dict[str, Any] = {
        "kind": "+".join(sorted(kinds)) or "base",
        "d_in": d_in,
        "d_out": d_out,
        "r": sum(ranks.values()) if ranks else 0,
        "tokens": tok_rows,
        **per_token(tok),
    }
    if gate_counts:
        entry["fired_per_token"] = tok["fired"] / (tok_rows or 1)
    if precision is not None:
        entry["base_precision"] = precision
    entry["energy_pj"] = _energy_of(entry, e, price_base=precision is None)
    entry["other"] = {
        "rows": oth_rows,
        "base_macs": oth["base"],
        "adapter_macs": oth["adapter"],
        "adapter_macs_dense": oth["dense"],
        "adapter_acs": oth["acs"],
        "gate_ops": oth["gate"],
    }
    return entry


def base_precision(layer: nn.Module) -> str | None:
    """``"nf4"``, ``"fp4"`` or ``"int8"`` where the layer's base is a bitsandbytes quantised linear, else None."""
    base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
    kind = type(base).__name__
    if kind == "Linear4bit":
        return str(getattr(base.weight, "quant_type", "4bit"))
    if kind == "Linear8bitLt":
        return "int8"
    return None


def _energy_of(fig: dict[str, float], e: dict[str, Any], price_base: bool = True) -> dict[str, float | None]:
    """Energy per token. A quantised base's products are not float MACs (int8/4-bit weights, an
    int8 or dequantising kernel): the table's float MAC energy does not price them, so its base
    and total are ``None`` rather than a float figure that would be wrong."""
    base = e["mac_pj"] * fig["base_macs"] if price_base else None
    adapter = e["mac_pj"] * fig["adapter_macs"] + e["ac_pj"] * fig["adapter_acs"]
    gate = e["gate_op_pj"] * fig["gate_ops"]
    total = None if base is None else base + adapter + gate
    return {"base": base, "adapter": adapter + gate, "gate": gate, "total": total}


def _block(per_module: dict[str, dict], e: dict[str, Any], convention: str, phase: str | None) -> dict[str, Any]:
    tokens = max((m["tokens"] for m in per_module.values()), default=0)
    block: dict[str, Any] = {"tokens": tokens}
    for f in FIGURES:
        block[f] = sum(m[f] for m in per_module.values())
    block["macs"] = block["base_macs"] + block["adapter_macs"]
    block["acs"] = block["adapter_acs"]
    quantised = sorted({m["base_precision"] for m in per_module.values() if m.get("base_precision")})
    if quantised:
        block["base_precision"] = ",".join(quantised)
    block["energy_pj"] = _energy_of(block, e, price_base=not quantised)
    other = {f: sum(m["other"][f] for m in per_module.values()) / (tokens or 1) for f in FIGURES}
    other["energy_pj"] = _energy_of(other, e, price_base=not quantised)
    other["rows"] = sum(m["other"]["rows"] for m in per_module.values())
    block["other"] = other
    block["energy"] = dict(e)
    block["convention"] = convention
    block["phase"] = phase if phase is not None else "all"
    block["modules"] = len(per_module)
    kinds: dict[str, int] = {}
    for m in per_module.values():
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
    block["kinds"] = kinds
    return block


def reset_ops(model: nn.Module, phase: str | None = None) -> None:
    """Zero the ops row counters and the gates' counters (shared with the sparsity figures) for ``phase``.

    The same as :func:`spikelora.telemetry.reset_sparsity`, which zeroes both too.
    """
    reset_sparsity(model, phase)


__all__ = [
    "CONVENTIONS",
    "HOROWITZ_45NM",
    "ops_report",
    "reset_ops",
    "track_ops",
    "untrack_ops",
]
