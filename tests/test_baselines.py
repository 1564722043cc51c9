"""The baselines and controls (issue 17, part 2): DoRA, AdaLoRA with its budget allocation in a
real Trainer, SpikeAdaLoRA (the paper's Eq. 5), LoRA at SpikeLoRA's effective rank, rank dropout
at SpikeLoRA's rate. Each against a direct formula, PEFT save/load, telemetry by direct count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from builders import forbid_host_sync, tiny_deberta
from hydra import compose, initialize_config_dir
from peft import AdaLoraConfig, LoraConfig, PeftModel, get_peft_model
from peft.tuners.adalora import SVDLinear
from transformers import Trainer, TrainingArguments

import spikelora
from spikelora import ATanSpike, SpikeAdaLoraConfig, sparsity_report, token_mask
from spikelora.adapter import SpikeSVDLinear
from spikelora.experiment.adapters import (
    AdaLoraAdapter,
    AdaLoraBudget,
    DoraAdapter,
    LoraEffectiveAdapter,
    SpikeAdaLoraAdapter,
    SpikeLoraAdapter,
    effective_rank,
)
from spikelora.experiment.confdir import CONF_DIR
from spikelora.experiment.plan import ConfigError, plan_run
from spikelora.neuron import LIFGate, RandomGate

TARGETS = ["query_proj", "key_proj", "value_proj", "attention.output.dense", "intermediate.dense", "output.dense"]
REPO = Path(__file__).resolve().parent.parent


def _batch(n: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 128, (n, 10), generator=g)
    mask = torch.ones(n, 10, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _randomise(model, names=("lora_A", "lora_B", "lora_E"), scale: float = 0.5, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in names):
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def _first(model, cls):
    return next(m for m in model.modules() if isinstance(m, cls))


# ------------------------------------------------------------------------------ DoRA
def test_dora_is_peft_dora_and_matches_its_formula(tmp_path):
    spec = DoraAdapter(r=4, dropout=0.0)
    config = spec.peft_config(TARGETS, None)
    assert isinstance(config, LoraConfig) and config.use_dora and config.r == 4 and config.use_rslora
    model = spec.apply(tiny_deberta(), TARGETS, None)
    _randomise(model, ("lora_A", "lora_B"))
    layer = next(m for n, m in model.named_modules() if n.endswith("layer.0.intermediate.dense"))
    assert "default" in layer.lora_magnitude_vector
    x = torch.randn(2, 5, layer.in_features, dtype=torch.float32)

    W, b = layer.base_layer.weight, layer.base_layer.bias
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    m = layer.lora_magnitude_vector["default"].weight
    s = layer.scaling["default"]
    assert s == pytest.approx(1.0)  # rsLoRA with alpha = sqrt(r)
    # DoRA: y = m / ||W + s·BA||_row (detached) ⊙ (W x + s·B A x) + b
    norm = torch.linalg.norm(W + s * B @ A, dim=1).detach()
    expected = (m / norm) * (x @ W.T + s * (x @ A.T) @ B.T) + b
    out = layer(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    up = torch.randn_like(out)
    grads = torch.autograd.grad((out * up).sum(), [A, B, m])
    ref = torch.autograd.grad((expected * up).sum(), [A, B, m])
    for got, want in zip(grads, ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)

    batch = _batch()
    with torch.no_grad():
        logits = model(**batch).logits
    model.save_pretrained(str(tmp_path))
    assert json.loads((tmp_path / "adapter_config.json").read_text())["use_dora"] is True
    loaded = PeftModel.from_pretrained(tiny_deberta(), str(tmp_path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, logits, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ AdaLoRA: the spec
def test_adalora_spec_is_pefts_adalora_with_scaling_one():
    config = AdaLoraAdapter().peft_config(TARGETS, None, total_step=6680)
    assert type(config) is AdaLoraConfig and config.peft_type == "ADALORA"
    assert (config.target_r, config.init_r, config.lora_alpha) == (8, 12, 12.0)
    assert (config.tinit, config.tfinal, config.total_step, config.deltaT) == (668, 3340, 6680, 10)
    assert (config.beta1, config.beta2, config.orth_reg_weight) == (0.85, 0.85, 0.1)
    assert AdaLoraAdapter(r=16).initial_rank == 24 and AdaLoraAdapter(r=1).initial_rank == 2


@pytest.mark.parametrize(
    ("tinit", "tfinal", "total", "expected"),
    [(0.1, 0.5, 3, (0, 2)), (0.1, 0.5, 1000, (100, 500)), (800, 3500, 6680, (800, 3500)), (0, 0, 1, (0, 0))],
)
def test_adalora_schedule_from_the_runs_steps(tinit, tfinal, total, expected):
    assert AdaLoraAdapter(tinit=tinit, tfinal=tfinal).schedule(total) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tinit": 1.5}, r"must be in \[0, 1\)"),
        ({"tfinal": -3}, "must be >= 0"),
        ({"init_r": 4}, "init_r must be an integer >= r=8"),
        ({"delta_t": 0}, "delta_t must be a positive integer"),
        ({"beta1": 1.0}, r"beta1 must be in \(0, 1\)"),
        ({"orth_reg_weight": -1.0}, "orth_reg_weight must be >= 0"),
    ],
)
def test_bad_adalora_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaLoraAdapter(**kwargs)


def test_a_schedule_without_a_budgeting_phase_is_refused():
    with pytest.raises(ValueError, match="leaves no budgeting phase in this run's 1 optimiser steps"):
        AdaLoraAdapter(tinit=0.1, tfinal=0.5).schedule(1)
    with pytest.raises(ValueError, match="no budgeting phase"):
        AdaLoraAdapter(tinit=800, tfinal=3500).schedule(4000)


def test_plain_adalora_has_no_gate_and_is_pefts_own_model():
    model = AdaLoraAdapter(r=2).apply(tiny_deberta(), TARGETS, None)
    reference = get_peft_model(tiny_deberta(), AdaLoraAdapter(r=2).peft_config(TARGETS, None, "SEQ_CLS"))
    assert not any(isinstance(m, spikelora.Gate) for m in model.modules())
    assert not any(hasattr(m, "lora_spike") for m in model.modules())
    assert all(type(m) is SVDLinear for m in model.modules() if isinstance(m, SVDLinear))
    _randomise(model)
    _randomise(reference)
    batch = _batch()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reference(**batch).logits)
    assert sparsity_report(model).modules == {}


def test_adalora_layer_matches_its_formula():
    model = AdaLoraAdapter(r=2).apply(tiny_deberta(), TARGETS, None)
    _randomise(model)
    layer = _first(model, SVDLinear)
    x = torch.randn(2, 5, layer.in_features)
    A, E, B = layer.lora_A["default"], layer.lora_E["default"], layer.lora_B["default"]
    expected = layer.base_layer(x) + ((x @ A.T) * E.T) @ B.T * 3.0 / (3 + 1e-5)  # alpha = init_r = 3
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ AdaLoRA in a Trainer
class _Rows(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(5)
        self.ids = torch.randint(5, 128, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] > 64).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


@pytest.mark.parametrize("accumulation", [1, 2])
def test_budget_callback_allocates_after_every_optimiser_step_in_a_real_trainer(tmp_path, accumulation):
    spec = AdaLoraAdapter(r=2, init_r=4, tinit=0.2, tfinal=0.3, delta_t=2)
    model = spec.apply(tiny_deberta().train(), TARGETS, None)
    tuner = model.base_model
    calls = []
    allocate = tuner.update_and_allocate

    def spy(step):  # record what PEFT is called with, then run PEFT itself
        grads = [p.grad for n, p in model.named_parameters() if "lora_E" in n]
        calls.append((step, all(g is not None for g in grads)))
        return allocate(step)

    tuner.update_and_allocate = spy
    callbacks = spec.callbacks()
    assert [type(c) for c in callbacks] == [AdaLoraBudget]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=2,
        learning_rate=5e-3,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        logging_steps=1000,
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_Rows(24), callbacks=callbacks)
    trainer.train()
    steps = trainer.state.global_step
    assert steps == 2 * 24 // (4 * accumulation)  # 12 or 6 optimiser steps
    assert calls == [(s, True) for s in range(steps)]  # once per optimiser step, gradients still there
    config = model.peft_config["default"]
    tinit, tfinal = spec.schedule(steps)
    assert (config.total_step, config.tinit, config.tfinal) == (steps, tinit, tfinal)
    # After the final allocation the budget holds: target_r units per module on average.
    kept = sum(int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n)
    n_modules = sum(1 for m in model.modules() if isinstance(m, SVDLinear))
    assert kept == 2 * n_modules
    assert sum(sum(v) for v in config.rank_pattern.values()) == 2 * n_modules


def test_budget_callback_refuses_a_model_that_is_not_adalora():
    model = get_peft_model(tiny_deberta(), LoraConfig(r=2, target_modules=TARGETS))
    with pytest.raises(TypeError, match="needs a PEFT AdaLoRA model"):
        AdaLoraBudget.tuner(model)


# ------------------------------------------------------------------------------ SpikeAdaLoRA
def _spike_adalora(seed: int = 0, **gate):
    spec = SpikeAdaLoraAdapter(r=2, init_r=4, **gate)
    model = spec.apply(tiny_deberta(seed), TARGETS, None)
    _randomise(model)
    return spec, model


def test_spike_adalora_is_its_own_peft_type_with_one_gate_per_module():
    spec, model = _spike_adalora()
    config = model.peft_config["default"]
    assert type(config) is SpikeAdaLoraConfig and config.peft_type == "SPIKEADALORA" and config.gate == "lif"
    layers = [m for m in model.modules() if isinstance(m, SVDLinear)]
    assert len(layers) == 12 and all(isinstance(m, SpikeSVDLinear) for m in layers)
    assert all(type(m.lora_spike["default"]) is LIFGate for m in layers)
    assert spec.spike and spec.vth == pytest.approx(0.1)


def test_spike_adalora_forward_and_surrogate_backward_match_eq5():
    _, model = _spike_adalora()
    layer = next(m for n, m in model.named_modules() if n.endswith("layer.1.intermediate.dense"))
    x = torch.randn(2, 5, layer.in_features, generator=torch.Generator().manual_seed(3))
    A, E, B = layer.lora_A["default"], layer.lora_E["default"], layer.lora_B["default"]
    out = layer(x)
    up = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    grads = torch.autograd.grad((out * up).sum(), [A, E, B])

    def delta(spike):
        h = x @ A.T  # Q x, the low-rank activations
        return ((h * spike(h)) * E.T) @ B.T * 4.0 / (4 + 1e-5)  # P Λ (h ⊙ S(h)) · alpha / ranknum

    surrogate = layer.base_layer(x) + delta(lambda h: ATanSpike.apply(h / 2.0 - 0.1, 2.0))
    torch.testing.assert_close(out, surrogate, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, torch.autograd.grad((surrogate * up).sum(), [A, E, B])):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # The authors' fork applied the spikes detached: then no surrogate gradient reaches A.
    detached = layer.base_layer(x) + delta(lambda h: (h / 2.0 >= 0.1).to(h.dtype))
    grad_a_detached = torch.autograd.grad((detached * up).sum(), A)[0]
    assert not torch.allclose(grads[0], grad_a_detached, rtol=1e-3, atol=1e-6)
    fired = (x @ A.T) / 2.0 >= 0.1
    assert 0 < fired.float().mean() < 1


def test_spike_adalora_is_stateless_per_call_and_gates_something():
    _, model = _spike_adalora()
    _, plain = _spike_adalora(gate="threshold", v_threshold=0.0, decay_input=False, two_sided=True)  # passes all
    batch = _batch()
    with torch.no_grad():
        first = model(**batch).logits
        model(**_batch(seed=7))
        assert torch.equal(model(**batch).logits, first)  # nothing carried from one call to the next
        assert not torch.allclose(first, plain(**batch).logits)


def test_spike_adalora_counters_equal_a_direct_count():
    _, model = _spike_adalora(gate="relu")
    captured = {}
    handles = []
    for name, layer in model.named_modules():
        if isinstance(layer, SpikeSVDLinear):
            short = name.removeprefix("base_model.model.")

            def pre(mod, args, short=short):
                captured.setdefault(short, args[0].detach() @ mod.lora_A["default"].detach().T)

            handles.append(layer.register_forward_pre_hook(pre))
    batch = _batch()
    with torch.no_grad():
        model(**batch)
    for h in handles:
        h.remove()
    report = sparsity_report(model)
    real = batch["attention_mask"].bool().unsqueeze(-1)
    n = int(real.sum()) * 4
    assert len(report.modules) == 12 and report.gates == {"relu": 12}
    for short, h in captured.items():
        assert report.modules[short] == pytest.approx(1 - int(((h > 0.2) & real).sum()) / n)
        assert report.negative[short] == pytest.approx(int(((h < 0) & real).sum()) / n)


def test_spike_adalora_round_trip_after_a_budget_allocation(tmp_path):
    spec, model = _spike_adalora(gate="sigmoid", learnable_threshold=True)
    tuner = model.base_model
    config = model.peft_config["default"]
    config.tinit, config.tfinal = spec.schedule(4)
    tuner.rankallocator.set_total_step(4)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    for step in range(4):  # PEFT's documented loop
        model(**_batch(), labels=torch.tensor([0, 1, 0])).loss.backward()
        opt.step()
        tuner.update_and_allocate(step)
        opt.zero_grad()
    assert config.rank_pattern
    model.eval()
    batch = _batch()
    with torch.no_grad():
        logits = model(**batch).logits
    thresholds = sorted(m.v_threshold.item() for m in model.modules() if isinstance(m, spikelora.Gate))
    model.save_pretrained(str(tmp_path))
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "SPIKEADALORA" and saved["gate"] == "sigmoid" and saved["total_step"] == 4
    loaded = PeftModel.from_pretrained(tiny_deberta(), str(tmp_path)).eval()
    assert sorted(m.v_threshold.item() for m in loaded.modules() if isinstance(m, spikelora.Gate)) == thresholds
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, logits, rtol=0, atol=1e-6)


def test_spike_adalora_refuses_merging():
    _, model = _spike_adalora()
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()


def test_spike_adalora_makes_no_host_sync_and_its_ops_are_counted():
    _, model = _spike_adalora(learnable_threshold=True)
    spikelora.track_ops(model)
    model.train()
    layer = _first(model, SpikeSVDLinear)
    x = torch.randn(2, 5, layer.in_features)
    with token_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])), forbid_host_sync():
        layer(x).sum().backward()
    assert int(layer.lora_spike["default"].counts("train")[1]) == 8 * 4
    with pytest.raises(AssertionError, match="host sync"), forbid_host_sync():
        torch.ones(1).item()  # the detector can fail
    model.eval()
    with torch.no_grad():
        model(**_batch())
    block, modules = spikelora.ops_report(model, phase="eval")
    assert block["kinds"] == {"spike": 12} and block["adapter_macs"] < block["adapter_macs_dense"]
    for name, m in modules.items():  # B's effective ops: the passing units times d_out
        assert m["adapter_macs"] == pytest.approx(m["d_in"] * 4 + m["fired_per_token"] * m["d_out"]), name


# ------------------------------------------------------------------------------ the controls
@pytest.mark.parametrize(
    ("r", "sparsity", "rank"), [(8, 0.7665, 2), (8, 0.0, 8), (16, 0.5, 8), (8, 0.8125, 2), (64, 0.71, 19)]
)
def test_effective_rank_is_r_times_the_share_that_fires(r, sparsity, rank):
    assert effective_rank(r, sparsity) == rank
    spec = LoraEffectiveAdapter(r=r, effective_of=sparsity)
    config = spec.peft_config(TARGETS, None)
    assert spec.r == r and spec.effective_rank == rank  # r pairs the record with the SpikeLoRA run
    assert config.r == rank and config.lora_alpha == pytest.approx(rank**0.5) and config.use_rslora


def test_lora_effective_trains_the_effective_rank_and_refuses_ambiguity():
    model = LoraEffectiveAdapter(r=8, effective_r=3).apply(tiny_deberta(), TARGETS, None)
    assert {m.lora_A["default"].out_features for m in model.modules() if hasattr(m, "lora_A") and m.lora_A} == {3}
    with pytest.raises(ValueError, match="exactly one of"):
        LoraEffectiveAdapter(r=8)
    with pytest.raises(ValueError, match="exactly one of"):
        LoraEffectiveAdapter(r=8, effective_of=0.5, effective_r=4)
    with pytest.raises(ValueError, match="rounds to rank 0"):
        LoraEffectiveAdapter(r=8, effective_of=0.95)
    with pytest.raises(ValueError, match=r"sparsity in \[0, 1\)"):
        LoraEffectiveAdapter(r=8, effective_of=1.0)


def test_rank_dropout_control_drops_at_the_spikelora_runs_rate():
    spec = SpikeLoraAdapter(r=4, gate="random", target_sparsity=0.77)
    assert spec.vth is None  # no threshold: no V_θ in the run name
    model = spec.apply(tiny_deberta().train(), TARGETS, None)
    gates = [m for m in model.modules() if isinstance(m, spikelora.Gate)]
    assert len(gates) == 12 and all(isinstance(g, RandomGate) and g.rate == 0.77 for g in gates)
    torch.manual_seed(0)
    with torch.no_grad():
        for _ in range(20):
            model(**_batch())
    assert abs(sparsity_report(model, phase="train").pooled - 0.77) < 0.02


# ------------------------------------------------------------------------------ the runner's configs
def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize(
    ("adapter", "extra", "cls"),
    [
        ("dora", [], DoraAdapter),
        ("adalora", [], AdaLoraAdapter),
        ("spike_adalora", [], SpikeAdaLoraAdapter),
        ("lora_effective", ["adapter.effective_of=0.75"], LoraEffectiveAdapter),
        ("spike", ["adapter.gate=random", "adapter.target_sparsity=0.75"], SpikeLoraAdapter),
    ],
)
def test_each_new_adapter_config_plans(adapter, extra, cls):
    plan = plan_run(_compose(["+experiment=smoke", f"adapter={adapter}", *extra]), check_resources=False)
    assert plan.adapter == adapter and type(plan.adapter_spec) is cls and plan.r == 8


def test_spike_yaml_defaults_are_the_lif_gate():
    spec = plan_run(_compose(["+experiment=smoke"]), check_resources=False).adapter_spec
    assert spec == SpikeLoraAdapter(r=8, v_threshold=0.1)
    assert (spec.gate, spec.two_sided, spec.temperature, spec.topk, spec.target_sparsity) == (
        "lif",
        False,
        None,
        None,
        None,
    )


def test_lora_effective_without_a_sparsity_is_a_config_error():
    with pytest.raises(ConfigError, match="exactly one of"):
        plan_run(_compose(["+experiment=smoke", "adapter=lora_effective"]), check_resources=False)


SMOKES = [f"adapter.gate={g}" for g in spikelora.GATES] + ["adapter=dora", "adapter=adalora", "adapter=spike_adalora"]


@pytest.mark.slow
@pytest.mark.parametrize("override", SMOKES)
def test_smoke_run_completes(override, tmp_path):
    cmd = [sys.executable, "-m", "spikelora.run", "+experiment=smoke", override, "trainer.max_steps=3"]
    cmd += [f"results_dir={tmp_path / 'r'}", f"cache_dir={tmp_path / 'c'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_HUB_OFFLINE"))}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "r" / "smoke").glob("tiny-cola-*")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["train"]["global_step"] == 3
    sparsity = metrics.get("eval_sparsity")
    if override == "adapter.gate=topk":
        assert sparsity == pytest.approx(0.5)
    elif override in ("adapter.gate=sigmoid", "adapter.gate=random"):
        assert sparsity == 0.0  # no exact zeros / the identity in eval
    elif override in ("adapter=dora", "adapter=adalora"):
        assert sparsity is None
    else:
        assert 0 < sparsity < 1
    if "adalora" in override:
        saved = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
        assert saved["total_step"] == 3 and saved["rank_pattern"]
