"""Operation and energy accounting: exact hand-derived counts, DeBERTa's positional pass, padding, no host sync."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from builders import (
    DEBERTA_TARGETS,
    direct_counts,
    forbid_host_sync,
    randomise_b,
    spike_config,
    two_batches,
)
from peft import LoraConfig, get_peft_model
from torch import nn

import spikelora
from spikelora import SpikeLoraConfig
from spikelora.ops import HOROWITZ_45NM, ops_report, reset_ops, track_ops, untrack_ops

ROOT = Path(__file__).resolve().parents[1]


class Tiny(nn.Module):
    """fc1: 4 → 3, fc2: 3 → 5; no biases so every activation is known exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 3, bias=False)
        self.fc2 = nn.Linear(3, 5, bias=False)
        with torch.no_grad():
            # fc1 passes x0, x2, x3 through unchanged.
            self.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
            self.fc2.weight.normal_()

    def forward(self, inputs_embeds, attention_mask=None):
        return self.fc2(self.fc1(inputs_embeds))


# Two sequences of 3 tokens, the second padded after 2 (the pad row is all ones: it would fire everywhere).
X = torch.tensor(
    [
        [[1.0, 1, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0]],
        [[0.0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
    ]
)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
TOKENS = 5
# fc1's A picks (x0, x1), fc2's A picks its input's (y0, y1) = (x0, x2); with τ = 2, V_θ = 0.1 a unit
# fires where h >= 0.2, i.e. where the picked input is 1. Over the 5 real tokens:
FIRED_FC1 = 2 + 1 + 1 + 0 + 2  # x0 + x1 per token
FIRED_FC2 = 1 + 0 + 1 + 1 + 2  # x0 + x2 per token


def tiny_adapted(config) -> nn.Module:
    torch.manual_seed(0)
    model = get_peft_model(Tiny(), config)
    layers = {n.rsplit(".", 1)[-1]: m for n, m in model.named_modules() if isinstance(m, spikelora.ops.LoraLinear)}
    with torch.no_grad():
        a1 = layers["fc1"].lora_A["default"].weight
        a1.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0]]))
        layers["fc2"].lora_A["default"].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0]]))
        layers["fc1"].lora_B["default"].weight.zero_()  # fc2's input stays exactly fc1's base output
        layers["fc2"].lora_B["default"].weight.normal_()
    return model.eval()


def tiny_spike():
    return tiny_adapted(SpikeLoraConfig(r=2, lora_alpha=2.0, target_modules=["fc1", "fc2"], v_threshold=0.1))


def tiny_lora():
    return tiny_adapted(LoraConfig(r=2, lora_alpha=2.0, target_modules=["fc1", "fc2"]))


def run(model, x=X, mask=MASK):
    with torch.no_grad():
        return model(inputs_embeds=x, attention_mask=mask)


@pytest.mark.parametrize("tracked", [True, False])
def test_spikelora_counts_equal_the_hand_derived_formula(tracked):
    model = tiny_spike()
    if tracked:
        track_ops(model)  # its model hook opens the token mask from attention_mask
        run(model)
    else:
        # A PeftModel without task_type calls the base model directly, past SpikeLoraModel.forward:
        # untracked, the mask must be declared by hand.
        with spikelora.token_mask(MASK):
            run(model)
    block, mods = ops_report(model)
    fc1, fc2 = mods["fc1"], mods["fc2"]
    assert fc1["kind"] == fc2["kind"] == "spike"
    assert fc1["tokens"] == fc2["tokens"] == block["tokens"] == TOKENS
    # per token: base d_in·d_out; A d_in·r; effective B fired·d_out; dense B r·d_out; gate 2·r
    assert fc1["base_macs"] == 4 * 3 and fc2["base_macs"] == 3 * 5
    assert fc1["adapter_macs"] == (TOKENS * 4 * 2 + FIRED_FC1 * 3) / TOKENS
    assert fc2["adapter_macs"] == (TOKENS * 3 * 2 + FIRED_FC2 * 5) / TOKENS
    assert fc1["adapter_macs_dense"] == 4 * 2 + 2 * 3 and fc2["adapter_macs_dense"] == 3 * 2 + 2 * 5
    assert fc1["adapter_acs"] == fc2["adapter_acs"] == 0
    assert fc1["gate_ops"] == fc2["gate_ops"] == 2 * 2
    assert fc1["fired_per_token"] == FIRED_FC1 / TOKENS
    assert block["base_macs"] == 12 + 15
    assert block["adapter_macs"] == fc1["adapter_macs"] + fc2["adapter_macs"]
    assert block["adapter_macs_dense"] == 14 + 16
    assert block["gate_ops"] == 8
    e = HOROWITZ_45NM
    assert block["energy_pj"]["adapter"] == pytest.approx(e["mac_pj"] * block["adapter_macs"] + e["gate_op_pj"] * 8)
    assert block["energy_pj"]["total"] == pytest.approx(block["energy_pj"]["adapter"] + e["mac_pj"] * 27)
    assert block["convention"] == "neurobench" and block["energy"]["mac_pj"] == 4.6
    assert block["other"]["rows"] == 0


def test_spike_ac_convention_counts_effective_b_as_accumulates():
    model = track_ops(tiny_spike())
    run(model)
    block, mods = ops_report(model, convention="spike_ac", energy={"ac_pj": 1.0, "gate_op_pj": 0.0})
    assert mods["fc1"]["adapter_macs"] == 4 * 2
    assert mods["fc1"]["adapter_acs"] == FIRED_FC1 * 3 / TOKENS
    assert block["adapter_acs"] == (FIRED_FC1 * 3 + FIRED_FC2 * 5) / TOKENS
    assert block["energy_pj"]["adapter"] == pytest.approx(4.6 * (8 + 6) + 1.0 * block["adapter_acs"])
    with pytest.raises(ValueError, match="convention"):
        ops_report(model, convention="ac")
    with pytest.raises(ValueError, match="energy keys"):
        ops_report(model, energy={"mac": 1.0})


def test_lora_counts_dense_and_merged_counts_nothing():
    model = track_ops(tiny_lora())
    run(model)
    block, mods = ops_report(model)
    assert mods["fc1"]["kind"] == "lora" and mods["fc1"]["tokens"] == TOKENS
    assert mods["fc1"]["adapter_macs"] == mods["fc1"]["adapter_macs_dense"] == 4 * 2 + 2 * 3
    assert block["adapter_macs"] == block["adapter_macs_dense"] == 14 + 16
    assert block["gate_ops"] == 0 and block["base_macs"] == 27
    reset_ops(model)
    assert ops_report(model)[1] == {}
    model.base_model.merge_adapter()
    run(model)
    block, mods = ops_report(model)
    assert mods["fc2"]["kind"] == "lora_merged"
    assert block["adapter_macs"] == 0 and block["adapter_macs_dense"] == 30 and block["base_macs"] == 27


def test_lora_without_tracking_is_refused():
    model = tiny_lora()
    run(model)
    with pytest.raises(ValueError, match="track_ops"):
        ops_report(model)


def test_several_adapters_active_in_one_model():
    model = tiny_lora()
    model.add_adapter("second", LoraConfig(r=3, lora_alpha=3.0, target_modules=["fc2"]))
    model.base_model.set_adapter(["default", "second"])
    track_ops(model)
    run(model)
    block, mods = ops_report(model)
    assert mods["fc1"]["adapter_macs"] == 4 * 2 + 2 * 3
    assert mods["fc2"]["adapter_macs"] == (3 * 2 + 2 * 5) + (3 * 3 + 3 * 5)
    assert mods["fc2"]["r"] == 5
    assert block["adapter_macs"] == 14 + 16 + 24


def test_full_fine_tuning_counts_base_only():
    model = track_ops(Tiny().eval(), target_modules=["fc1", "fc2"])
    run(model)
    block, mods = ops_report(model)
    assert set(mods) == {"fc1", "fc2"} and block["tokens"] == TOKENS
    assert block["base_macs"] == 27 and block["adapter_macs"] == block["adapter_macs_dense"] == 0
    assert block["kinds"] == {"base": 2}
    untrack_ops(model)
    assert not model._forward_pre_hooks and not model.fc1._forward_pre_hooks


def test_train_and_eval_are_counted_apart():
    model = track_ops(tiny_lora())
    model.train()
    model(inputs_embeds=X, attention_mask=MASK)
    model.eval()
    run(model)
    run(model)
    assert ops_report(model, phase="train")[0]["tokens"] == TOKENS
    assert ops_report(model, phase="eval")[0]["tokens"] == 2 * TOKENS
    assert ops_report(model, phase=None)[0]["tokens"] == 3 * TOKENS
    reset_ops(model, phase="eval")
    assert ops_report(model, phase="train")[0]["tokens"] == TOKENS
    assert ops_report(model, phase="eval")[1] == {}
    spikelora.reset_sparsity(model, phase="train")  # zeroes the ops counters too: they go together
    assert ops_report(model, phase=None)[1] == {}


def test_deberta_counts_real_tokens_and_keeps_the_positional_pass_apart(tiny_deberta, batch):
    model = track_ops(get_peft_model(tiny_deberta(), spike_config()).eval())
    randomise_b(model)
    batches = two_batches(batch)
    expected = direct_counts(model, batches)  # hooks on lora_A, no ops counted yet (own forward)
    reset_ops(model)
    with torch.no_grad():
        for b in batches:
            model(**b)
    block, mods = ops_report(model)
    real = 10 + 7 + 4 + 6 + 3
    assert set(mods) == set(expected) and block["tokens"] == real and block["modules"] == 12
    r = 4
    for name, (fired, total, o_fired, o_total) in expected.items():
        m = mods[name]
        d_in, d_out = m["d_in"], m["d_out"]
        assert total == real * r and m["tokens"] == real
        assert m["base_macs"] == d_in * d_out
        assert m["adapter_macs"] == (real * d_in * r + fired * d_out) / real
        o_rows = o_total // r
        assert m["other"]["rows"] == o_rows
        assert m["other"]["adapter_macs"] == o_rows * d_in * r + o_fired * d_out
        assert m["other"]["base_macs"] == o_rows * d_in * d_out
    positional = {n.rsplit(".", 1)[-1] for n, m in mods.items() if m["other"]["rows"]}
    assert positional == {"query_proj", "key_proj"}
    # 2 layers × (q, k) × 2 batches × the 1 × 16 position table (2 × position_buckets)
    assert block["other"]["rows"] == 2 * 2 * 2 * 16
    assert block["other"]["base_macs"] == 2 * 2 * 2 * 16 * 32 * 32 / real
    assert block["adapter_macs"] < block["adapter_macs_dense"]


def test_deberta_lora_matches_spikelora_base_and_dense(tiny_deberta, batch):
    lora_cfg = LoraConfig(r=4, lora_alpha=2.0, use_rslora=True, target_modules=DEBERTA_TARGETS, task_type="SEQ_CLS")
    lora = track_ops(get_peft_model(tiny_deberta(), lora_cfg).eval())
    spike = get_peft_model(tiny_deberta(), spike_config()).eval()
    with torch.no_grad():
        lora(**batch)
        spike(**batch)
    lb, _ = ops_report(lora)
    sb, _ = ops_report(spike)
    assert lb["tokens"] == sb["tokens"] == 21
    assert lb["base_macs"] == sb["base_macs"]
    assert lb["adapter_macs"] == lb["adapter_macs_dense"] == sb["adapter_macs_dense"]
    assert lb["other"]["rows"] == sb["other"]["rows"] > 0
    assert sb["adapter_macs"] < lb["adapter_macs"]


def test_padding_is_not_counted(tiny_deberta, batch):
    model = track_ops(get_peft_model(tiny_deberta(), spike_config()).eval())
    randomise_b(model)
    with torch.no_grad():
        model(**{k: v[2:, :4] for k, v in batch.items()})  # the 4-token sequence alone
    alone, _ = ops_report(model)
    reset_ops(model)
    with torch.no_grad():
        model(**{k: v[2:] for k, v in batch.items()})  # the same sequence padded to 10
    padded, _ = ops_report(model)
    assert padded["tokens"] == alone["tokens"] == 4
    for f in ("base_macs", "adapter_macs", "adapter_macs_dense", "gate_ops"):
        assert padded[f] == pytest.approx(alone[f])


@pytest.mark.parametrize("kind", ["lora", "spike"])
def test_forward_makes_no_host_sync(tiny_deberta, batch, kind):
    if kind == "lora":
        cfg = LoraConfig(r=4, lora_alpha=2.0, target_modules=DEBERTA_TARGETS, task_type="SEQ_CLS")
    else:
        cfg = spike_config()
    model = track_ops(get_peft_model(tiny_deberta(), cfg).eval())
    with forbid_host_sync(), torch.no_grad():  # the whole model: mask hook, row counters, gates
        model(**batch)
    block, _ = ops_report(model)
    assert block["tokens"] == 21


def test_energy_yaml_matches_the_defaults():
    conf = yaml.safe_load((ROOT / "conf" / "energy" / "horowitz45nm.yaml").read_text())
    for k in ("mac_pj", "ac_pj", "gate_op_pj"):
        assert conf[k] == HOROWITZ_45NM[k]
    assert "Horowitz" in conf["source"] and "ISSCC 2014" in conf["source"]


def _bench_inference():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_inference", ROOT / "scripts" / "bench_inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zero_skip_b_equals_the_dense_product():
    bench = _bench_inference()
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 7, 8, generator=g)
    gated = h * (h > 1.0)  # most units silent, some rows with none fired
    weight = torch.randn(20, 8, generator=g)
    start = torch.randn(3, 7, 20, generator=g)
    expected = start + 0.5 * (gated @ weight.t())
    out = bench.zero_skip_b(gated, weight, start.clone(), 0.5)  # the library's, as the script uses it
    torch.testing.assert_close(out, expected)
    assert (gated == 0).float().mean() > 0.7
    all_silent = bench.zero_skip_b(torch.zeros_like(gated), weight, start.clone(), 0.5)
    torch.testing.assert_close(all_silent, start, rtol=0, atol=0)


def test_zero_skip_variant_model_equals_the_dense_path(tiny_deberta, batch):
    bench = _bench_inference()
    model = get_peft_model(tiny_deberta(), spike_config()).eval()
    randomise_b(model)
    with torch.no_grad():
        dense = model(**batch).logits
        bench.set_variant(model, bench.ZeroSkipVariant())
        skip = model(**batch).logits
    torch.testing.assert_close(skip, dense)
    assert not torch.equal(dense, get_peft_model(tiny_deberta(), spike_config()).eval()(**batch).logits)


def test_activation_checkpointing_counts_each_batch_once(tiny_deberta, batch):
    cfg = LoraConfig(r=4, lora_alpha=2.0, target_modules=DEBERTA_TARGETS, task_type="SEQ_CLS")
    model = track_ops(get_peft_model(tiny_deberta(), cfg))
    base = model.base_model.model
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    model(**batch, labels=torch.tensor([0, 1, 0])).loss.backward()
    block, mods = ops_report(model, phase="train")
    assert block["tokens"] == 21 and all(m["tokens"] == 21 for m in mods.values())


def test_set_zero_skip_equals_dense_and_keeps_training_dense(tiny_deberta, batch):
    model = get_peft_model(tiny_deberta(), spike_config()).eval()
    randomise_b(model)
    with torch.no_grad():
        dense = model(**batch).logits
    assert spikelora.set_zero_skip(model) == 12
    with torch.no_grad():
        skip = model(**batch).logits
    torch.testing.assert_close(skip, dense)
    out = model(**batch).logits  # gradients enabled: the dense path, differentiable
    out.sum().backward()
    torch.testing.assert_close(out.detach(), dense)
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_A" in n)
    assert spikelora.set_zero_skip(model, enabled=False) == 12
