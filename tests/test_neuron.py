"""The LIF gate against SpikingJelly and snnTorch, and on hand-computed sequences."""

from __future__ import annotations

import math

import pytest
import torch

from spikelora import ATanSpike, LIFGate, token_mask
from spikelora import neuron as neuron_module

sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")


def _sj_lif(v_threshold: float, step_mode: str = "s", v_reset: float | None = 0.0, decay_input: bool = True):
    node = sj_neuron.LIFNode(
        tau=2.0,
        v_threshold=v_threshold,
        v_reset=v_reset,
        decay_input=decay_input,
        surrogate_function=sj_surrogate.ATan(alpha=2.0),
        detach_reset=True,
        step_mode=step_mode,
    )
    node.reset()
    return node


def _random_h(dtype: torch.dtype, seed: int, v_threshold: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(4, 9, 8, generator=g, dtype=torch.float64).to(dtype)
    # Values exactly at the effective threshold τ·V_θ must fire (≥), as in the reference.
    h.view(-1)[:5] = 2.0 * v_threshold
    return h


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("v_threshold", [0.0, 0.1, 0.5])
def test_step_gate_matches_spikingjelly(dtype, v_threshold):
    h = _random_h(dtype, seed=3, v_threshold=v_threshold)
    upstream = torch.randn(h.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(dtype)

    h_ours = h.clone().requires_grad_()
    out = LIFGate(v_threshold=v_threshold)(h_ours)
    (out * upstream).sum().backward()

    h_ref = h.clone().requires_grad_()
    spikes_ref = _sj_lif(v_threshold)(h_ref)
    out_ref = h_ref * spikes_ref
    (out_ref * upstream).sum().backward()

    assert out.dtype == dtype
    assert torch.equal(out != 0, spikes_ref.bool() & (h != 0))
    assert torch.equal(out.detach(), out_ref.detach())
    assert 0 < spikes_ref.mean() < 1
    torch.testing.assert_close(h_ours.grad, h_ref.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("decay_input", [True, False])
def test_temporal_mode_matches_spikingjelly_multistep(reset, decay_input):
    v_threshold = 0.3
    g = torch.Generator().manual_seed(7)
    h = torch.randn(3, 12, 5, generator=g, dtype=torch.float64)
    upstream = torch.randn(h.shape, generator=g, dtype=torch.float64)

    h_ours = h.clone().requires_grad_()
    gate = LIFGate(v_threshold=v_threshold, mode="temporal", reset=reset, decay_input=decay_input)
    out = gate(h_ours)
    (out * upstream).sum().backward()

    h_ref = h.clone().requires_grad_()
    node = _sj_lif(v_threshold, step_mode="m", v_reset=0.0 if reset == "hard" else None, decay_input=decay_input)
    spikes_ref = node(h_ref.transpose(0, 1)).transpose(0, 1)  # SpikingJelly wants (T, N, ...)
    (h_ref * spikes_ref * upstream).sum().backward()

    assert torch.equal(out.detach(), (h * spikes_ref).detach())
    torch.testing.assert_close(h_ours.grad, h_ref.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("decay_input", [True, False])
def test_the_fused_temporal_path_equals_the_loop_with_any_padding(reset, decay_input):
    """``temporal_impl='spikingjelly'`` (the fused kernel on CUDA; its torch backend here) equals the
    loop forward, backward and in every counter, with right, left and interior padding."""
    g = torch.Generator().manual_seed(3)
    h = torch.randn(4, 10, 6, generator=g, dtype=torch.float64) * 0.6
    upstream = torch.randn(h.shape, generator=g, dtype=torch.float64)
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[0, 7:] = False  # right padding
    mask[1, :3] = False  # left padding
    mask[2, 2:5] = False  # a hole: the membrane must be held across it, not decayed
    results = {}
    for impl in ("loop", "spikingjelly"):
        gate = LIFGate(v_threshold=0.1, mode="temporal", reset=reset, decay_input=decay_input, temporal_impl=impl)
        x = h.clone().requires_grad_()
        with token_mask(mask):
            out = gate(x)
        (out * upstream).sum().backward()
        results[impl] = (out.detach(), x.grad, gate.counts().tolist(), gate.aux_counts().tolist())
    (out_l, grad_l, counts_l, aux_l), (out_f, grad_f, counts_f, aux_f) = results["loop"], results["spikingjelly"]
    assert torch.equal(out_l, out_f) and counts_l == counts_f and aux_l == aux_f
    torch.testing.assert_close(grad_f, grad_l, rtol=0, atol=1e-12)
    assert (out_l[2, 5:] != 0).any()  # the tokens after the hole fire: the comparison tests something


def test_the_fused_temporal_path_refuses_what_it_cannot_run(monkeypatch):
    with pytest.raises(ValueError, match="needs a fixed V_θ and τ"):
        LIFGate(mode="temporal", temporal_impl="spikingjelly", learnable_threshold=True)
    with pytest.raises(ValueError, match="is for spike_mode='temporal'"):
        LIFGate(temporal_impl="spikingjelly")
    with pytest.raises(ValueError, match="temporal_impl must be one of"):
        LIFGate(mode="temporal", temporal_impl="triton")
    h = torch.zeros(1, 2, 3)
    assert LIFGate(mode="temporal")._fused(h)  # auto: SpikingJelly wherever it is installed (as here)
    assert not LIFGate(mode="temporal", learnable_tau=True)._fused(h)  # ... unless τ or V_θ is learnable
    assert not LIFGate(mode="temporal", temporal_impl="loop")._fused(h)
    monkeypatch.setattr(neuron_module, "spikingjelly", lambda: None)  # as where SpikingJelly is not installed
    assert not LIFGate(mode="temporal")._fused(h)  # auto falls back to the loop
    with pytest.raises(ImportError, match="pip install --no-deps spikingjelly"):
        LIFGate(mode="temporal", temporal_impl="spikingjelly")


def test_step_gate_matches_snntorch_spikes():
    snn = pytest.importorskip("snntorch")
    v_threshold = 0.1
    h = torch.randn(6, 11, 8, generator=torch.Generator().manual_seed(5))
    h[(h / 2 - v_threshold).abs() < 1e-6] += 1e-3  # snnTorch fires on strict >; keep off the boundary
    lif = snn.Leaky(beta=0.5, threshold=v_threshold, reset_mechanism="zero")
    spk, _ = lif(h / 2.0, lif.init_leaky())
    out = LIFGate(v_threshold=v_threshold)(h)
    assert torch.equal(out != 0, spk.bool())


def test_effective_threshold_is_tau_times_vtheta():
    h = torch.tensor([0.0, 0.05, 0.1, 0.19, 0.2, 0.21, -0.3, 1.0])
    out = LIFGate(v_threshold=0.1, tau=2.0)(h)
    assert out.tolist() == pytest.approx([0, 0, 0, 0, 0.2, 0.21, 0, 1.0])
    # Paper Eq. 1 form: threshold on h itself.
    out = LIFGate(v_threshold=0.1, decay_input=False)(h)
    assert out.tolist() == pytest.approx([0, 0, 0.1, 0.19, 0.2, 0.21, 0, 1.0])


def test_temporal_hand_computed_hard_reset():
    # τ = 2, V_θ = 1, decay input: V = 0.75 | 0.375+0.75 = 1.125 (fire, reset) | 0.2 | 0.1+1.5 (fire) | 1.0 (fire)
    h = torch.tensor([[[1.5], [1.5], [0.4], [3.0], [2.0]]])
    out = LIFGate(v_threshold=1.0, mode="temporal")(h)
    assert (out != 0).flatten().int().tolist() == [0, 1, 0, 1, 1]
    assert out.flatten().tolist() == pytest.approx([0, 1.5, 0, 3.0, 2.0])


def test_temporal_hand_computed_soft_vs_hard_reset():
    # No decay input, β = 0.5, V_θ = 1: V1 = 1.5 fires. Soft keeps 0.5 → V2 = 0.25 + 0.9 = 1.15 fires;
    # hard resets to 0 → V2 = 0.9 does not.
    h = torch.tensor([[[1.5], [0.9]]])
    soft = LIFGate(v_threshold=1.0, mode="temporal", reset="soft", decay_input=False)(h)
    hard = LIFGate(v_threshold=1.0, mode="temporal", reset="hard", decay_input=False)(h)
    assert (soft != 0).flatten().tolist() == [True, True]
    assert (hard != 0).flatten().tolist() == [True, False]


def test_temporal_sequences_are_independent_and_padding_is_excluded():
    g = torch.Generator().manual_seed(2)
    seq_a = torch.rand(1, 6, 4, generator=g)
    seq_b = torch.rand(1, 4, 4, generator=g)
    gate = LIFGate(v_threshold=0.2, mode="temporal")
    alone_a, alone_b = gate(seq_a), gate(seq_b)

    # Batch them with seq_b left-padded by two positions of large values that would charge the membrane.
    padded_b = torch.cat([torch.full((1, 2, 4), 5.0), seq_b], dim=1)
    batch = torch.cat([seq_a, padded_b])
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    gate.reset_counts()
    with token_mask(mask):
        out = gate(batch)
    assert torch.equal(out[0], alone_a[0])
    assert torch.equal(out[1, 2:], alone_b[0])
    assert torch.equal(out[1, :2], torch.zeros(2, 4))
    # The counters saw exactly the 10 real tokens.
    assert int(gate.counts()[1]) == 10 * 4


def test_temporal_mode_falls_back_to_step_off_tokens():
    gate = LIFGate(v_threshold=0.1, mode="temporal")
    h = torch.rand(5, 8)  # 2-D: not a sequence
    assert torch.equal(gate(h), LIFGate(v_threshold=0.1)(h))
    pos = torch.rand(1, 16, 8)  # a 1 x 16 positional table while the batch is 2 x 5 tokens
    with token_mask(torch.ones(2, 5)):
        assert torch.equal(gate(pos), LIFGate(v_threshold=0.1)(pos))


def _composed_gate(h, v_threshold, tau, alpha=2.0):
    """The step gate written as plain autograd ops: the reference for the fused backward."""
    return h * ATanSpike.apply(h / tau - v_threshold, alpha)


def test_learnable_threshold_and_tau_gradients_match_autograd_composition():
    h = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    upstream = torch.randn(h.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    gate = LIFGate(v_threshold=0.15, tau=2.5, learnable_threshold=True, learnable_tau=True).double()
    h1 = h.clone().requires_grad_()
    (gate(h1) * upstream).sum().backward()

    vth = torch.tensor(0.15, dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    h2 = h.clone().requires_grad_()
    (_composed_gate(h2, vth, tau) * upstream).sum().backward()

    torch.testing.assert_close(h1.grad, h2.grad)
    torch.testing.assert_close(gate.v_threshold.grad, vth.grad)
    torch.testing.assert_close(gate.tau.grad, tau.grad)
    assert gate.v_threshold.grad.abs() > 0 and gate.tau.grad.abs() > 0


def test_learnable_threshold_hand_computed_gradient():
    # One unit, h = 0.3, τ = 2, V_θ = 0.1: H − V_θ = 0.05; dL/dV_θ = −h · (α/2)/(1+(π/2·α·0.05)²)
    gate = LIFGate(v_threshold=0.1, learnable_threshold=True)
    gate(torch.tensor([0.3])).sum().backward()
    expected = -0.3 * 1.0 / (1 + (math.pi * 0.05) ** 2)
    assert gate.v_threshold.grad.item() == pytest.approx(expected, rel=1e-6)


def test_learnable_threshold_in_temporal_mode_trains():
    gate = LIFGate(v_threshold=0.2, mode="temporal", learnable_threshold=True)
    h = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(0))
    gate(h).sum().backward()
    assert gate.v_threshold.grad is not None and gate.v_threshold.grad < 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("learnable", [False, True])
def test_half_precision_keeps_dtype(dtype, learnable):
    gate = LIFGate(learnable_threshold=learnable)
    h = torch.randn(2, 3, 4).to(dtype).requires_grad_()
    out = gate(h)
    assert out.dtype == dtype
    out.float().sum().backward()
    assert h.grad.dtype == dtype
    temporal = LIFGate(mode="temporal")(h.detach())
    assert temporal.dtype == dtype


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"v_threshold": -0.1}, "v_threshold must be"),
        ({"tau": 1.0}, "tau must be > 1"),
        ({"tau": 0.5, "decay_input": False, "mode": "temporal"}, "tau must be > 1"),
        ({"mode": "bursty"}, "Unknown spike mode 'bursty'"),
        ({"reset": "partial"}, "Unknown spike reset"),
        ({"surrogate_alpha": 0.0}, "surrogate_alpha must be > 0"),
        ({"tau": "2"}, "tau must be a number"),
        ({"surrogate_alpha": None}, "surrogate_alpha must be a number"),
        ({"v_threshold": True}, "v_threshold must be a number"),
    ],
)
def test_bad_gate_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LIFGate(**kwargs)


def test_tau_below_one_allowed_without_decay_input_in_step_mode():
    out = LIFGate(v_threshold=0.1, tau=0.5, decay_input=False)(torch.tensor([0.05, 0.1]))
    assert out.tolist() == pytest.approx([0.0, 0.1])
