"""SpikeLoRA through stock PEFT on a tiny DeBERTa-v2: injection, equation, save/load, merging, errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import peft
import pytest
import torch
from builders import randomise_b, spike_config, spike_layers
from peft import PeftModel, get_peft_model

import spikelora
from spikelora import SpikeLoraConfig
from spikelora.adapter import add_b


def test_get_peft_model_injects_spikelora_into_the_six_encoder_linears(tiny_deberta):
    model = get_peft_model(tiny_deberta(), spike_config())
    layers = spike_layers(model)
    assert len(layers) == 6 * 2
    assert isinstance(model.base_model, spikelora.SpikeLoraModel)
    assert model.peft_config["default"].peft_type == "SPIKELORA"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # Adapter matrices and the classifier head (SEQ_CLS puts it in modules_to_save); nothing else.
    assert any("classifier.modules_to_save" in n for n in trainable)
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert sum("lora_A" in n for n in trainable) == 12


def test_b_zero_adapter_equals_base_model(tiny_deberta, batch):
    base = tiny_deberta()
    expected = base(**batch).logits
    model = get_peft_model(tiny_deberta(), spike_config()).eval()
    torch.testing.assert_close(model(**batch).logits, expected, rtol=0, atol=0)


def test_layer_computes_the_gated_update(tiny_deberta):
    model = get_peft_model(tiny_deberta(), spike_config(r=8, lora_alpha=4.0, v_threshold=0.05))
    randomise_b(model)
    layer = next(iter(spike_layers(model).values()))
    x = torch.randn(2, 5, layer.in_features)
    base = layer.get_base_layer()
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    h = x @ a.T
    gated = h * (h / 2.0 >= 0.05)
    expected = base(x) + (gated @ b.T) * (4.0 / math.sqrt(8))
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("r", [1, 2, 4, 8, 16, 32, 64])
def test_rslora_with_alpha_sqrt_r_scales_by_one(tiny_deberta, r):
    model = get_peft_model(tiny_deberta(), spike_config(r=r, lora_alpha=math.sqrt(r), use_rslora=True))
    scales = [s for m in spike_layers(model).values() for s in m.scaling.values()]
    assert len(scales) == 12 and all(s == pytest.approx(1.0) for s in scales)


def test_plain_scaling_is_alpha_over_r(tiny_deberta):
    model = get_peft_model(tiny_deberta(), spike_config(r=8, lora_alpha=16, use_rslora=False))
    assert {s for m in spike_layers(model).values() for s in m.scaling.values()} == {2.0}


def test_all_linear_targets_every_encoder_linear_but_not_the_head(tiny_deberta):
    model = get_peft_model(tiny_deberta(), spike_config(target_modules="all-linear"))
    names = set(spike_layers(model))
    linears = {
        n
        for n, m in tiny_deberta().named_modules()
        if isinstance(m, torch.nn.Linear) and not n.startswith("classifier")
    }
    assert {n.removeprefix("base_model.model.") for n in names} == linears


def test_dropout_is_applied_once_to_the_adapter_input(tiny_deberta, batch):
    # B = 0: whatever dropout does on the adapter path, the base path must see the undropped x.
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pooler_dropout=0.0)
    expected = tiny_deberta(**no_dropout)(**batch).logits
    model = get_peft_model(tiny_deberta(**no_dropout), spike_config(lora_dropout=0.5))
    model.train()
    torch.testing.assert_close(model(**batch).logits, expected, rtol=0, atol=0)

    # With B != 0 the adapter path equals B(gate(A(dropout(x)))) for the same dropout draw.
    randomise_b(model)
    layer = next(iter(spike_layers(model).values()))
    x = torch.randn(3, 4, layer.in_features)
    torch.manual_seed(11)
    out = layer(x) - layer.get_base_layer()(x)
    torch.manual_seed(11)
    drop = torch.nn.functional.dropout(x, 0.5, training=True)
    h = drop @ layer.lora_A["default"].weight.T
    expected_delta = (h * (h >= 0.2)) @ layer.lora_B["default"].weight.T * layer.scaling["default"]
    torch.testing.assert_close(out, expected_delta)


def test_save_and_load_round_trip_rebuilds_spikelora(tiny_deberta, batch, tmp_path):
    config = spike_config(v_threshold=0.25, tau=3.0, learnable_threshold=True, spike_mode="temporal")
    model = get_peft_model(tiny_deberta(), config).eval()
    randomise_b(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("v_threshold"):
                p.fill_(0.07)  # as if trained
    expected = model(**batch).logits
    model.save_pretrained(tmp_path)

    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "SPIKELORA"
    assert saved["v_threshold"] == 0.25 and saved["spike_mode"] == "temporal"

    loaded = PeftModel.from_pretrained(tiny_deberta(), tmp_path).eval()
    cfg = loaded.peft_config["default"]
    assert isinstance(cfg, SpikeLoraConfig)
    assert (cfg.v_threshold, cfg.tau, cfg.spike_mode, cfg.learnable_threshold) == (0.25, 3.0, "temporal", True)
    assert len(spike_layers(loaded)) == 12
    gates = [m.lora_spike["default"] for m in spike_layers(loaded).values()]
    assert all(g.v_threshold.detach().item() == pytest.approx(0.07) for g in gates)
    torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=0)
    assert not torch.allclose(expected, tiny_deberta()(**batch).logits)


def test_loading_without_the_package_is_an_error_not_plain_lora(tiny_deberta, tmp_path):
    model = get_peft_model(tiny_deberta(), spike_config())
    model.save_pretrained(tmp_path)
    code = (
        "import sys, peft\n"
        "assert 'spikelora' not in sys.modules\n"
        f"cfg = peft.PeftConfig.from_pretrained({str(tmp_path)!r})\n"
        "print('LOADED', type(cfg).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "LOADED" not in proc.stdout
    assert proc.returncode != 0
    assert "SPIKELORA" in proc.stderr


def test_merging_is_refused_and_weights_stay_unchanged(tiny_deberta):
    model = get_peft_model(tiny_deberta(), spike_config())
    randomise_b(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_adapter()
    with pytest.raises(ValueError, match="cannot be merged"):
        next(iter(spike_layers(model).values())).merge()
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m.merged for m in spike_layers(model).values())


def test_unload_returns_the_base_model(tiny_deberta, batch):
    expected = tiny_deberta()(**batch).logits
    model = get_peft_model(tiny_deberta(), spike_config())
    randomise_b(model)
    base = model.unload()
    assert not spike_layers(base)
    torch.testing.assert_close(base(**batch).logits, expected, rtol=0, atol=0)


def test_multiple_named_adapters(tiny_deberta, batch):
    model = get_peft_model(tiny_deberta(), spike_config(v_threshold=0.0)).eval()
    model.add_adapter("sparse", spike_config(v_threshold=0.5, r=2))
    randomise_b(model)
    layer = next(iter(spike_layers(model).values()))
    assert set(layer.lora_spike) == {"default", "sparse"}

    out_default = model(**batch).logits
    dense = spikelora.sparsity_report(model, "default")
    model.set_adapter("sparse")
    out_sparse = model(**batch).logits
    assert not torch.allclose(out_default, out_sparse)
    sparse = spikelora.sparsity_report(model)  # the active adapter
    assert sparse.mean > dense.mean
    assert spikelora.sparsity_report(model, "default").mean == dense.mean


def test_half_precision_model_runs_in_its_dtype(tiny_deberta, batch):
    model = get_peft_model(tiny_deberta().to(torch.bfloat16), spike_config(), autocast_adapter_dtype=False)
    randomise_b(model)
    layer = next(iter(spike_layers(model).values()))
    x = torch.randn(2, 3, layer.in_features, dtype=torch.bfloat16)
    assert layer(x).dtype == torch.bfloat16
    assert model(**batch).logits.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"r": 0}, "r must be a positive integer"),
        ({"r": -3}, "r must be a positive integer"),
        ({"v_threshold": -0.5}, "v_threshold must be"),
        ({"tau": 1.0}, "tau must be > 1"),
        ({"spike_mode": "rate"}, "Unknown spike mode 'rate'"),
        ({"use_dora": True}, "cannot be combined with use_dora"),
    ],
)
def test_bad_config_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        spike_config(**overrides)


def test_targets_that_match_nothing_are_rejected(tiny_deberta):
    with pytest.raises(ValueError, match=r"target_modules \['qkv_proj'\] match no nn.Linear.*query_proj"):
        get_peft_model(tiny_deberta(), spike_config(target_modules=["qkv_proj"]))


def test_non_linear_targets_are_rejected_not_turned_into_plain_lora(tiny_deberta):
    with pytest.raises(ValueError, match=r"word_embeddings is a Embedding .*no gate applies"):
        get_peft_model(tiny_deberta(), spike_config(target_modules=["word_embeddings"]))


def test_config_registered_with_peft_mappings():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    assert PEFT_TYPE_TO_CONFIG_MAPPING["SPIKELORA"] is SpikeLoraConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING["SPIKELORA"] is spikelora.SpikeLoraModel
    cfg = peft.PeftConfig.from_peft_type(peft_type="SPIKELORA", r=3, v_threshold=0.3)
    assert isinstance(cfg, SpikeLoraConfig) and cfg.v_threshold == 0.3


def test_training_spikelora_reduces_the_loss_and_moves_only_adapter_weights(tiny_deberta):
    torch.manual_seed(0)
    model = get_peft_model(tiny_deberta(), spike_config(r=8, learnable_threshold=True)).train()
    frozen_before = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    # A separable toy task: label = whether token 7 occurs in the sequence.
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(8, 128, (32, 12), generator=g)
    labels = torch.randint(0, 2, (32,), generator=g)
    ids[labels == 1, 3] = 7
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(60):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert all(torch.equal(p, frozen_before[n]) for n, p in model.named_parameters() if not p.requires_grad)
    thresholds = [m.lora_spike["default"].v_threshold.detach().item() for m in spike_layers(model).values()]
    assert any(t != pytest.approx(0.1) for t in thresholds)
    assert 0.0 < spikelora.sparsity_report(model).mean < 1.0


@pytest.mark.parametrize("shape", [(4, 7, 8), (5, 8), (2, 3, 4, 8)])
@pytest.mark.parametrize("bias", [False, True])
def test_the_fused_b_product_equals_the_three_ops_forward_and_backward(shape, bias):
    """``add_b`` (one ``addmm`` where it applies, the three ops where not: a bias on B) is
    ``result + scaling · B(gated)``, with the same gradients for result, gated and B."""
    g = torch.Generator().manual_seed(0)
    lora_b = torch.nn.Linear(8, 16, bias=bias).double()
    gated = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    result = torch.randn(*shape[:-1], 16, generator=g, dtype=torch.float64, requires_grad=True)
    fused = add_b(result, gated, lora_b, 0.7)
    three = result + lora_b(gated) * 0.7
    upstream = torch.randn(three.shape, generator=g, dtype=torch.float64)
    params = [result, gated, *lora_b.parameters()]
    got = torch.autograd.grad((fused * upstream).sum(), params)
    want = torch.autograd.grad((three * upstream).sum(), params)
    torch.testing.assert_close(fused, three, rtol=0, atol=1e-12)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_the_fused_b_product_keeps_the_separate_ops_dtype_promotion():
    lora_b = torch.nn.Linear(8, 16, bias=False)  # float32 adapter on a bfloat16 base output
    result = torch.randn(3, 16, dtype=torch.bfloat16)
    out = add_b(result, torch.randn(3, 8), lora_b, 1.0)
    assert out.dtype == (result + lora_b(torch.randn(3, 8))).dtype == torch.float32
