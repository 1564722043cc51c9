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

The gate keeps no tensor between calls. It only accumulates, on the device and without host
synchronisation, how many gate units fired over real tokens (and, apart, over other calls), and
keeps the fired / total units of its most recent call (the authors' per-call figure); see
:mod:`spikelora.telemetry` for reading them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .tokens import TokenMask, current_token_mask

MODES = ("step", "temporal")
RESETS = ("hard", "soft")
PHASES = ("train", "eval")
COUNTERS = ("token_fired", "token_total", "other_fired", "other_total")


def _atan_surrogate(x: torch.Tensor, alpha: float) -> torch.Tensor:
    # Same operation order as SpikingJelly's ATan backward, so that results agree to the last bit.
    return alpha / 2 / (1 + (math.pi / 2 * alpha * x).pow(2))


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
    ``v_threshold`` and ``tau`` are Python floats, or 0-d tensors when learnable.
    """

    @staticmethod
    def forward(ctx, h, v_threshold, tau, alpha: float, decay_input: bool):
        mem = h / tau if decay_input else h
        fired = mem >= v_threshold
        ctx.save_for_backward(
            h,
            v_threshold if torch.is_tensor(v_threshold) else None,
            tau if torch.is_tensor(tau) else None,
        )
        ctx.consts = (v_threshold, tau, alpha, decay_input)
        ctx.mark_non_differentiable(fired)
        return h * fired.to(h.dtype), fired

    @staticmethod
    def backward(ctx, grad_out, _grad_fired):
        h, vth_t, tau_t = ctx.saved_tensors
        v_threshold, tau, alpha, decay_input = ctx.consts
        vth = vth_t if vth_t is not None else v_threshold
        tau = tau_t if tau_t is not None else tau
        x = (h / tau if decay_input else h) - vth
        spike = x >= 0
        # coef = h · dS/dH (the ATan surrogate), built in place: this runs for every adapted
        # module on every step, so fewer temporaries matter.
        coef = x.mul_(math.pi / 2 * alpha).square_().add_(1).reciprocal_().mul_(alpha / 2).mul_(h)
        grad_vth = grad_tau = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_mem = grad_out * coef  # dL/dH
            if ctx.needs_input_grad[1]:
                grad_vth = -grad_mem.sum().reshape(vth_t.shape).to(vth_t.dtype)
            if ctx.needs_input_grad[2]:
                grad_tau = (-grad_mem * h / (tau * tau)).sum().reshape(tau_t.shape).to(tau_t.dtype)
        # d(h·S)/dh = S + h · dS/dH · dH/dh, with dH/dh = 1/τ (decay_input) or 1.
        if decay_input:
            coef = coef.div_(tau)
        grad_h = grad_out * coef.add_(spike)
        return grad_h, grad_vth, grad_tau, None, None


class LIFGate(nn.Module):
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
    """

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
    ) -> None:
        super().__init__()
        validate_gate_args(
            v_threshold=v_threshold,
            tau=tau,
            surrogate_alpha=surrogate_alpha,
            decay_input=decay_input,
            mode=mode,
            reset=reset,
        )
        self.surrogate_alpha = float(surrogate_alpha)
        self.decay_input = bool(decay_input)
        self.mode = mode
        self.reset = reset
        if learnable_threshold:
            self.v_threshold = nn.Parameter(torch.tensor(float(v_threshold)))
        else:
            self.v_threshold = float(v_threshold)
        if learnable_tau:
            self.tau = nn.Parameter(torch.tensor(float(tau)))
        else:
            self.tau = float(tau)
        # Fired / seen gate units, over real tokens and over other calls, kept apart for calls in
        # train and in eval mode. Non-persistent: they follow the module across devices but never
        # enter a checkpoint. Separate 0-d buffers keep each update to a single in-place add.
        for phase in PHASES:
            for name in COUNTERS:
                self.register_buffer(f"{phase}_{name}", torch.zeros((), dtype=torch.int64), persistent=False)
        # Fired / all units of the most recent call (padding and non-token calls included), the
        # authors' per-call figure; overwritten every call, in either phase.
        self.register_buffer("last_fired", torch.zeros((), dtype=torch.int64), persistent=False)
        self.register_buffer("last_total", torch.zeros((), dtype=torch.int64), persistent=False)
        self.count_sparsity = True

    # ------------------------------------------------------------------ forward
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        tokens = current_token_mask()
        over_tokens = tokens is not None and tokens.matches(h)
        tau = self._tau()
        if self.mode == "temporal" and h.dim() == 3 and (tokens is None or over_tokens):
            out, fired = self._temporal(h, tau, tokens.mask if over_tokens else None)
        else:
            out, fired = _StepGate.apply(h, self.v_threshold, tau, self.surrogate_alpha, self.decay_input)
        if self.count_sparsity and not _in_backward():
            self._count(fired, tokens, over_tokens)
        return out

    def _tau(self) -> float | torch.Tensor:
        if isinstance(self.tau, torch.Tensor):
            return self.tau.clamp_min(1.0 + 1e-3)
        return self.tau

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

    @torch.no_grad()
    def _count(self, fired: torch.Tensor, tokens: TokenMask | None, over_tokens: bool) -> None:
        self.last_fired.copy_(fired.sum())
        self.last_total.fill_(fired.numel())
        phase = "train_" if self.training else "eval_"
        if over_tokens:
            getattr(self, phase + "token_fired").add_((fired & tokens.mask3).sum())
            getattr(self, phase + "token_total").add_(tokens.n_real, alpha=fired.shape[-1])
        else:
            kind = "token_" if tokens is None else "other_"
            getattr(self, phase + kind + "fired").add_(fired.sum())
            getattr(self, phase + kind + "total").add_(fired.numel())

    def counts(self, phase: str | None = None) -> torch.Tensor:
        """``(token_fired, token_total, other_fired, other_total)`` for ``"train"``, ``"eval"`` or both (None)."""
        phases = _phases(phase)
        return sum(torch.stack([getattr(self, f"{p}_{n}") for n in COUNTERS]) for p in phases)

    def last_counts(self) -> torch.Tensor:
        """``(fired, total)`` gate units of the most recent call, every position counted (on the device)."""
        return torch.stack([self.last_fired, self.last_total])

    def reset_counts(self, phase: str | None = None) -> None:
        for p in _phases(phase):
            for n in COUNTERS:
                getattr(self, f"{p}_{n}").zero_()

    def extra_repr(self) -> str:
        vth = float(self.v_threshold.detach()) if torch.is_tensor(self.v_threshold) else self.v_threshold
        tau = float(self.tau.detach()) if torch.is_tensor(self.tau) else self.tau
        parts = [f"v_threshold={vth:g}", f"tau={tau:g}", f"surrogate_alpha={self.surrogate_alpha:g}"]
        parts.append(f"decay_input={self.decay_input}, mode={self.mode!r}")
        if self.mode == "temporal":
            parts.append(f"reset={self.reset!r}")
        if isinstance(self.v_threshold, nn.Parameter):
            parts.append("learnable_threshold=True")
        if isinstance(self.tau, nn.Parameter):
            parts.append("learnable_tau=True")
        return ", ".join(parts)


def _phases(phase: str | None) -> tuple[str, ...]:
    if phase is None:
        return PHASES
    if phase not in PHASES:
        raise ValueError(f"phase must be 'train', 'eval' or None (both), got {phase!r}.")
    return (phase,)


def _in_backward() -> bool:
    # Activation checkpointing re-runs the forward during backward; counting there would count
    # every batch twice.
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
