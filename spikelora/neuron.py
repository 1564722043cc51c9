"""The leaky integrate-and-fire gate of SpikeLoRA.

Given the low-rank activations ``h = A · dropout(x)``, the gate returns ``h ⊙ S`` with a spike
mask ``S ∈ {0, 1}``. Forward uses the Heaviside step; backward replaces ``dS/dH`` by the
arctangent surrogate (SpikingJelly's ``ATan``)::

    dS/dH = (α / 2) / (1 + (π/2 · α · (H − V_θ))²)

Gradients reach ``h`` through both factors of ``h ⊙ S``.

Two ways to run the neuron:

``mode="step"`` (default, the authors' released code)
    One LIF step from rest per forward call, element-wise::

        H = h / τ          (decay_input=True,  SpikingJelly's LIFNode from v = 0)
        H = h              (decay_input=False, the paper's Eq. 1 with V[t-1] = 0)
        S = 1[H ≥ V_θ]

    With ``decay_input=True`` the neuron fires where ``h ≥ τ·V_θ``: the *effective threshold on
    h is τ·V_θ* (0.2 for the defaults τ = 2, V_θ = 0.1). The reset after the spike is hard and
    detached, and has no effect on a single step.

``mode="temporal"``
    The token axis is the time axis (``h`` is ``(batch, seq, r)``). The membrane carries from
    token t−1 to t within a sequence and starts at rest for every sequence::

        V[t] = β · V[t−1] + h[t] / τ    (decay_input=True;  β = 1 − 1/τ)
        V[t] = β · V[t−1] + h[t]        (decay_input=False)
        S[t] = 1[V[t] ≥ V_θ]
        V[t] ← V[t] · (1 − S[t])        (reset="hard", to zero)
        V[t] ← V[t] − S[t] · V_θ        (reset="soft", by subtraction, Eq. 1)

    The reset uses ``S`` detached. Padding positions (from :mod:`spikelora.tokens`) neither
    charge nor leak the membrane and never fire. Calls that are not over tokens (2-D input, or a
    shape that does not match the batch's token mask) fall back to one step from rest.

The gate family
    :class:`LIFGate` is one of several gates on the same activations, all built by
    :func:`make_gate` (``SpikeLoraConfig.gate``). With ``θ`` the LIF's effective threshold on h
    (``τ·V_θ`` with ``decay_input``, else ``V_θ``), so that at the same settings the sparse gates
    silence the same units:

    ``lif``        this module's LIF gate (step or temporal mode, learnable V_θ / τ)
    ``threshold``  ``h ⊙ 1[h ≥ θ]`` with the mask detached: the LIF's forward, no surrogate gradient
    ``relu``       ``ReLU(h − θ)``: a learnable ANN gate (V_θ / τ learnable)
    ``sigmoid``    ``h ⊙ σ((h − θ)/t)``: continuous, no exact zeros (V_θ / τ learnable)
    ``topk``       per token, the k largest activations pass (mask detached)
    ``random``     rank-space dropout: each unit dropped with probability p in training only,
                   the survivors scaled by 1/(1 − p); the identity in eval

    ``two_sided=True`` (lif in step mode, threshold, relu, sigmoid, topk) fires on ``|h|`` instead
    of ``h``: ``|h| ≥ θ``, ``sign(h)·ReLU(|h| − θ)``, ``h ⊙ σ((|h| − θ)/t)``, the k largest ``|h|``.

Every gate keeps no tensor between calls. It only accumulates, on the device and without host
synchronisation, how many gate units passed (were not set to zero) over real tokens (and, apart,
over other calls), how many had a negative activation (the units a one-sided gate silences by
their sign alone) and, for the sigmoid gate, how many had a gate value below 0.5; and it keeps
the passed / total units of its most recent call (the authors' per-call figure). See
:mod:`spikelora.telemetry` for reading them.
"""

from __future__ import annotations

import functools
import importlib
import math
from typing import Any, ClassVar

import torch
from torch import nn

from .tokens import TokenMask, current_token_mask

MODES = ("step", "temporal")
RESETS = ("hard", "soft")
PHASES = ("train", "eval")
COUNTERS = ("token_fired", "token_total", "other_fired", "other_total")
GATES = ("lif", "threshold", "relu", "sigmoid", "topk", "random")
# Counted beside the fired units: activations below zero, and (sigmoid) gate values below 0.5.
AUX_COUNTERS = ("token_negative", "other_negative", "token_below_half", "other_below_half")
# A phase's row of Gate.tally: the slots a call adds to are contiguous (token or other: fired,
# total, negative, below half), so one call's counts go in with one add.
_SLOTS = (
    "token_fired", "token_total", "token_negative", "token_below_half",
    "other_fired", "other_total", "other_negative", "other_below_half",
)  # fmt: skip
_COUNTS = [_SLOTS.index(n) for n in COUNTERS]
_AUX = [_SLOTS.index(n) for n in AUX_COUNTERS]
# The share of zeros of the topk and random gates when neither topk nor target_sparsity is set.
DEFAULT_TARGET_SPARSITY = 0.5


def _atan_surrogate(x: torch.Tensor, alpha: float) -> torch.Tensor:
    # Same operation order as SpikingJelly's ATan backward, so that results agree to the last bit.
    return alpha / 2 / (1 + (math.pi / 2 * alpha * x).pow(2))


TEMPORAL_IMPLS = ("auto", "loop", "spikingjelly")


@functools.cache
def spikingjelly() -> tuple[Any, Any] | None:
    """SpikingJelly 2's ``neuron`` and ``surrogate`` modules, or None. An optional dependency,
    imported on first use rather than with this module: its import logs a warning where Triton is
    absent, and most runs never need it."""
    try:
        return (
            importlib.import_module("spikingjelly.activation_based.neuron"),
            importlib.import_module("spikingjelly.activation_based.surrogate"),
        )
    except ImportError:
        return None


class ATanSpike(torch.autograd.Function):
    """Heaviside ``1[x ≥ 0]`` forward, arctangent surrogate gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * _atan_surrogate(x, ctx.alpha), None


class _StepGate(torch.autograd.Function):
    """Fused single LIF step from rest: returns ``(h ⊙ S, S as bool)``.

    One custom op instead of five autograd nodes keeps the per-module overhead of SpikeLoRA over
    LoRA small; only ``h`` is saved and ``S`` is recomputed in backward.
    ``v_threshold`` and ``tau`` are Python floats, or 0-d tensors when learnable. With
    ``two_sided`` the neuron fires on ``|H| ≥ V_θ`` (surrogate ``dS/dH = sign(H) · ATan'(|H| − V_θ)``).
    """

    @staticmethod
    def forward(ctx, h, v_threshold, tau, alpha: float, decay_input: bool, two_sided: bool = False):
        mem = h / tau if decay_input else h
        fired = (mem.abs() if two_sided else mem) >= v_threshold
        ctx.save_for_backward(
            h,
            v_threshold if torch.is_tensor(v_threshold) else None,
            tau if torch.is_tensor(tau) else None,
        )
        ctx.consts = (v_threshold, tau, alpha, decay_input, two_sided)
        ctx.mark_non_differentiable(fired)
        # One kernel where h * fired.to(h.dtype) takes two (a silent unit is +0.0 rather than -0.0).
        return torch.where(fired, h, 0.0), fired

    @staticmethod
    def backward(ctx, grad_out, _grad_fired):
        h, vth_t, tau_t = ctx.saved_tensors
        v_threshold, tau, alpha, decay_input, two_sided = ctx.consts
        vth = vth_t if vth_t is not None else v_threshold
        tau = tau_t if tau_t is not None else tau
        mem = h / tau if decay_input else h
        x = (mem.abs() if two_sided else mem) - vth
        spike = x >= 0
        # coef = h · dS/d(x) (the ATan surrogate), built in place: this runs for every adapted
        # module on every step, so fewer temporaries matter.
        coef = x.mul_(math.pi / 2 * alpha).square_().add_(1).reciprocal_().mul_(alpha / 2).mul_(h)
        grad_vth = grad_tau = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_mem = grad_out * coef  # dL/dx
            if ctx.needs_input_grad[1]:
                grad_vth = -grad_mem.sum().reshape(vth_t.shape).to(vth_t.dtype)
            if ctx.needs_input_grad[2]:
                if decay_input:  # dx/dτ = −h/τ² (−|h|/τ² two-sided)
                    grad_tau = (-grad_mem * (h.abs() if two_sided else h) / (tau * tau)).sum()
                    grad_tau = grad_tau.reshape(tau_t.shape).to(tau_t.dtype)
                else:  # one step without decay_input does not read τ
                    grad_tau = torch.zeros_like(tau_t)
        # d(h·S)/dh = S + h · dS/dx · dx/dh, with dx/dh = 1/τ (decay_input) or 1, times sign(h) two-sided.
        if decay_input:
            coef = coef.div_(tau)
        if two_sided:
            coef = coef.mul_(torch.sign(h))
        grad_h = grad_out * coef.add_(spike)
        return grad_h, grad_vth, grad_tau, None, None, None


class Gate(nn.Module):
    """A gate on the low-rank activations ``h``, with SpikeLoRA's sparsity counters.

    Subclasses implement :meth:`_gate`, returning the gated activations, the units that passed
    (a bool mask: a unit that did not pass is zero in the output) and, for a continuous gate, the
    units whose gate value is below 0.5 (else ``None``). Counting happens here, on the device.
    """

    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        # Passed / seen gate units, over real tokens and over other calls, kept apart for calls in
        # train and in eval mode; beside them the negative activations and (sigmoid) gate values
        # below 0.5: one int64 row per phase, laid out as _SLOTS, so that a call adds all it
        # counts with one kernel. Non-persistent: it follows the module across devices but never
        # enters a checkpoint. Then passed / all units of the most recent call (padding and
        # non-token calls included, the authors' per-call figure), overwritten every call.
        self.register_buffer("tally", torch.zeros(len(PHASES), len(_SLOTS), dtype=torch.int64), persistent=False)
        self.register_buffer("last", torch.zeros(2, dtype=torch.int64), persistent=False)
        self.count_sparsity = True

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        tokens = current_token_mask()
        over_tokens = tokens is not None and tokens.matches(h)
        out, fired, below_half = self._gate(h, tokens, over_tokens)
        if self.count_sparsity and not _in_backward():
            self._count(h, fired, below_half, tokens, over_tokens)
        return out

    def _gate(
        self, h: torch.Tensor, tokens: TokenMask | None, over_tokens: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    @torch.no_grad()
    def _count(
        self,
        h: torch.Tensor,
        fired: torch.Tensor,
        below_half: torch.Tensor | None,
        tokens: TokenMask | None,
        over_tokens: bool,
    ) -> None:
        # All of a call's counts in one reduction over stacked flags, one add into the tally and
        # one copy into `last`; nothing leaves the device. Over tokens the flags are masked to real
        # tokens, the mask itself is a flag (its sum is the token units seen), and `fired` comes
        # again unmasked at the end: the per-call figure counts padding too.
        row = self.tally[PHASES.index("train" if self.training else "eval")]
        extra = [] if below_half is None else [below_half]
        negative = h.detach() < 0
        if over_tokens:
            flags = [fired, tokens.mask3.expand_as(fired), negative, *extra, fired]
            sums = (torch.stack(flags) & tokens.flag_mask[-len(flags) :]).flatten(1).sum(1)
            row[: len(flags) - 1].add_(sums[:-1])
            fired_all = sums[-1]
        else:
            start = 0 if tokens is None else _SLOTS.index("other_fired")
            sums = torch.stack([fired, negative, *extra]).flatten(1).sum(1)
            row[start].add_(sums[0])
            row[start + 1].add_(fired.numel())
            row[start + 2 : start + 1 + len(sums)].add_(sums[1:])
            fired_all = sums[0]
        self.last[0].copy_(fired_all)
        self.last[1].fill_(fired.numel())

    def counts(self, phase: str | None = None) -> torch.Tensor:
        """``(token_fired, token_total, other_fired, other_total)`` for ``"train"``, ``"eval"`` or both (None)."""
        return self._rows(phase)[_COUNTS]

    def aux_counts(self, phase: str | None = None) -> torch.Tensor:
        """``(token_negative, other_negative, token_below_half, other_below_half)``, as :meth:`counts`.

        ``negative``: units whose activation ``h`` was below zero. ``below_half``: units whose gate
        value was below 0.5 (the sigmoid gate only; zero for the others).
        """
        return self._rows(phase)[_AUX]

    def _rows(self, phase: str | None) -> torch.Tensor:
        return sum(self.tally[PHASES.index(p)] for p in _phases(phase))

    def counter(self, phase: str, name: str) -> torch.Tensor:
        """One counter of ``phase`` (``"train"``/``"eval"``), e.g. ``"token_fired"``: a 0-d view of the tally."""
        if phase not in PHASES or name not in _SLOTS:
            raise KeyError(f"no counter {phase}_{name}: phases {PHASES}, counters {_SLOTS}")
        return self.tally[PHASES.index(phase), _SLOTS.index(name)]

    def last_counts(self) -> torch.Tensor:
        """``(fired, total)`` gate units of the most recent call, every position counted (on the device)."""
        return self.last.clone()

    def reset_counts(self, phase: str | None = None) -> None:
        for p in _phases(phase):
            self.tally[PHASES.index(p)].zero_()

    @property
    def soft(self) -> bool:
        """Whether the gate has a continuous value (its ``below_half`` counters are meaningful)."""
        return False


class _ThresholdGate(Gate):
    """A gate with the LIF's threshold settings: ``θ = τ·V_θ`` (decay_input) or ``V_θ``."""

    def __init__(
        self,
        v_threshold: float = 0.1,
        tau: float = 2.0,
        *,
        decay_input: bool = True,
        two_sided: bool = False,
        learnable_threshold: bool = False,
        learnable_tau: bool = False,
    ) -> None:
        super().__init__()
        self.decay_input = bool(decay_input)
        self.two_sided = bool(two_sided)
        if learnable_threshold:
            self.v_threshold = nn.Parameter(torch.tensor(float(v_threshold)))
        else:
            self.v_threshold = float(v_threshold)
        if learnable_tau:
            self.tau = nn.Parameter(torch.tensor(float(tau)))
        else:
            self.tau = float(tau)

    def _tau(self) -> float | torch.Tensor:
        if isinstance(self.tau, torch.Tensor):
            return self.tau.clamp_min(1.0 + 1e-3)
        return self.tau

    def theta(self) -> float | torch.Tensor:
        """The effective threshold on ``h``: ``τ·V_θ`` with decay_input, else ``V_θ``."""
        return self._tau() * self.v_threshold if self.decay_input else self.v_threshold

    def _flags(self) -> list[str]:
        """The non-default switches, for ``extra_repr``."""
        flags = ["two_sided=True"] if self.two_sided else []
        if isinstance(self.v_threshold, nn.Parameter):
            flags.append("learnable_threshold=True")
        if isinstance(self.tau, nn.Parameter):
            flags.append("learnable_tau=True")
        return flags

    def extra_repr(self) -> str:
        vth = float(self.v_threshold.detach()) if torch.is_tensor(self.v_threshold) else self.v_threshold
        tau = float(self.tau.detach()) if torch.is_tensor(self.tau) else self.tau
        parts = [f"v_threshold={vth:g}", f"tau={tau:g}", f"decay_input={self.decay_input}"]
        return ", ".join(parts + self._flags())


class LIFGate(_ThresholdGate):
    """Gate ``h ⊙ S(h)`` with a leaky integrate-and-fire neuron (see the module docstring).

    Args:
        v_threshold: firing threshold V_θ (≥ 0). With ``decay_input=True`` and ``mode="step"``
            the neuron fires where ``h ≥ τ·V_θ``.
        tau: membrane time constant τ (> 1 whenever it is used: decay_input or temporal mode).
        surrogate_alpha: sharpness α of the arctangent surrogate gradient (> 0).
        decay_input: divide the input by τ when charging (SpikingJelly's default and the
            authors' code); ``False`` is the paper's Eq. 1 form.
        mode: ``"step"`` (one step from rest per call) or ``"temporal"`` (tokens are time).
        reset: ``"hard"`` (to zero) or ``"soft"`` (subtract V_θ); matters in temporal mode only.
        learnable_threshold: make V_θ one trainable scalar for this gate.
        learnable_tau: make τ one trainable scalar for this gate (kept ≥ 1 + 1e-3 in use).
        two_sided: fire on ``|H| ≥ V_θ`` (step mode only).
    """

    kind = "lif"

    def __init__(
        self,
        v_threshold: float = 0.1,
        tau: float = 2.0,
        surrogate_alpha: float = 2.0,
        *,
        decay_input: bool = True,
        mode: str = "step",
        reset: str = "hard",
        learnable_threshold: bool = False,
        learnable_tau: bool = False,
        two_sided: bool = False,
        temporal_impl: str = "auto",
    ) -> None:
        validate_gate_args(
            v_threshold=v_threshold,
            tau=tau,
            surrogate_alpha=surrogate_alpha,
            decay_input=decay_input,
            mode=mode,
            reset=reset,
        )
        if two_sided and mode == "temporal":
            raise ValueError("two_sided firing is for spike_mode='step'; the temporal LIF fires on V ≥ V_θ only.")
        _check_temporal_impl(temporal_impl, mode, learnable_threshold or learnable_tau)
        self.temporal_impl = temporal_impl
        super().__init__(
            v_threshold,
            tau,
            decay_input=decay_input,
            two_sided=two_sided,
            learnable_threshold=learnable_threshold,
            learnable_tau=learnable_tau,
        )
        self.surrogate_alpha = float(surrogate_alpha)
        self.mode = mode
        self.reset = reset

    def _gate(self, h: torch.Tensor, tokens: TokenMask | None, over_tokens: bool):
        tau = self._tau()
        if self.mode == "temporal" and h.dim() == 3 and (tokens is None or over_tokens):
            mask = tokens.mask if over_tokens else None
            if self._fused(h):
                out, fired = _temporal_spikingjelly(
                    h, mask, self.v_threshold, tau, self.surrogate_alpha, self.decay_input, self.reset
                )
            else:
                out, fired = self._temporal(h, tau, mask)
        else:
            out, fired = _StepGate.apply(
                h, self.v_threshold, tau, self.surrogate_alpha, self.decay_input, self.two_sided
            )
        return out, fired, None

    def _fused(self, h: torch.Tensor) -> bool:
        """Whether the temporal mode runs SpikingJelly's multi-step LIF (``temporal_impl``; ``auto``:
        wherever SpikingJelly is installed and V_θ, τ are fixed: its fused kernel on CUDA, and on
        this CPU its torch path took 0.62-0.78 of the loop's time, ``scripts/bench_temporal_gate.py``)."""
        if self.temporal_impl == "loop":
            return False
        if self.temporal_impl == "auto" and torch.compiler.is_compiling():
            return False  # SpikingJelly's node breaks the graph; the loop compiles into it
        if torch.is_tensor(self.v_threshold) or torch.is_tensor(self.tau):
            return False  # learnable V_θ / τ (refused for "spikingjelly" at construction)
        return self.temporal_impl == "spikingjelly" or spikingjelly() is not None

    def _temporal(self, h: torch.Tensor, tau, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        beta = 1.0 - 1.0 / tau
        vth = self.v_threshold
        v = torch.zeros_like(h[:, 0])
        outs, spikes = [], []
        for t in range(h.shape[1]):
            h_t = h[:, t]
            v_new = beta * v + (h_t / tau if self.decay_input else h_t)
            s = ATanSpike.apply(v_new - vth, self.surrogate_alpha)
            if mask is not None:
                real = mask[:, t, None]
                s = s * real
                v_new = torch.where(real, v_new, v)
            s_ = s.detach()
            v = v_new * (1 - s_) if self.reset == "hard" else v_new - s_ * vth
            outs.append(h_t * s)
            spikes.append(s_)
        return torch.stack(outs, 1), torch.stack(spikes, 1) > 0

    def extra_repr(self) -> str:
        vth = float(self.v_threshold.detach()) if torch.is_tensor(self.v_threshold) else self.v_threshold
        tau = float(self.tau.detach()) if torch.is_tensor(self.tau) else self.tau
        parts = [f"v_threshold={vth:g}", f"tau={tau:g}", f"surrogate_alpha={self.surrogate_alpha:g}"]
        parts.append(f"decay_input={self.decay_input}, mode={self.mode!r}")
        if self.mode == "temporal":
            parts.append(f"reset={self.reset!r}")
            if self.temporal_impl != "auto":
                parts.append(f"temporal_impl={self.temporal_impl!r}")
        return ", ".join(parts + self._flags())


def _check_temporal_impl(impl: str, mode: str, learnable: bool) -> None:
    if impl not in TEMPORAL_IMPLS:
        raise ValueError(f"temporal_impl must be one of {', '.join(map(repr, TEMPORAL_IMPLS))}, got {impl!r}.")
    if impl == "spikingjelly":
        if mode != "temporal":
            raise ValueError(
                "temporal_impl='spikingjelly' is for spike_mode='temporal'; step mode has no loop to fuse."
            )
        if learnable:
            raise ValueError(
                "temporal_impl='spikingjelly' needs a fixed V_θ and τ (SpikingJelly's LIFNode takes numbers): "
                "use temporal_impl='loop' or 'auto' with learnable_threshold/learnable_tau."
            )
        if spikingjelly() is None:
            raise ImportError(
                "temporal_impl='spikingjelly' needs SpikingJelly 2: pip install --no-deps spikingjelly==2.0.0"
            )


def _temporal_spikingjelly(
    h: torch.Tensor, mask: torch.Tensor | None, vth: float, tau: float, alpha: float, decay_input: bool, reset: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The temporal LIF through SpikingJelly 2's multi-step ``LIFNode`` (one fused kernel over all
    tokens on CUDA), equal to :meth:`LIFGate._temporal` forward and backward.

    Padding must neither charge nor decay the membrane (the loop holds it). Each row's real tokens
    are therefore moved to the front in order (a stable sort of the mask, on the device: no host
    sync), the neuron runs over them with zero input at the padded tail (which no real token
    follows), and the outputs go back to their positions; padded positions never fire."""
    neuron, surrogate = spikingjelly()
    if mask is not None:
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        index = order.unsqueeze(-1).expand_as(h)
        real = torch.gather(mask, 1, order).unsqueeze(-1).to(h.dtype)
        x = torch.gather(h, 1, index) * real
    else:
        x = h
    node = neuron.LIFNode(  # a fresh node per call: SpikingJelly's keep their membrane between calls
        tau=float(tau),
        decay_input=decay_input,
        v_threshold=float(vth),
        v_reset=0.0 if reset == "hard" else None,
        surrogate_function=surrogate.ATan(alpha=alpha),
        detach_reset=True,  # the loop's reset is detached too
        step_mode="m",
    )
    s = node(x.transpose(0, 1).contiguous()).transpose(0, 1)
    if mask is not None:
        s = torch.zeros_like(s).scatter(1, index, s * real)
    return h * s, s.detach() > 0


class ThresholdGate(_ThresholdGate):
    """``h ⊙ 1[h ≥ θ]`` (``1[|h| ≥ θ]`` two-sided) with the mask detached: the LIF's forward, no surrogate.

    The mask is computed exactly as the LIF computes it (``h/τ ≥ V_θ`` with decay_input), so at
    the same settings both silence the same units; the gradient is ``mask ⊙ upstream``.
    """

    kind = "threshold"

    def _gate(self, h: torch.Tensor, tokens: TokenMask | None, over_tokens: bool):
        with torch.no_grad():
            mem = h / self.tau if self.decay_input else h
            fired = (mem.abs() if self.two_sided else mem) >= self.v_threshold
        return h * fired.to(h.dtype), fired, None


class ReluGate(_ThresholdGate):
    """``ReLU(h − θ)`` (``sign(h) · ReLU(|h| − θ)`` two-sided): a learnable ANN gate (reviewers' Q1)."""

    kind = "relu"

    def _gate(self, h: torch.Tensor, tokens: TokenMask | None, over_tokens: bool):
        theta = self.theta()
        if self.two_sided:
            x = h.abs() - theta
            out = torch.sign(h) * torch.relu(x)
        else:
            x = h - theta
            out = torch.relu(x)
        return out, (x > 0).detach(), None


class SigmoidGate(_ThresholdGate):
    """``h ⊙ σ((h − θ)/t)`` (``σ((|h| − θ)/t)`` two-sided): a continuous gate without exact zeros.

    Its sparsity is the share of exact zeros of the output (0 unless σ underflows or h is 0);
    the share of gate values below 0.5 (the units a hard threshold at θ would silence) is counted
    apart. ``temperature=None``: ``t = τ/(2α)`` with decay_input, else ``1/(2α)``, the slope of
    the LIF's ATan surrogate at the threshold (0.5 for the defaults τ = 2, α = 2).
    """

    kind = "sigmoid"

    def __init__(self, v_threshold: float = 0.1, tau: float = 2.0, *, temperature: float, **kwargs: Any) -> None:
        super().__init__(v_threshold, tau, **kwargs)
        self.temperature = float(temperature)

    @property
    def soft(self) -> bool:
        return True

    def _gate(self, h: torch.Tensor, tokens: TokenMask | None, over_tokens: bool):
        value = torch.sigmoid(((h.abs() if self.two_sided else h) - self.theta()) / self.temperature)
        out = h * value
        return out, (out != 0).detach(), (value < 0.5).detach()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature:g}"


class TopKGate(Gate):
    """Per token (the last axis), the ``k`` largest activations pass (largest ``|h|`` two-sided); mask detached."""

    kind = "topk"

    def __init__(self, k: int, *, two_sided: bool = False) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"topk must be a positive integer (units kept per token), got {k!r}.")
        self.k = k
        self.two_sided = bool(two_sided)

    def _gate(self, h: torch.Tensor, tokens: TokenMask | None, over_tokens: bool):
        with torch.no_grad():
            score = h.abs() if self.two_sided else h
            index = score.topk(min(self.k, h.shape[-1]), dim=-1).indices
            fired = torch.zeros(h.shape, dtype=torch.bool, device=h.device).scatter_(-1, index, True)
        return h * fired.to(h.dtype), fired, None

    def extra_repr(self) -> str:
        return f"k={self.k}" + (", two_sided=True" if self.two_sided else "")


class RandomGate(Gate):
    """Rank-space dropout: in training each unit is zeroed with probability ``rate`` and the others
    scaled by ``1/(1 − rate)`` (inverted dropout, as ``nn.Dropout``); the identity in eval."""

    kind = "random"

    def __init__(self, rate: float) -> None:
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"target_sparsity (the random gate's drop rate) must be in [0, 1), got {rate!r}.")
        self.rate = float(rate)

    def _gate(self, h: torch.Tensor, tokens: TokenMask | None, over_tokens: bool):
        if not self.training or self.rate == 0.0:
            return h, torch.ones(h.shape, dtype=torch.bool, device=h.device), None
        fired = torch.rand(h.shape, device=h.device) >= self.rate
        return h * (fired.to(h.dtype) * (1.0 / (1.0 - self.rate))), fired, None

    def extra_repr(self) -> str:
        return f"rate={self.rate:g}"


def _phases(phase: str | None) -> tuple[str, ...]:
    if phase is None:
        return PHASES
    if phase not in PHASES:
        raise ValueError(f"phase must be 'train', 'eval' or None (both), got {phase!r}.")
    return (phase,)


def _in_backward() -> bool:
    # Activation checkpointing re-runs the forward during backward; counting there would count
    # every batch twice. A compiled region never re-runs this Python (AOTAutograd recomputes
    # inside its own graph), and TorchDynamo cannot trace the autograd engine's task id.
    if torch.compiler.is_compiling():
        return False
    return torch._C._current_graph_task_id() != -1


def validate_gate_args(
    *, v_threshold: float, tau: float, surrogate_alpha: float, decay_input: bool, mode: str, reset: str
) -> None:
    """Raise ``ValueError`` naming the bad argument and the fix."""
    if mode not in MODES:
        raise ValueError(f"Unknown spike mode {mode!r}: use one of {', '.join(map(repr, MODES))}.")
    if reset not in RESETS:
        raise ValueError(f"Unknown spike reset {reset!r}: use 'hard' (to zero) or 'soft' (subtract V_θ).")
    for name, value in (("v_threshold", v_threshold), ("tau", tau), ("surrogate_alpha", surrogate_alpha)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}.")
    if not math.isfinite(v_threshold) or v_threshold < 0:
        raise ValueError(
            f"vth (the firing threshold): v_threshold must be >= 0 and finite, got {v_threshold}. A negative "
            "threshold makes the neuron fire on negative activations; use 0 for the least sparsity."
        )
    if not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau must be a positive number, got {tau}.")
    if (decay_input or mode == "temporal") and tau <= 1:
        raise ValueError(
            f"tau must be > 1 with decay_input=True or mode='temporal' (the leak is 1 - 1/tau), got {tau}; "
            "the reference value is 2.0."
        )
    if not math.isfinite(surrogate_alpha) or surrogate_alpha <= 0:
        raise ValueError(f"surrogate_alpha must be > 0, got {surrogate_alpha}; the reference value is 2.0.")


def topk_units(r: int, topk: int | None = None, target_sparsity: float | None = None) -> int:
    """Units the topk gate keeps per token at rank ``r``: ``topk``, or ``round(r · (1 − target_sparsity))``
    (halves rounded up), with :data:`DEFAULT_TARGET_SPARSITY` when neither is set."""
    if topk is not None:
        if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= r:
            raise ValueError(f"topk must be an integer in [1, r={r}] (units kept per token), got {topk!r}.")
        return topk
    s = DEFAULT_TARGET_SPARSITY if target_sparsity is None else target_sparsity
    k = math.floor(r * (1.0 - s) + 0.5)
    if k < 1:
        raise ValueError(
            f"target_sparsity={s} keeps round({r} × (1 − {s})) = 0 of r={r} units per token; "
            "lower target_sparsity or set topk=1."
        )
    return k


def make_gate(
    gate: str = "lif",
    *,
    v_threshold: float = 0.1,
    tau: float = 2.0,
    surrogate_alpha: float = 2.0,
    decay_input: bool = True,
    mode: str = "step",
    reset: str = "hard",
    learnable_threshold: bool = False,
    learnable_tau: bool = False,
    two_sided: bool = False,
    temperature: float | None = None,
    topk: int | None = None,
    target_sparsity: float | None = None,
    temporal_impl: str = "auto",
    r: int | None = None,
) -> Gate:
    """The gate named ``gate`` (one of :data:`GATES`) for an adapter of rank ``r``.

    Every argument is checked, and a setting that the chosen gate would ignore or cannot train
    (a temporal mode for a non-LIF gate, a learnable threshold without a gradient, ...) is
    refused with a message naming it; ``gate="lif"`` with the other new arguments at their
    defaults builds exactly today's :class:`LIFGate`.
    """
    if gate not in GATES:
        raise ValueError(f"Unknown gate {gate!r}: use one of {', '.join(map(repr, GATES))}.")
    validate_gate_args(
        v_threshold=v_threshold,
        tau=tau,
        surrogate_alpha=surrogate_alpha,
        decay_input=decay_input,
        mode=mode,
        reset=reset,
    )
    for name, value in (("two_sided", two_sided), ("learnable_threshold", learnable_threshold)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}.")
    if not isinstance(learnable_tau, bool):
        raise ValueError(f"learnable_tau must be true or false, got {learnable_tau!r}.")
    if gate != "lif":
        if mode != "step":
            raise ValueError(f"spike_mode={mode!r} is the LIF gate's; gate={gate!r} acts on each call alone (step).")
        if reset != "hard":
            raise ValueError(f"spike_reset={reset!r} is the temporal LIF's; gate={gate!r} has no membrane to reset.")
    if temperature is not None:
        if gate != "sigmoid":
            raise ValueError(f"temperature is the sigmoid gate's; gate={gate!r} does not use it.")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be a positive number (or null), got {temperature!r}.")
        if not math.isfinite(temperature):
            raise ValueError(f"temperature must be finite, got {temperature!r}.")
    if topk is not None and gate != "topk":
        raise ValueError(f"topk is the topk gate's; gate={gate!r} does not use it.")
    if target_sparsity is not None:
        if gate not in ("topk", "random"):
            raise ValueError(
                f"target_sparsity sets the topk and random gates' share of zeros; gate={gate!r} learns its own."
            )
        if isinstance(target_sparsity, bool) or not isinstance(target_sparsity, (int, float)):
            raise ValueError(f"target_sparsity must be a number in [0, 1), got {target_sparsity!r}.")
        if not 0.0 <= target_sparsity < 1.0:
            raise ValueError(f"target_sparsity must be in [0, 1), got {target_sparsity!r}.")
        if topk is not None:
            raise ValueError("Set topk or target_sparsity, not both: each alone fixes the units kept per token.")
    if gate in ("threshold", "topk", "random") and (learnable_threshold or learnable_tau):
        raise ValueError(
            f"gate={gate!r} passes no gradient to V_θ or τ (its mask is detached or does not use them): "
            "set learnable_threshold=false and learnable_tau=false, or use gate=lif, relu or sigmoid."
        )
    if gate in ("relu", "sigmoid") and learnable_tau and not decay_input:
        raise ValueError(f"gate={gate!r} without decay_input has θ = V_θ: τ is unused, so learnable_tau cannot train.")
    if two_sided and gate == "random":
        raise ValueError("two_sided applies to the threshold gates and topk; the random gate ignores h.")

    threshold = dict(
        decay_input=decay_input,
        two_sided=two_sided,
        learnable_threshold=learnable_threshold,
        learnable_tau=learnable_tau,
    )
    if gate != "lif" and temporal_impl != "auto":
        raise ValueError(f"temporal_impl is the temporal LIF gate's; gate={gate!r} has no loop over tokens.")
    if gate == "lif":
        return LIFGate(
            v_threshold, tau, surrogate_alpha, mode=mode, reset=reset, temporal_impl=temporal_impl, **threshold
        )
    if gate == "threshold":
        return ThresholdGate(v_threshold, tau, **threshold)
    if gate == "relu":
        return ReluGate(v_threshold, tau, **threshold)
    if gate == "sigmoid":
        if temperature is None:
            temperature = (tau if decay_input else 1.0) / (2.0 * surrogate_alpha)
        return SigmoidGate(v_threshold, tau, temperature=temperature, **threshold)
    if gate == "topk":
        if r is None:
            if topk is None:
                raise ValueError("The topk gate needs the adapter rank r to turn target_sparsity into k.")
            r = topk
        return TopKGate(topk_units(r, topk, target_sparsity), two_sided=two_sided)
    return RandomGate(DEFAULT_TARGET_SPARSITY if target_sparsity is None else float(target_sparsity))
