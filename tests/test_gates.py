"""The gate family (issue 17, part 1): each gate against its direct formula, forward and backward;
the telemetry against direct counts; PEFT save and load; the refusals; the default unchanged."""

from __future__ import annotations

import json
import math

import pytest
import torch
from builders import forbid_host_sync, tiny_deberta
from peft import PeftModel, get_peft_model

import spikelora
from spikelora import (
    GATES,
    ATanSpike,
    LIFGate,
    SpikeLoraConfig,
    make_gate,
    ops_report,
    reference_sparsity,
    reset_sparsity,
    sparsity_report,
    token_mask,
    track_ops,
)
from spikelora.neuron import DEFAULT_TARGET_SPARSITY, RandomGate, ReluGate, SigmoidGate, ThresholdGate, TopKGate

TARGETS = ["query_proj", "key_proj", "value_proj", "attention.output.dense", "intermediate.dense", "output.dense"]
MASK = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])  # 15 real tokens of 21


def _h(seed: int = 0, shape=(3, 7, 8), dtype=torch.float64) -> torch.Tensor:
    h = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 0.5
    assert (h != 0).all()
    return h


def _upstream(h: torch.Tensor, seed: int = 1) -> torch.Tensor:
    return torch.randn(h.shape, generator=torch.Generator().manual_seed(seed), dtype=h.dtype)


def _run(gate, h, upstream):
    """Gate output and dL/dh for L = Σ upstream ⊙ gate(h)."""
    x = h.clone().requires_grad_()
    out = gate(x)
    (out * upstream).sum().backward()
    return out.detach(), x.grad


# ------------------------------------------------------------------------------ the default
def test_default_gate_is_todays_lif_bit_for_bit():
    config = SpikeLoraConfig(r=8, target_modules=["q"])
    assert config.gate == "lif" and not config.two_sided
    gate = config.make_gate()
    assert type(gate) is LIFGate and repr(gate) == repr(LIFGate())
    h, up = _h(), _upstream(_h())
    out, grad = _run(gate.double(), h, up)
    ref_out, ref_grad = _run(LIFGate().double(), h, up)
    assert torch.equal(out, ref_out) and torch.equal(grad, ref_grad)
    # and the LIF is the ATan spike composition it always was
    x = h.clone().requires_grad_()
    (x * ATanSpike.apply(x / 2.0 - 0.1, 2.0) * up).sum().backward()
    assert torch.equal(out, (h * (h / 2.0 >= 0.1)).detach())
    torch.testing.assert_close(grad, x.grad)


# ------------------------------------------------------------------------------ each gate
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("two_sided", [False, True])
def test_threshold_gate_is_the_lif_forward_with_a_detached_mask(decay_input, two_sided):
    vth, tau = 0.15, 2.5
    h = _h(2)
    h.view(-1)[:4] = tau * vth if decay_input else vth  # exactly at θ: passes, as in the LIF
    up = _upstream(h)
    mem = h / tau if decay_input else h
    mask = ((mem.abs() if two_sided else mem) >= vth).to(h.dtype)
    out, grad = _run(ThresholdGate(vth, tau, decay_input=decay_input, two_sided=two_sided), h, up)
    assert torch.equal(out, h * mask)
    assert torch.equal(grad, up * mask)  # no surrogate term
    lif = LIFGate(vth, tau, decay_input=decay_input, two_sided=two_sided)
    assert torch.equal(out, _run(lif, h, up)[0])  # the same units silenced
    assert 0 < mask.mean() < 1


@pytest.mark.parametrize("two_sided", [False, True])
def test_lif_two_sided_matches_the_autograd_composition(two_sided):
    h, vth, tau = _h(3), 0.12, 2.0
    up = _upstream(h)
    gate = LIFGate(vth, tau, two_sided=two_sided, learnable_threshold=True, learnable_tau=True).double()
    out, grad = _run(gate, h, up)
    v = torch.tensor(vth, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    x = h.clone().requires_grad_()
    mem = x / t
    ref = x * ATanSpike.apply((mem.abs() if two_sided else mem) - v, 2.0)
    (ref * up).sum().backward()
    assert torch.equal(out, ref.detach())
    torch.testing.assert_close(grad, x.grad)
    torch.testing.assert_close(gate.v_threshold.grad, v.grad)
    torch.testing.assert_close(gate.tau.grad, t.grad)
    fired = out != 0
    if two_sided:
        assert (fired & (h < 0)).any()  # negative activations fire too
    else:
        assert not (fired & (h < 0)).any()


def test_lif_learnable_tau_without_decay_input_gets_no_gradient_in_step_mode():
    gate = LIFGate(0.1, tau=2.0, decay_input=False, learnable_tau=True)
    gate(torch.tensor([0.3, -0.2, 0.05])).sum().backward()
    assert gate.tau.grad is not None and gate.tau.grad.item() == 0.0  # H = h does not read τ


@pytest.mark.parametrize("two_sided", [False, True])
def test_relu_gate_forward_and_backward_with_a_learnable_threshold(two_sided):
    vth, tau = 0.1, 2.0
    h = _h(4)
    up = _upstream(h)
    gate = ReluGate(vth, tau, two_sided=two_sided, learnable_threshold=True, learnable_tau=True).double()
    out, grad = _run(gate, h, up)
    theta = gate.tau.item() * gate.v_threshold.item()  # float32 parameters: 0.1 is not exact
    a = h.abs() if two_sided else h
    passed = (a > theta).to(h.dtype)
    expected = torch.sign(h) * torch.relu(a - theta) if two_sided else torch.relu(h - theta)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(grad, up * passed)
    # θ = τ·V_θ: dL/dV_θ = −τ Σ up·s·1[a > θ], dL/dτ = −V_θ Σ up·s·1[a > θ] with s = sign(h) two-sided
    s = torch.sign(h) if two_sided else torch.ones_like(h)
    torch.testing.assert_close(gate.v_threshold.grad, -tau * (up * s * passed).sum())
    torch.testing.assert_close(gate.tau.grad, -vth * (up * s * passed).sum())
    # The same units as the LIF at the same settings (no activation sits exactly at θ here).
    lif_zero = _run(LIFGate(vth, tau, two_sided=two_sided), h, up)[0] == 0
    assert torch.equal(out == 0, lif_zero)


@pytest.mark.parametrize("two_sided", [False, True])
def test_sigmoid_gate_forward_and_backward(two_sided):
    vth, tau, alpha = 0.1, 2.0, 2.0
    h = _h(5)
    up = _upstream(h)
    gate = make_gate(
        "sigmoid", v_threshold=vth, tau=tau, surrogate_alpha=alpha, two_sided=two_sided, learnable_threshold=True
    )
    assert isinstance(gate, SigmoidGate) and gate.temperature == pytest.approx(tau / (2 * alpha))  # 0.5
    out, grad = _run(gate.double(), h, up)
    t, theta = 0.5, tau * vth
    a = h.abs() if two_sided else h
    g = torch.sigmoid((a - theta) / t)
    torch.testing.assert_close(out, h * g)
    da = torch.sign(h) if two_sided else torch.ones_like(h)
    torch.testing.assert_close(grad, up * (g + h * g * (1 - g) * da / t))
    torch.testing.assert_close(gate.v_threshold.grad, (up * h * g * (1 - g) * (-tau / t)).sum())
    # At the threshold the sigmoid has the LIF surrogate's slope in h: α/(2τ).
    assert 1 / (4 * t) == pytest.approx(alpha / (2 * tau))


def test_sigmoid_temperature_can_be_set_and_without_decay_input_defaults_to_one_over_two_alpha():
    assert make_gate("sigmoid", temperature=0.05).temperature == 0.05
    assert make_gate("sigmoid", decay_input=False, tau=0.5, surrogate_alpha=4.0).temperature == pytest.approx(0.125)


@pytest.mark.parametrize("two_sided", [False, True])
def test_topk_gate_keeps_the_k_largest_per_token(two_sided):
    h = _h(6)
    up = _upstream(h)
    out, grad = _run(TopKGate(3, two_sided=two_sided), h, up)
    score = h.abs() if two_sided else h
    kth = score.sort(dim=-1, descending=True).values[..., 2:3]
    mask = (score >= kth).to(h.dtype)
    assert torch.equal(mask.sum(-1), torch.full(h.shape[:-1], 3.0, dtype=h.dtype))
    assert torch.equal(out, h * mask)
    assert torch.equal(grad, up * mask)


@pytest.mark.parametrize(
    ("r", "kwargs", "k"),
    [
        (8, {}, 4),
        (8, {"target_sparsity": 0.75}, 2),
        (8, {"target_sparsity": 0.7665}, 2),
        (16, {"topk": 5}, 5),
        (4, {"target_sparsity": 0.625}, 2),
    ],
)
def test_topk_units_from_a_target_sparsity_or_given(r, kwargs, k):
    assert make_gate("topk", r=r, **kwargs).k == k
    assert DEFAULT_TARGET_SPARSITY == 0.5


def test_random_gate_is_rank_dropout_in_training_only():
    torch.manual_seed(0)
    h = _h(7, shape=(50, 40, 50))
    up = _upstream(h)
    gate = RandomGate(0.3)
    out, grad = _run(gate, h, up)
    keep = out != 0
    torch.testing.assert_close(out, h * keep / 0.7)
    torch.testing.assert_close(grad, up * keep / 0.7)
    drop = 1 - keep.double().mean().item()
    assert abs(drop - 0.3) < 0.01  # 100 000 units: the binomial sd is 0.0015
    torch.manual_seed(0)
    assert torch.equal(_run(gate, h, up)[0], out)  # the torch seed decides it, like nn.Dropout
    gate.eval()
    out_eval, grad_eval = _run(gate, h, up)
    assert torch.equal(out_eval, h) and torch.equal(grad_eval, up)
    assert gate.counts("eval")[0] == gate.counts("eval")[1]  # nothing dropped in eval


# ------------------------------------------------------------------------------ telemetry
GATE_SETTINGS = {
    "lif": {},
    "threshold": {},
    "relu": {},
    "sigmoid": {"temperature": 0.05},
    "topk": {"topk": 3},
    "random": {"target_sparsity": 0.4},
}


@pytest.mark.parametrize("name", GATES)
def test_counters_equal_a_direct_count(name):
    gate = make_gate(name, r=8, **GATE_SETTINGS[name])
    h = _h(8, dtype=torch.float32)
    real = MASK.bool().unsqueeze(-1)
    with token_mask(MASK):
        out = gate(h)
    fired = out != 0
    t_fired, t_total, o_fired, o_total = gate.counts("train").tolist()
    assert (t_fired, t_total) == (int((fired & real).sum()), 15 * 8)
    assert (o_fired, o_total) == (0, 0)
    aux = gate.aux_counts("train").tolist()
    assert aux[0] == int(((h < 0) & real).sum())
    expected_below = int(((h < 0.2) & real).sum()) if name == "sigmoid" else 0
    assert aux[2] == expected_below
    assert gate.last_counts().tolist() == [int(fired.sum()), h.numel()]  # the authors' per-call figure
    # a call not over the batch's tokens is counted apart, in eval apart from train
    gate.eval()
    side = _h(9, shape=(1, 16, 8), dtype=torch.float32)
    with token_mask(MASK):
        side_out = gate(side)
    assert gate.counts("eval").tolist() == [0, 0, int((side_out != 0).sum()), side.numel()]
    assert gate.aux_counts("eval").tolist()[1] == int((side < 0).sum())
    gate.reset_counts()
    assert not gate.counts().any() and not gate.aux_counts().any()


@pytest.mark.parametrize("name", GATES)
def test_no_host_sync_in_forward_or_backward(name):
    gate = make_gate(name, r=8, **GATE_SETTINGS[name])
    if name in ("relu", "sigmoid", "lif"):
        gate = make_gate(name, r=8, learnable_threshold=True, **GATE_SETTINGS[name])
    h = _h(10, dtype=torch.float32).requires_grad_()
    with token_mask(MASK), forbid_host_sync():
        gate(h).sum().backward()
    assert int(gate.counts("train")[1]) == 15 * 8


def test_forbid_host_sync_can_fail():
    with pytest.raises(AssertionError, match="host sync"), forbid_host_sync():
        torch.ones(1).item()


def test_sign_alone_share_of_the_one_sided_sparsity():
    h = _h(11, dtype=torch.float32)
    one, two = LIFGate(0.1), LIFGate(0.1, two_sided=True)
    with token_mask(MASK):
        one(h)
        two(h)
    real = MASK.bool().unsqueeze(-1)
    n = 15 * 8
    negative = one.aux_counts()[0].item() / n
    sparsity_one = 1 - one.counts()[0].item() / n
    sparsity_two = 1 - two.counts()[0].item() / n
    assert negative == pytest.approx(int(((h < 0) & real).sum()) / n)
    assert negative <= sparsity_one  # every negative activation is silenced one-sided
    # two-sided silences only |h| < θ: the one-sided extra is exactly the negatives with |h| ≥ θ
    extra = int(((h <= -0.2) & real).sum()) / n
    assert sparsity_one - sparsity_two == pytest.approx(extra)


# ------------------------------------------------------------------------------ through PEFT
def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 128, (3, 10), generator=g)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _randomise_lora(model, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _spike_model(**gate):
    config = SpikeLoraConfig(r=4, lora_alpha=2.0, use_rslora=True, target_modules=TARGETS, task_type="SEQ_CLS", **gate)
    model = get_peft_model(tiny_deberta(), config)
    _randomise_lora(model)
    return model


@pytest.mark.parametrize("name", GATES)
def test_peft_save_and_load_round_trip(name, tmp_path):
    settings = dict(GATE_SETTINGS[name])
    if name in ("relu", "sigmoid"):
        settings["learnable_threshold"] = True
    model = _spike_model(gate=name, **settings).eval()
    if name in ("relu", "sigmoid"):
        with torch.no_grad():
            for gate in (m for m in model.modules() if isinstance(m, spikelora.Gate)):
                gate.v_threshold.fill_(0.07)
    batch = _batch()
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(str(tmp_path))
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "SPIKELORA" and saved["gate"] == name
    loaded = PeftModel.from_pretrained(tiny_deberta(), str(tmp_path)).eval()
    gates = [m for m in loaded.modules() if isinstance(m, spikelora.Gate)]
    assert len(gates) == 12 and {g.kind for g in gates} == {name}
    if name in ("relu", "sigmoid"):
        assert all(g.v_threshold.item() == pytest.approx(0.07) for g in gates)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, expected)


def test_adapter_configs_saved_before_the_gate_family_load_as_the_lif(tmp_path):
    model = _spike_model()
    model.save_pretrained(str(tmp_path))
    path = tmp_path / "adapter_config.json"
    old = json.loads(path.read_text())
    for key in ("gate", "two_sided", "temperature", "topk", "target_sparsity"):
        old.pop(key)
    path.write_text(json.dumps(old))
    loaded = PeftModel.from_pretrained(tiny_deberta(), str(tmp_path))
    assert {type(m) for m in loaded.modules() if isinstance(m, spikelora.Gate)} == {LIFGate}


@pytest.mark.parametrize("name", ["threshold", "relu", "sigmoid", "topk"])
def test_sparsity_report_equals_a_direct_count_through_a_model(name):
    model = _spike_model(gate=name, **GATE_SETTINGS[name])
    direct = {}
    handles = []
    for mod_name, module in model.named_modules():
        if isinstance(module, spikelora.SpikeLoraLinear):
            short = mod_name.removeprefix("base_model.model.")

            def hook(mod, inp, out, short=short):
                direct.setdefault(short, []).append((inp[0].detach(), out.detach()))

            handles.append(module.lora_spike["default"].register_forward_hook(hook))
    batch = _batch()
    with torch.no_grad():
        model(**batch)
    for h in handles:
        h.remove()
    report = sparsity_report(model)
    real = batch["attention_mask"].bool().unsqueeze(-1)
    assert report.gates == {name: 12}
    for short, calls in direct.items():
        h, out = calls[0]  # the call over the batch's tokens (DeBERTa's q/k make a second, positional one)
        n = int(real.sum()) * 4
        assert report.modules[short] == pytest.approx(1 - int(((out != 0) & real).sum()) / n)
        assert report.negative[short] == pytest.approx(int(((h < 0) & real).sum()) / n)
        if name == "sigmoid":  # its sparsity is exact zeros only (here σ underflows for h ≪ θ at t = 0.05)
            assert report.modules[short] < report.below_half[short]
            assert report.below_half[short] == pytest.approx(int(((h < 0.2) & real).sum()) / n)
        else:
            assert short not in report.below_half
    assert report.mean == pytest.approx(sum(report.modules.values()) / 12)
    if name == "topk":
        assert report.pooled == pytest.approx(1 - 3 / 4)
    assert 0 <= reference_sparsity(model) <= 1
    reset_sparsity(model)
    assert sparsity_report(model).modules == {}


def test_ops_count_the_gates_effective_b_operations():
    model = track_ops(_spike_model(gate="topk", topk=1))
    batch = _batch()
    with torch.no_grad():
        model(**batch)
    _, modules = ops_report(model, phase="eval")
    for name, m in modules.items():
        # per real token: A (d_in·r MACs) and B on the one passing unit (d_out MACs)
        assert m["adapter_macs"] == pytest.approx(m["d_in"] * 4 + m["d_out"] * 1), name
        assert m["fired_per_token"] == pytest.approx(1.0)


def test_random_gate_model_is_the_identity_in_eval_and_drops_at_its_rate_in_training():
    model = _spike_model(gate="random", target_sparsity=0.6)
    plain = _spike_model(gate="threshold", v_threshold=0.0, decay_input=False, two_sided=True)  # passes every h ≠ 0
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**batch).logits, plain.eval()(**batch).logits, rtol=0, atol=1e-6)
        model.train()
        torch.manual_seed(0)
        for _ in range(20):
            model(**batch)
    report = sparsity_report(model, phase="train")
    assert abs(report.pooled - 0.6) < 0.02  # ~9 000 units counted
    assert sparsity_report(model, phase="eval").pooled == 0.0


# ------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gate": "maxout"}, "Unknown gate 'maxout'"),
        ({"gate": "relu", "mode": "temporal"}, "spike_mode='temporal' is the LIF gate's"),
        ({"gate": "topk", "reset": "soft"}, "spike_reset='soft' is the temporal LIF's"),
        ({"gate": "threshold", "learnable_threshold": True}, "passes no gradient"),
        ({"gate": "random", "learnable_tau": True}, "passes no gradient"),
        ({"gate": "sigmoid", "learnable_tau": True, "decay_input": False, "tau": 0.5}, "τ is unused"),
        ({"gate": "lif", "temperature": 0.1}, "temperature is the sigmoid gate's"),
        ({"gate": "sigmoid", "temperature": 0.0}, "temperature must be a positive"),
        ({"gate": "lif", "topk": 2}, "topk is the topk gate's"),
        ({"gate": "relu", "target_sparsity": 0.5}, "target_sparsity sets the topk and random"),
        ({"gate": "topk", "topk": 2, "target_sparsity": 0.5}, "not both"),
        ({"gate": "topk", "topk": 9}, r"topk must be an integer in \[1, r=8\]"),
        ({"gate": "topk", "target_sparsity": 0.95}, "keeps round"),
        ({"gate": "random", "target_sparsity": 1.0}, r"must be in \[0, 1\)"),
        ({"gate": "random", "two_sided": True}, "random gate ignores h"),
        ({"gate": "lif", "mode": "temporal", "two_sided": True}, "two_sided firing is for spike_mode='step'"),
        ({"gate": "relu", "v_threshold": -0.1}, "v_threshold must be"),
        ({"gate": "lif", "two_sided": "yes"}, "two_sided must be true or false"),
    ],
)
def test_bad_gate_settings_are_refused_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_gate(r=8, **kwargs)
    gate = kwargs.pop("gate")
    fields = {"spike_mode" if k == "mode" else "spike_reset" if k == "reset" else k: v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        SpikeLoraConfig(r=8, target_modules=["q"], gate=gate, **fields)


def test_every_gate_trains_a_model_and_moves_the_adapter():
    for name in GATES:
        model = _spike_model(gate=name, **GATE_SETTINGS[name]).train()
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        loss = model(**_batch(), labels=torch.tensor([0, 1, 0])).loss
        loss.backward()
        opt.step()
        moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
        assert any("lora_A" in n for n in moved) and any("lora_B" in n for n in moved), name
        assert math.isfinite(loss.item())
