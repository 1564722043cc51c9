"""Straightforward references for SpikeGPT: the WKV closed form and a token-by-token recurrent forward.

Written independently of the parallel model (no shared helpers beyond the parameters), so the
tests compare two different computations of the same equations. Also the baseline of
``scripts/bench_spikegpt.py``.
"""

from __future__ import annotations

import math

import torch

from spikelora.neuron import ATanSpike


def wkv_closed_form(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """y = (M ⊙ e^k)ᵀ v / (M ⊙ e^k)ᵀ 1 with M[t, i] = e^{(t−1−i) w} (i < t), e^u (i = t), 0 (i > t)."""
    _, T, C = k.shape
    t = torch.arange(T).view(T, 1)
    i = torch.arange(T).view(1, T)
    dist = (t - 1 - i).to(k.dtype)  # [T, T]
    logm = dist.view(T, T, 1) * w.view(1, 1, C)
    logm = torch.where((i == t).view(T, T, 1), u.view(1, 1, C).expand(T, T, C), logm)
    logm = torch.where((i > t).view(T, T, 1), torch.full_like(logm, -math.inf), logm)
    weights = torch.exp(logm.unsqueeze(0) + k.unsqueeze(1))  # [B, T(t), T(i), C]
    return (weights * v.unsqueeze(1)).sum(2) / weights.sum(2)


def _lif_step(x, v, tau, vth):
    h = v + (x - v) / tau
    s = ATanSpike.apply(h - vth, 2.0)  # Heaviside forward; the surrogate only matters with gradients
    return s, h * (1 - s)


def recurrent_forward(model, input_ids: torch.Tensor, grad: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run SpikeGPT one token at a time, carrying every state; returns (final hidden after ln_out, spikes).

    ``spikes`` holds, per block, the att and ffn LIF outputs stacked over tokens. ``grad=True``
    keeps autograd on (the speed comparison of ``scripts/bench_spikegpt.py``).
    """
    with torch.set_grad_enabled(grad):
        return _recurrent(model, input_ids)


def _recurrent(model, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    cfg = model.cfg
    B, T = input_ids.shape
    C = cfg.n_embd
    dtype = model.emb.weight.dtype
    L = len(model.blocks)
    zeros = lambda: torch.zeros(B, C, dtype=dtype)  # noqa: E731
    att_xx = [zeros() for _ in range(L)]
    ffn_xx = [zeros() for _ in range(L)]
    p = [zeros() for _ in range(L)]
    q = [zeros() for _ in range(L)]
    o = [torch.full((B, C), -1e38, dtype=dtype) for _ in range(L)]
    v_att = [zeros() for _ in range(L)]
    v_ffn = [zeros() for _ in range(L)]
    outs, spikes = [], [[[], []] for _ in range(L)]
    for t in range(T):
        x = (model.emb.weight[input_ids[:, t]] >= 0).to(dtype)
        for li, blk in enumerate(model.blocks):
            if hasattr(blk, "ln0"):
                x = blk.ln0(x)
            a = blk.att
            xa = blk.ln1(x)
            xx = att_xx[li]
            k = a.key(xa * a.time_mix_k[0, 0] + xx * (1 - a.time_mix_k[0, 0]))
            vv = a.value(xa * a.time_mix_v[0, 0] + xx * (1 - a.time_mix_v[0, 0]))
            r = a.receptance(xa * a.time_mix_r[0, 0] + xx * (1 - a.time_mix_r[0, 0]))
            att_xx[li] = xa
            w, u = -torch.exp(a.time_decay), a.time_first
            n = torch.maximum(o[li], u + k)
            e1, e2 = torch.exp(o[li] - n), torch.exp(u + k - n)
            y = (e1 * p[li] + e2 * vv) / (e1 * q[li] + e2)
            n2 = torch.maximum(w + o[li], k)
            e1, e2 = torch.exp(w + o[li] - n2), torch.exp(k - n2)
            p[li], q[li], o[li] = e1 * p[li] + e2 * vv, e1 * q[li] + e2, n2
            s, v_att[li] = _lif_step(a.output(torch.sigmoid(r) * y), v_att[li], cfg.tau, cfg.v_threshold)
            spikes[li][0].append(s)
            x = x + s
            f = blk.ffn
            xf = blk.ln2(x)
            xx = ffn_xx[li]
            kf = f.key(xf * f.time_mix_k[0, 0] + xx * (1 - f.time_mix_k[0, 0]))
            rf = f.receptance(xf * f.time_mix_r[0, 0] + xx * (1 - f.time_mix_r[0, 0]))
            ffn_xx[li] = xf
            s, v_ffn[li] = _lif_step(
                torch.sigmoid(rf) * f.value(torch.relu(kf) ** 2), v_ffn[li], cfg.tau, cfg.v_threshold
            )
            spikes[li][1].append(s)
            x = x + s
        outs.append(model.ln_out(x))
    return torch.stack(outs, 1), [torch.stack(s, 1) for pair in spikes for s in pair]


def lif_autograd(x: torch.Tensor, tau: float = 2.0, v_threshold: float = 1.0) -> torch.Tensor:
    """The multi-step LIF written step by step with autograd (reference for the fused version)."""
    v = torch.zeros_like(x[:, 0])
    out = []
    for t in range(x.shape[1]):
        h = v + (x[:, t] - v) / tau
        s = ATanSpike.apply(h - v_threshold, 2.0)
        v = h * (1 - s)
        out.append(s)
    return torch.stack(out, dim=1)


def wkv_autograd(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The stable WKV scan step by step under autograd (the reference for the fused ``_WKV``)."""
    dtype = torch.promote_types(k.dtype, torch.float32)
    w, u, k, v = (t.to(dtype) for t in (w, u, k, v))
    B, T, C = k.shape
    p = torch.zeros(B, C, dtype=dtype, device=k.device)
    q = torch.zeros(B, C, dtype=dtype, device=k.device)
    o = torch.full((B, C), -1e38, dtype=dtype, device=k.device)
    ys = []
    for t in range(T):
        kt, vt = k[:, t], v[:, t]
        uk = u + kt
        n = torch.maximum(o, uk)
        a, b = torch.exp(o - n), torch.exp(uk - n)
        ys.append((a * p + b * vt) / (a * q + b))
        wo = w + o
        n = torch.maximum(wo, kt)
        a, b = torch.exp(wo - n), torch.exp(kt - n)
        p = a * p + b * vt
        q = a * q + b
        o = n
    return torch.stack(ys, dim=1)
