"""Beyond encoders: decoder classifiers (Llama, Qwen2, GPT-2 with its Conv1D layers) in the runner,
and SpikeLoRA on a causal LM under ``generate()`` with a KV cache."""

from __future__ import annotations

import pytest
import torch
from inprocess import run_here
from peft import PeftModel, get_peft_model
from transformers import GPT2Config, GPT2ForSequenceClassification, LlamaConfig, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

from spikelora import SpikeLoraConfig, reset_sparsity, sparsity_report
from spikelora.adapter import is_spike_layer
from spikelora.experiment.backbones import DECODER_TARGETS, TinyDecoderBackbone
from spikelora.experiment.tasks import TASKS

FAMILIES = ["llama", "qwen2", "gpt2"]


def _randomise_b(model, std=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * std


@pytest.mark.parametrize("family", FAMILIES)
def test_a_decoder_classifier_pools_the_last_real_token_whatever_the_padding(family):
    backbone = TinyDecoderBackbone(name=f"tiny_{family}", family=family, target_modules=DECODER_TARGETS[family])
    model, tokenizer = backbone.build(TASKS["cola"], seed=0)
    assert tokenizer.pad_token is not None and model.config.pad_token_id == tokenizer.pad_token_id
    model = get_peft_model(
        model,
        SpikeLoraConfig(r=4, target_modules=DECODER_TARGETS[family], modules_to_save=["score"], task_type="SEQ_CLS"),
    )
    _randomise_b(model, std=0.2)
    model.eval()
    texts = ["a short one", "a rather longer sentence than the first"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # the first is padded on the right
    with torch.no_grad():
        together = model(**batch).logits
        alone = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_each_decoder_family_trains_in_the_runner_offline(family, tmp_path):
    record = run_here(
        ["+experiment=smoke", f"model=tiny_{family}", "trainer.max_steps=4", "save_adapter=false"], tmp_path
    )
    assert record["status"] == "complete"
    assert record["run_name"].startswith(f"tiny_{family}-cola-spike-")
    assert record["train"]["steps_nonfinite"] == 0 and record["train"]["global_step"] == 4
    assert 0.0 < record["eval_sparsity"] < 1.0
    # every adapted projection counted: 2 layers x the family's targets (GPT-2's c_proj twice per layer)
    per_layer = {"llama": 7, "qwen2": 7, "gpt2": 4}[family]
    assert record["ops"]["modules"] == 2 * per_layer and record["ops"]["kinds"] == {"spike": 2 * per_layer}


def test_gpt2_conv1d_layers_take_spikelora_with_fan_in_fan_out(tmp_path):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=2, n_positions=64, pad_token_id=0, num_labels=2)
    model = get_peft_model(
        GPT2ForSequenceClassification(cfg),
        SpikeLoraConfig(
            r=4, target_modules=["c_attn", "c_proj", "c_fc"], modules_to_save=["score"], task_type="SEQ_CLS"
        ),
    )
    layer = model.base_model.model.transformer.h[0].attn.c_attn
    assert is_spike_layer(layer) and isinstance(layer.get_base_layer(), Conv1D) and layer.fan_in_fan_out
    _randomise_b(model, std=0.2)
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        h = layer.lora_A["default"](x)
        want = layer.get_base_layer()(x) + layer.lora_B["default"](h * (h / 2.0 >= 0.1)) * layer.scaling["default"]
        torch.testing.assert_close(layer(x), want)
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()
    ids = torch.randint(1, 50, (2, 6))
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
    model.save_pretrained(tmp_path / "adapter")
    torch.manual_seed(0)
    again = PeftModel.from_pretrained(GPT2ForSequenceClassification(cfg), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, before)


def _causal_lm(**gate):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    config = SpikeLoraConfig(
        r=4, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM", v_threshold=0.02, **gate
    )
    model = get_peft_model(LlamaForCausalLM(cfg), config)
    _randomise_b(model)
    return model.eval()


def _generate(model, ids, **kw):
    return model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=6,
        min_new_tokens=6,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        **kw,
    )


def _full_logits(model, seq):
    with torch.no_grad():
        return model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits


def test_generate_with_a_kv_cache_equals_a_full_forward_and_counts_each_token_once():
    model = _causal_lm()
    ids = torch.randint(3, 64, (2, 5))
    reset_sparsity(model)
    out = _generate(model, ids)
    report = sparsity_report(model)
    seq = out.sequences
    assert seq.shape == (2, 11)
    full = _full_logits(model, seq)
    for i, step in enumerate(out.logits):
        torch.testing.assert_close(step, full[:, 4 + i], rtol=1e-5, atol=1e-5)
    # the adapter acts (the test could fail): without it the logits differ
    with model.disable_adapter():
        assert (_full_logits(model, seq) - full).abs().max() > 1e-3
    # 5 prompt tokens + 5 generated tokens fed back (the last one is only emitted), × 2 rows × r = 4
    assert set(report.tokens.values()) == {2 * 10 * 4} and not report.non_token


def test_generation_never_counts_a_padded_prompt_s_padding():
    model = _causal_lm()
    ids = torch.randint(3, 64, (2, 5))
    mask = torch.ones_like(ids)
    ids[0, :2], mask[0, :2] = 0, 0  # row 0: two pads on the left, as a batch of prompts is padded
    reset_sparsity(model)
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    # (3 + 5) and (5 + 5) real tokens (prompt + generated fed back), × r = 4
    assert set(sparsity_report(model).tokens.values()) == {18 * 4}


def test_temporal_spikelora_refuses_a_kv_cache_and_is_exact_without_one():
    model = _causal_lm(spike_mode="temporal")
    ids = torch.randint(3, 64, (2, 5))
    with pytest.raises(ValueError, match=r"use_cache=False"):
        _generate(model, ids)
    out = _generate(model, ids, use_cache=False)
    full = _full_logits(model, out.sequences)
    for i, step in enumerate(out.logits):
        torch.testing.assert_close(step, full[:, 4 + i], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["null", "nf4"])
def test_a_local_llama_checkpoint_without_a_pad_token_runs_as_model_llama(quantization, tmp_path):
    """The hub path (AutoModel/AutoTokenizer from a directory) for a decoder whose tokenizer has no
    pad token, as Llama's has none: its EOS pads, and the classifier pools the last real token."""
    backbone = TinyDecoderBackbone(name="tiny_llama", family="llama", target_modules=DECODER_TARGETS["llama"])
    model, tokenizer = backbone.build(TASKS["cola"], seed=0)
    tokenizer.pad_token = None
    tokenizer.eos_token = "[SEP]"
    model.config.pad_token_id = None
    tokenizer.save_pretrained(tmp_path / "llama")
    model.save_pretrained(tmp_path / "llama")
    args = ["+experiment=smoke", "model=llama", f"model.name_or_path={tmp_path / 'llama'}"]
    m = run_here([*args, f"model.quantization={quantization}", "trainer.max_steps=3"], tmp_path)
    assert m["status"] == "complete" and m["train"]["steps_nonfinite"] == 0
    assert m["ops"]["kinds"] == {"spike": 2 * 7}
    assert m["ops"].get("base_precision") == (None if quantization == "null" else "nf4")
