"""Sparsity counters: equal to a direct count, real tokens only, positional pass apart, no host sync."""

from __future__ import annotations

import math

import pytest
import torch
from builders import direct_counts, forbid_host_sync, randomise_b, spike_config, spike_layers, two_batches
from peft import get_peft_model

import spikelora
from spikelora import LIFGate, token_mask


def test_sparsity_equals_direct_count_over_real_tokens(tiny_deberta, batch):
    model = get_peft_model(tiny_deberta(), spike_config()).eval()
    randomise_b(model)
    batches = two_batches(batch)
    expected = direct_counts(model, batches)
    spikelora.reset_sparsity(model)
    with torch.no_grad():
        for b in batches:
            model(**b)
    report = spikelora.sparsity_report(model)

    assert set(report.modules) == set(expected)
    for name, (fired, total, o_fired, o_total) in expected.items():
        assert report.tokens[name] == total == 4 * (10 + 7 + 4 + 6 + 3)
        assert report.modules[name] == pytest.approx(1 - fired / total, abs=1e-12)
        if o_total:
            assert report.non_token[name] == pytest.approx(1 - o_fired / o_total, abs=1e-12)
    # DeBERTa's shared-key relative attention runs query/key (only) over the position table too.
    assert {n.rsplit(".", 1)[-1] for n in report.non_token} == {"query_proj", "key_proj"}
    assert report.mean == pytest.approx(sum(report.modules.values()) / len(report.modules))
    fired_all = sum(c[0] for c in expected.values())
    total_all = sum(c[1] for c in expected.values())
    assert report.pooled == pytest.approx(1 - fired_all / total_all)
    assert spikelora.sparsity(model) == report.modules
    assert 0.0 < report.mean < 1.0


def test_padding_does_not_change_sparsity(tiny_deberta, batch):
    model = get_peft_model(tiny_deberta(), spike_config()).eval()
    short = {k: v[2:, :4] for k, v in batch.items()}  # the 4-token sequence alone, no padding
    with torch.no_grad():
        model(**short)
    alone = spikelora.sparsity(model)
    spikelora.reset_sparsity(model)
    padded = {k: v[2:] for k, v in batch.items()}  # the same sequence padded to 10
    with torch.no_grad():
        model(**padded)
    assert spikelora.sparsity(model) == pytest.approx(alone)


def test_reset_zeroes_every_counter(tiny_deberta, batch):
    model = get_peft_model(tiny_deberta(), spike_config())
    model(**batch)
    assert spikelora.sparsity(model)
    spikelora.reset_sparsity(model)
    report = spikelora.sparsity_report(model)
    assert report.modules == {} and report.non_token == {}
    for layer in spike_layers(model).values():
        gate = layer.lora_spike["default"]
        assert gate.counts().tolist() == [0, 0, 0, 0]


def test_counters_are_not_in_the_checkpoint(tiny_deberta, batch):
    model = get_peft_model(tiny_deberta(), spike_config())
    model(**batch)
    assert not [k for k in model.state_dict() if "_fired" in k or "_total" in k]


def test_activation_checkpointing_counts_each_batch_once(tiny_deberta, batch):
    model = get_peft_model(tiny_deberta(), spike_config())
    model(**batch)
    plain = spikelora.sparsity_report(model).tokens
    spikelora.reset_sparsity(model)
    ckpt = get_peft_model(tiny_deberta(), spike_config())
    base = ckpt.base_model.model
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ckpt.train()
    ckpt(**batch, labels=torch.tensor([0, 1, 0])).loss.backward()
    assert spikelora.sparsity_report(ckpt).tokens == plain


@pytest.mark.parametrize("mode", ["step", "temporal"])
def test_forward_and_backward_make_no_host_sync(tiny_deberta, mode):
    model = get_peft_model(tiny_deberta(), spike_config(spike_mode=mode, learnable_threshold=True))
    randomise_b(model)
    layer = next(iter(spike_layers(model).values()))
    x = torch.randn(2, 5, layer.in_features, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with token_mask(mask), forbid_host_sync():
        out = layer(x)
        out.sum().backward()
    assert int(layer.lora_spike["default"].counts("train")[1]) == 8 * 4


def test_forbid_host_sync_catches_item():
    # The detector above must be able to fail.
    with pytest.raises(AssertionError, match="host sync"), forbid_host_sync():
        torch.ones(1).item()


def test_gate_without_mask_counts_everything():
    gate = LIFGate(v_threshold=0.1)
    h = torch.tensor([[0.0, 0.3], [0.5, 0.1]])
    gate(h)
    assert gate.counts().tolist() == [2, 4, 0, 0]


def test_train_and_eval_calls_are_counted_apart(tiny_deberta, batch):
    model = get_peft_model(tiny_deberta(), spike_config())
    model.train()
    model(**batch)
    model.eval()
    with torch.no_grad():
        model(**batch)
        model(**batch)
    train = spikelora.sparsity_report(model, phase="train")
    evaluation = spikelora.sparsity_report(model, phase="eval")
    both = spikelora.sparsity_report(model)
    name = next(iter(train.tokens))
    assert evaluation.tokens[name] == 2 * train.tokens[name] == 2 * 4 * 21
    assert both.tokens[name] == 3 * 4 * 21
    spikelora.reset_sparsity(model, phase="eval")
    assert spikelora.sparsity_report(model, phase="eval").modules == {}
    assert spikelora.sparsity_report(model, phase="train").tokens == train.tokens
    with pytest.raises(ValueError, match="phase must be"):
        spikelora.sparsity_report(model, phase="test")


@pytest.mark.slow
def test_sparsity_counts_are_summed_over_ddp_ranks():
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).parent / "helpers" / "ddp_sparsity_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(worker)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 ran 2 x 6 tokens, rank 1 ran 2 x 7; r = 4: every module counted (12 + 14) x 4 gate units.
    assert "TOKENS [104]" in proc.stdout


def authors_last_call_sparsity(model, batches, tau=2.0, v_threshold=0.1):
    """spikeloralib's bookkeeping re-implemented: every call overwrites ``(S == 0).float().mean()``, padding included."""
    last = {}
    handles = []
    for name, layer in spike_layers(model).items():

        def hook(_mod, _inp, h, name=name):
            spikes = (h / tau >= v_threshold).float()
            last[name] = (spikes == 0).float().mean().item()

        handles.append(layer.lora_A["default"].register_forward_hook(hook))
    with torch.no_grad():
        for b in batches:
            model(**b)
    for h in handles:
        h.remove()
    return last


def test_reference_sparsity_is_the_authors_last_call_module_mean(tiny_deberta, batch):
    model = get_peft_model(tiny_deberta(), spike_config()).eval()
    randomise_b(model)
    batches = two_batches(batch)  # the last batch has padding
    last = authors_last_call_sparsity(model, batches)
    expected = sum(last.values()) / len(last)
    spikelora.reset_sparsity(model)  # the last-call figure does not depend on the counters
    with torch.no_grad():
        for b in batches:
            model(**b)
    assert spikelora.reference_sparsity(model) == pytest.approx(expected, abs=1e-6)
    # It is not the token-weighted figure: padding and the positional q/k pass enter it.
    report = spikelora.sparsity_report(model)
    assert spikelora.reference_sparsity(model) != pytest.approx(report.mean, abs=1e-6)
    # q/k's last call is the pass over the 1 x 16 position table.
    gate = spike_layers(model)["base_model.model.deberta.encoder.layer.0.attention.self.query_proj"].lora_spike[
        "default"
    ]
    assert gate.last_counts().tolist()[1] == 16 * 4


def test_reference_sparsity_makes_no_host_sync_in_forward(tiny_deberta, batch):
    model = get_peft_model(tiny_deberta(), spike_config()).eval()
    with forbid_host_sync(), torch.no_grad():
        model(**batch)
    assert 0.0 <= spikelora.reference_sparsity(model) <= 1.0
    assert math.isnan(spikelora.reference_sparsity(get_peft_model(tiny_deberta(), spike_config())))  # never ran
