"""SpikeGPT (Zhu et al., 2024) in plain PyTorch, state-dict compatible with ``SpikeGPT-216M.pth``.

One file, nanoGPT style. Notation: L layers, C channels, V vocabulary, B batch, T tokens.

    x = Θ(emb[idx])                                  spiking embedding (Heaviside, ATan surrogate)
    for block i:  (i == 0: x = ln0(x))
        x = x + LIF(att(ln1(x)))                     time-mix (SRWKV), LIF over the token axis
        x = x + LIF(ffn(ln2(x)))                     channel-mix (SRFFN)
        x = dropout(x)
    logits = head(ln_out(x))                         LM head [V, C], or a new n_classes head

Token shift: xx_t = x_{t−1} (xx_0 = 0); lerp_μ(x) = μ·x + (1 − μ)·xx.

Time-mix: k = W_k lerp_k, v = W_v lerp_v, r = W_r lerp_r; out = W_o (σ(r) ⊙ WKV(w, u, k, v)) with
w = −exp(time_decay), u = time_first and

    WKV_t = (Σ_{i<t} e^{(t−1−i)w + k_i} v_i + e^{u + k_t} v_t) / (Σ_{i<t} e^{(t−1−i)w + k_i} + e^{u + k_t})

computed by the numerically stable scan of the CUDA kernel (:func:`wkv`).

Channel-mix: out = σ(W_r lerp_r) ⊙ W_v (ReLU(W_k lerp_k))².

LIF (multi-step, per channel, membrane at rest for every sequence): H_t = V_{t−1} + (X_t − V_{t−1})/τ,
S_t = Θ(H_t − V_θ), V_t = H_t (1 − S_t), τ = 2, V_θ = 1, ATan surrogate α = 2. No state survives
a forward call, so no reset calls are ever needed.

Classification (``n_classes``): a new ``head`` [n_classes, C] ~ N(0, 0.02) reads one position:
``pooling="last_token"`` (the last real token; default, independent of batch padding) or
``"last_position"`` (the authors' recipe: the last position of the right-padded batch).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from ..neuron import ATanSpike, spikingjelly

HUB_REPO = "ridger/SpikeGPT-OpenWebText-216M"
HUB_FILE = "SpikeGPT-216M.pth"
POOLINGS = ("last_token", "last_position")
WKV_IMPLS = ("auto", "loop", "scan")
LIF_IMPLS = ("auto", "loop", "spikingjelly")


@dataclass
class SpikeGPTConfig:
    n_layer: int
    n_embd: int
    vocab_size: int
    ctx_len: int = 1024
    n_classes: int | None = None  # None: the language-model head, as in the checkpoint
    pooling: str = "last_token"
    dropout: float = 0.03
    tau: float = 2.0
    v_threshold: float = 1.0
    surrogate_alpha: float = 2.0
    wkv: str = "auto"  # "loop" (token by token), "scan" (parallel, chunked) or "auto" (scan on CUDA)
    lif: str = "auto"  # "loop", "spikingjelly" (SpikingJelly 2's fused multi-step LIF) or "auto" (it on CUDA)

    def __post_init__(self) -> None:
        if self.wkv not in WKV_IMPLS:
            raise ValueError(f"wkv must be one of {', '.join(map(repr, WKV_IMPLS))}, got {self.wkv!r}.")
        if self.lif not in LIF_IMPLS:
            raise ValueError(f"lif must be one of {', '.join(map(repr, LIF_IMPLS))}, got {self.lif!r}.")
        if self.n_layer < 2:
            raise ValueError(f"SpikeGPT needs n_layer >= 2 (its init divides by n_layer - 1), got {self.n_layer}.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}.")


def spike(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Θ(x) = 1[x ≥ 0] with the arctangent surrogate gradient."""
    return ATanSpike.apply(x, alpha)


class _LIFSequence(torch.autograd.Function):
    """Multi-step LIF over dim 1 as one autograd node: both loops run without building a graph.

    Backward is BPTT by hand: with σ' the ATan surrogate and the reset not detached,
        dL/dH_t = dL/dS_t · σ'_t + dL/dV_t · (1 − S_t − H_t σ'_t),
        dL/dX_t = dL/dH_t / τ,   dL/dV_{t−1} = dL/dH_t · (1 − 1/τ).
    """

    @staticmethod
    def forward(ctx, x, tau: float, v_threshold: float, alpha: float):
        v = torch.zeros_like(x[:, 0])
        mem = torch.empty_like(x)
        spikes = torch.empty_like(x)
        for t in range(x.shape[1]):
            h = v + (x[:, t] - v) / tau
            s = (h >= v_threshold).to(x.dtype)
            v = h * (1 - s)
            mem[:, t] = h
            spikes[:, t] = s
        ctx.save_for_backward(mem, spikes)
        ctx.consts = (tau, v_threshold, alpha)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        mem, spikes = ctx.saved_tensors
        tau, v_threshold, alpha = ctx.consts
        sg = alpha / 2 / (1 + (math.pi / 2 * alpha * (mem - v_threshold)).pow(2))
        dv_dh = 1 - spikes - mem * sg
        grad_from_s = grad_spikes * sg
        grad_x = torch.empty_like(mem)
        grad_v = torch.zeros_like(mem[:, 0])
        for t in reversed(range(mem.shape[1])):
            grad_h = grad_from_s[:, t] + grad_v * dv_dh[:, t]
            grad_x[:, t] = grad_h / tau
            grad_v = grad_h * (1 - 1 / tau)
        return grad_x, None, None, None


def lif(
    x: torch.Tensor, tau: float = 2.0, v_threshold: float = 1.0, alpha: float = 2.0, impl: str = "auto"
) -> torch.Tensor:
    """Multi-step LIF over the token axis of ``x`` (B, T, C); returns the spikes. Hard reset, not detached.

    ``impl="loop"``: :class:`_LIFSequence` (one autograd node, a Python loop over tokens);
    ``"spikingjelly"``: SpikingJelly 2's multi-step ``LIFNode`` (the same neuron: decay_input,
    v_reset 0, ATan surrogate, reset not detached), which on CUDA dispatches to its fused Triton
    kernel, one launch for all tokens; ``"auto"``: SpikingJelly on CUDA when it is installed, the
    loop otherwise (on CPU the loop is as fast, and SpikingJelly computes in float32).
    """
    if impl not in LIF_IMPLS:
        raise ValueError(f"lif must be one of {', '.join(map(repr, LIF_IMPLS))}, got {impl!r}.")
    sj = spikingjelly() if impl == "spikingjelly" or (impl == "auto" and x.is_cuda) else None
    if impl == "spikingjelly" and sj is None:
        raise ImportError("lif='spikingjelly' needs SpikingJelly 2: pip install --no-deps spikingjelly==2.0.0")
    if sj is None:
        return _LIFSequence.apply(x, tau, v_threshold, alpha)
    neuron, surrogate = sj
    # A fresh node per call: SpikingJelly's neurons keep their membrane between calls, SpikeGPT's does not.
    node = neuron.LIFNode(
        tau=tau,
        decay_input=True,
        v_threshold=v_threshold,
        v_reset=0.0,
        surrogate_function=surrogate.ATan(alpha=alpha),
        detach_reset=False,
        step_mode="m",
    )
    return node(x.transpose(0, 1).contiguous()).transpose(0, 1)


class _WKV(torch.autograd.Function):
    """The stable WKV scan as one autograd node (forward and backward without a per-step graph).

    State before token t: (p_t, q_t, o_t) with numerator P_t = e^{o_t} p_t, denominator Q_t = e^{o_t} q_t.
    Forward: o_{t+1} = max(w + o_t, k_t); p_{t+1} = a_t p_t + b_t v_t, q_{t+1} = a_t q_t + b_t with
    a_t = e^{w + o_t − o_{t+1}}, b_t = e^{k_t − o_{t+1}}; output y_t = (a'_t p_t + b'_t v_t) / d_t,
    d_t = a'_t q_t + b'_t with a'_t = e^{o_t − n_t}, b'_t = e^{u + k_t − n_t}, n_t = max(o_t, u + k_t).
    Backward carries scaled adjoints gp_t = e^{o_t} ∂L/∂P_t (and gq_t), which stay bounded:
        gp_t = g_t a'_t / d_t + a_t gp_{t+1},      gq_t = −g_t a'_t y_t / d_t + a_t gq_{t+1},
        ∂L/∂v_t = g_t b'_t / d_t + b_t gp_{t+1},   ∂L/∂k_t = g_t b'_t (v_t − y_t) / d_t + b_t (gp_{t+1} v_t + gq_{t+1}),
        ∂L/∂u = Σ g_t b'_t (v_t − y_t) / d_t,      ∂L/∂w = Σ a_t (gp_{t+1} p_t + gq_{t+1} q_t).
    Only the two linear recurrences run per token; everything else is whole-tensor.
    """

    @staticmethod
    def forward(ctx, w, u, k, v):
        B, T, C = k.shape
        o = torch.empty_like(k)
        cur = torch.full((B, C), -1e38, dtype=k.dtype, device=k.device)
        for t in range(T):  # o_t, the running maximum exponent (state before token t)
            o[:, t] = cur
            cur = torch.maximum(cur + w, k[:, t])
        o_next = torch.cat([o[:, 1:], cur.unsqueeze(1)], dim=1)
        a = torch.exp(w + o - o_next)
        bv = torch.exp(k - o_next)
        p = torch.empty_like(k)
        q = torch.empty_like(k)
        pc = torch.zeros(B, C, dtype=k.dtype, device=k.device)
        qc = torch.zeros_like(pc)
        for t in range(T):
            p[:, t] = pc
            q[:, t] = qc
            pc = torch.addcmul(bv[:, t] * v[:, t], a[:, t], pc)
            qc = torch.addcmul(bv[:, t], a[:, t], qc)
        uk = u + k
        n = torch.maximum(o, uk)
        a1 = torch.exp(o - n)
        b1 = torch.exp(uk - n)
        d = a1 * q + b1
        y = (a1 * p + b1 * v) / d
        ctx.save_for_backward(v, y, d, a1, b1, a, bv, p, q)
        return y

    @staticmethod
    def backward(ctx, g):
        v, y, d, a1, b1, a, bv, p, q = ctx.saved_tensors
        B, T, C = v.shape
        gd = g / d
        c_p = gd * a1
        c_q = -c_p * y
        gp_next = torch.empty_like(v)  # gp_{t+1}
        gq_next = torch.empty_like(v)
        gp = torch.zeros(B, C, dtype=v.dtype, device=v.device)
        gq = torch.zeros_like(gp)
        for t in reversed(range(T)):
            gp_next[:, t] = gp
            gq_next[:, t] = gq
            gp = torch.addcmul(c_p[:, t], a[:, t], gp)
            gq = torch.addcmul(c_q[:, t], a[:, t], gq)
        direct = gd * b1
        gu_terms = direct * (v - y)
        gv = direct + bv * gp_next
        gk = gu_terms + bv * (gp_next * v + gq_next)
        gu = gu_terms.sum((0, 1))
        gw = (a * (gp_next * p + gq_next * q)).sum((0, 1))
        return gw, gu, gk, gv


SCAN_CHUNK = 16  # tokens per chunk of the parallel WKV


def _wkv_parallel(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int) -> torch.Tensor:
    """WKV without a loop over tokens: a softmax-weighted mean of v over i ≤ t per channel, with
    logits (t−1−i)·w + k_i (i < t) and u + k_t (i = t), computed in two levels of chunks.

    With t = J·L + τ (chunk J, offset τ): the tokens of chunk J before τ enter directly (logits
    (τ−1−ι)w + k_ι), each earlier chunk J' through its summary (the weights e^{a_ι − m} of
    a_ι = (L−1−ι)w + k_ι, m = max a, applied to v and to 1), carried to chunk J with the logit
    m_{J'} + (J−1−J')·L·w and then to position τ with + τ·w. Every logit is a small offset (never
    an absolute position times w), every exponent is taken after subtracting its maximum (all ≤ 0,
    detached: they cancel between numerator and denominator), and every denominator holds a term
    e^0 = 1, so there is no overflow and no 0/0. The operation count does not depend on T.
    """
    B, T, C = k.shape
    L = min(chunk, T)
    n = -(-T // L)
    pad = n * L - T
    if pad:  # causal: padding after the last token never reaches a real one
        k = F.pad(k, (0, 0, 0, pad))
        v = F.pad(v, (0, 0, 0, pad))
    k = k.view(B, n, L, C)
    v = v.view(B, n, L, C)
    tiny = torch.finfo(k.dtype).min / 4  # a logit that is never the maximum and whose exp is 0
    pos = torch.arange(L, device=k.device, dtype=k.dtype)
    # Within a chunk: lag[τ, ι] = τ − 1 − ι for ι < τ.
    lag = pos.view(L, 1) - 1 - pos.view(1, L)
    before = lag >= 0
    intra = torch.where(before.view(1, 1, L, L, 1), lag.view(1, 1, L, L, 1) * w + k.unsqueeze(2), tiny)
    # Each chunk's summary, seen from its last token: a_ι = (L − 1 − ι)·w + k_ι.
    a = (L - 1 - pos).view(1, 1, L, 1) * w + k
    m = a.detach().amax(2)  # (B, n, C)
    e = torch.exp(a - m.unsqueeze(2))
    sp, sq = (e * v).sum(2), e.sum(2)
    # Carried from chunk J' to chunk J > J': logit m_{J'} + (J − 1 − J')·L·w.
    cpos = torch.arange(n, device=k.device, dtype=k.dtype)
    clag = cpos.view(n, 1) - 1 - cpos.view(1, n)
    earlier = (clag >= 0).view(1, n, n, 1)
    inter = torch.where(earlier, clag.view(1, n, n, 1) * (L * w) + m.unsqueeze(1), tiny)
    o = inter.detach().amax(2)  # (B, n, C); `tiny` for chunk 0
    ei = torch.where(earlier, torch.exp(inter - o.unsqueeze(2)), 0.0)
    cp, cq = (ei * sp.unsqueeze(1)).sum(2), (ei * sq.unsqueeze(1)).sum(2)  # (B, n, C)
    # At token τ of chunk J: the carry (logit o_J + τ·w), the chunk's earlier tokens, the token itself.
    carry = torch.where(cpos.view(1, n, 1, 1) > 0, o.unsqueeze(2) + pos.view(1, 1, L, 1) * w, tiny)
    own = u + k
    top = torch.maximum(torch.maximum(carry, intra.amax(3)), own).detach()
    ec = torch.exp(carry - top)
    ex = torch.exp(intra - top.unsqueeze(3))
    eo = torch.exp(own - top)
    num = ec * cp.unsqueeze(2) + (ex * v.unsqueeze(2)).sum(3) + eo * v
    den = ec * cq.unsqueeze(2) + ex.sum(3) + eo
    return (num / den).reshape(B, n * L, C)[:, :T]


class _WKVScan(torch.autograd.Function):
    """:func:`_wkv_parallel` as one autograd node: only the inputs are kept, and backward runs the
    parallel form again under autograd (the T × L and chunk × chunk tensors are not stored)."""

    @staticmethod
    def forward(ctx, w, u, k, v, chunk: int):
        ctx.save_for_backward(w, u, k, v)
        ctx.chunk = chunk
        return _wkv_parallel(w, u, k, v, chunk)

    @staticmethod
    def backward(ctx, g):
        inputs = [t.detach().requires_grad_() for t in ctx.saved_tensors]
        with torch.enable_grad():
            y = _wkv_parallel(*inputs, ctx.chunk)
        return (*torch.autograd.grad(y, inputs, g), None)


def wkv(
    w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str = "auto", chunk: int = SCAN_CHUNK
) -> torch.Tensor:
    """The WKV recurrence: ``w`` = −exp(time_decay), ``u`` [C]; ``k``, ``v`` [B, T, C].

    ``impl="loop"``: the stable scan of the CUDA kernel token by token, :class:`_WKV`;
    ``"scan"``: the parallel chunked form, :class:`_WKVScan` (no per-token launches);
    ``"auto"``: the scan on CUDA (where each token's kernels cost a launch), the loop elsewhere
    (on CPU the loop is cheaper). Both run in float32 (float64 stays float64) as one autograd
    node, tested against each other and the step-by-step autograd scan of
    ``tests/helpers/spikegpt_reference.py``, forward and backward.
    """
    if impl not in WKV_IMPLS:
        raise ValueError(f"wkv must be one of {', '.join(map(repr, WKV_IMPLS))}, got {impl!r}.")
    dtype = torch.promote_types(k.dtype, torch.float32)
    w, u, k, v = (t.to(dtype).contiguous() for t in (w, u, k, v))
    if impl == "scan" or (impl == "auto" and k.is_cuda):
        return _WKVScan.apply(w, u, k, v, chunk)
    return _WKV.apply(w, u, k, v)


def token_shift(x: torch.Tensor) -> torch.Tensor:
    """xx_t = x_{t−1}, zeros at t = 0."""
    return F.pad(x, (0, 0, 1, -1))


class TimeMix(nn.Module):
    def __init__(self, C: int, wkv_impl: str = "auto") -> None:
        super().__init__()
        self.wkv_impl = wkv_impl
        self.time_decay = nn.Parameter(torch.zeros(C))
        self.time_first = nn.Parameter(torch.zeros(C))
        self.time_mix_k = nn.Parameter(torch.ones(1, 1, C))
        self.time_mix_v = nn.Parameter(torch.ones(1, 1, C))
        self.time_mix_r = nn.Parameter(torch.ones(1, 1, C))
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xx = token_shift(x)
        k = self.key(x * self.time_mix_k + xx * (1 - self.time_mix_k))
        v = self.value(x * self.time_mix_v + xx * (1 - self.time_mix_v))
        r = self.receptance(x * self.time_mix_r + xx * (1 - self.time_mix_r))
        y = wkv(-torch.exp(self.time_decay), self.time_first, k, v, impl=self.wkv_impl).to(x.dtype)
        return self.output(torch.sigmoid(r) * y)


class ChannelMix(nn.Module):
    def __init__(self, C: int) -> None:
        super().__init__()
        self.time_mix_k = nn.Parameter(torch.ones(1, 1, C))
        self.time_mix_r = nn.Parameter(torch.ones(1, 1, C))
        self.key = nn.Linear(C, 4 * C, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(4 * C, C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xx = token_shift(x)
        k = self.key(x * self.time_mix_k + xx * (1 - self.time_mix_k))
        r = self.receptance(x * self.time_mix_r + xx * (1 - self.time_mix_r))
        return torch.sigmoid(r) * self.value(torch.square(torch.relu(k)))


class Block(nn.Module):
    def __init__(self, config: SpikeGPTConfig, layer_id: int) -> None:
        super().__init__()
        C = config.n_embd
        self.cfg = config
        # Attribute order = the checkpoint's key order (ln1, ln2, ln0, att, ffn).
        self.ln1 = nn.LayerNorm(C)
        self.ln2 = nn.LayerNorm(C)
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(C)
        self.att = TimeMix(C, config.wkv)
        self.ffn = ChannelMix(C)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if hasattr(self, "ln0"):
            x = self.ln0(x)
        x = x + lif(self.att(self.ln1(x)), c.tau, c.v_threshold, c.surrogate_alpha, c.lif)
        x = x + lif(self.ffn(self.ln2(x)), c.tau, c.v_threshold, c.surrogate_alpha, c.lif)
        return self.dropout(x)


class SpikeGPT(nn.Module):
    """SpikeGPT; ``forward(input_ids, attention_mask=None, labels=None)``. Its config is ``model.cfg``
    (not ``model.config``, which the Hugging Face Trainer would take for a ``PretrainedConfig``).

    Returns the logits (B, T, V) for the language model; with ``n_classes`` a
    ``SequenceClassifierOutput`` (``loss`` when ``labels`` are given, ``logits`` (B, n_classes)),
    so that PEFT and the Hugging Face ``Trainer`` can drive it.
    """

    def __init__(self, config: SpikeGPTConfig) -> None:
        super().__init__()
        self.cfg = config
        C = config.n_embd
        self.emb = nn.Embedding(config.vocab_size, C)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_out = nn.LayerNorm(C)
        self.head = nn.Linear(C, config.n_classes or config.vocab_size, bias=False)
        if not self.emb.weight.is_meta:
            self.init_weights()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self) -> None:
        """The upstream RWKV initialisation (used for random-init models and tests)."""
        L, C = self.cfg.n_layer, self.cfg.n_embd
        h = torch.arange(C, dtype=torch.float32)
        x = h / C
        for i, block in enumerate(self.blocks):
            r0, r1 = i / (L - 1), 1.0 - i / L
            att, ffn = block.att, block.ffn
            att.time_decay.copy_(-5 + 8 * (h / max(C - 1, 1)) ** (0.7 + 1.3 * r0))
            att.time_first.copy_(math.log(0.3) + 0.5 * (((h + 1) % 3) - 1))
            att.time_mix_k.copy_((x**r1).view(1, 1, C))
            att.time_mix_v.copy_((x**r1 + 0.3 * r0).view(1, 1, C))
            att.time_mix_r.copy_((x ** (0.5 * r1)).view(1, 1, C))
            ffn.time_mix_k.copy_((x**r1).view(1, 1, C))
            ffn.time_mix_r.copy_((x**r1).view(1, 1, C))
            for lin in (att.key, att.value, att.receptance, att.output, ffn.key, ffn.receptance, ffn.value):
                out_f, in_f = lin.weight.shape
                nn.init.orthogonal_(lin.weight, gain=math.sqrt(out_f / in_f) if out_f > in_f else 1.0)
        nn.init.normal_(self.emb.weight, std=0.5)
        nn.init.normal_(self.head.weight, std=0.02)

    # ------------------------------------------------------------------ forward
    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.cfg.ctx_len:
            raise ValueError(f"sequence of {input_ids.shape[1]} tokens exceeds ctx_len={self.cfg.ctx_len}.")
        x = spike(self.emb(input_ids), self.cfg.surrogate_alpha)
        for block in self.blocks:
            x = block(x)
        return self.ln_out(x)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels=None, **_ignored):
        x = self.hidden(input_ids)
        if self.cfg.n_classes is None:
            return self.head(x)
        if self.cfg.pooling == "last_token" and attention_mask is not None:
            last = attention_mask.long().sum(dim=1).clamp_min(1) - 1
            pooled = x[torch.arange(x.shape[0], device=x.device), last]
        else:
            pooled = x[:, -1]
        logits = self.head(pooled)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def manifest(config: SpikeGPTConfig) -> dict[str, tuple[int, ...]]:
        """Every state-dict key and shape of a model with ``config`` (the checkpoint format)."""
        return {k: tuple(v.shape) for k, v in SpikeGPT._meta(config).state_dict().items()}

    @staticmethod
    def _meta(config: SpikeGPTConfig) -> SpikeGPT:
        with torch.device("meta"):
            return SpikeGPT(config)

    @classmethod
    def from_checkpoint(
        cls, path_or_hub_id: str | Path, n_classes: int | None = None, ctx_len: int = 1024, **config_kwargs
    ) -> SpikeGPT:
        """Load ``SpikeGPT-*.pth`` (a local file, or a hub repo id holding ``SpikeGPT-216M.pth``).

        n_layer, n_embd and vocab_size are read off the tensors' shapes; loading is strict and
        in fp32. With ``n_classes`` the LM head is then replaced by a new classification head.
        """
        path = Path(str(path_or_hub_id)).expanduser()
        if not path.is_file():
            repo, _, filename = str(path_or_hub_id).partition(":")
            if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
                raise FileNotFoundError(f"No SpikeGPT checkpoint at {path_or_hub_id!r} (neither a file nor a hub id).")
            path = Path(hf_hub_download(repo_id=repo, filename=filename or HUB_FILE))
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "emb.weight" not in state:
            raise ValueError(f"{path} is not a SpikeGPT state dict (no 'emb.weight' tensor).")
        V, C = state["emb.weight"].shape
        L = len({k.split(".")[1] for k in state if re.match(r"blocks\.\d+\.ln1\.weight$", k)})
        config = SpikeGPTConfig(n_layer=L, n_embd=C, vocab_size=V, ctx_len=ctx_len, **config_kwargs)
        expected = cls.manifest(config)
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        shapes = sorted(
            f"{k}: file {tuple(state[k].shape)} vs model {expected[k]}"
            for k in set(expected) & set(state)
            if tuple(state[k].shape) != expected[k]
        )
        if missing or unexpected or shapes:
            raise ValueError(
                f"{path} does not match SpikeGPT (L={L}, C={C}, V={V}):"
                + (f"\n  missing keys: {missing}" if missing else "")
                + (f"\n  unexpected keys: {unexpected}" if unexpected else "")
                + (f"\n  mis-shaped: {shapes}" if shapes else "")
            )
        model = cls(config)
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        if n_classes is not None:
            model.set_classifier(n_classes)
        return model

    def set_classifier(self, n_classes: int, pooling: str | None = None) -> None:
        """Replace the LM head by a new ``Linear(C, n_classes)`` ~ N(0, 0.02)."""
        self.cfg.n_classes = n_classes
        if pooling is not None:
            self.cfg.pooling = pooling
        head = nn.Linear(self.cfg.n_embd, n_classes, bias=False, device=self.emb.weight.device)
        nn.init.normal_(head.weight, std=0.02)
        self.head = head
