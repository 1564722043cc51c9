"""SpikeLoRA under ``torch.compile``: no more graph breaks than LoRA, the same numbers as eager.

The gate reads the batch's token mask and guards its counters against activation checkpointing's
re-run; both once broke the graph at every adapted module (``ContextVar.get``, the autograd
engine's task id). Inductor runs on CPU here (the C++ compiler is on these machines).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
import torch._inductor.config as inductor_config
from builders import DEBERTA_TARGETS, randomise_b, spike_config, tiny_deberta
from inprocess import run_here
from peft import LoraConfig, get_peft_model

from spikelora.neuron import Gate

GATES = [
    {},
    {"gate": "threshold"},
    {"gate": "relu", "learnable_threshold": True},
    {"gate": "sigmoid"},
    {"gate": "topk"},
    {"gate": "random"},
    {"spike_mode": "temporal", "spike_reset": "soft"},
    {"two_sided": True, "learnable_tau": True},
]


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padding: counted apart from real tokens
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


def graph_breaks(model: torch.nn.Module) -> tuple[int, list[str]]:
    dynamo.reset()
    b = batch()
    explained = dynamo.explain(model)(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    return explained.graph_break_count, [str(r.reason).splitlines()[0] for r in explained.break_reasons]


def lora_model() -> torch.nn.Module:
    return get_peft_model(
        tiny_deberta(), LoraConfig(r=4, lora_alpha=2.0, target_modules=DEBERTA_TARGETS, task_type="SEQ_CLS")
    )


@pytest.fixture(scope="module")
def lora_breaks() -> int:
    return graph_breaks(lora_model().train())[0]


@pytest.mark.slow
@pytest.mark.parametrize("gate", GATES, ids=lambda g: ",".join(f"{k}={v}" for k, v in g.items()) or "lif")
def test_every_gate_breaks_the_graph_no_more_than_lora(gate, lora_breaks):
    spike, reasons = graph_breaks(get_peft_model(tiny_deberta(), spike_config(**gate)).train())
    assert spike <= lora_breaks, reasons


def _train_step(model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out = model(**batch())
    out.loss.backward()
    grads = {n.removeprefix("_orig_mod."): p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads


def _counters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n.removeprefix("_orig_mod."): torch.cat([g.counts(), g.aux_counts(), g.last_counts()])
        for n, g in model.named_modules()
        if isinstance(g, Gate)
    }


@pytest.mark.slow
def test_inductor_equals_eager_outputs_gradients_and_counters(monkeypatch):
    # The tiny model trains with dropout: Inductor draws its own random numbers unless told to
    # use eager's, and then the two runs see the same masks.
    monkeypatch.setattr(inductor_config, "fallback_random", True)

    def build() -> torch.nn.Module:
        model = get_peft_model(tiny_deberta(), spike_config())
        randomise_b(model)
        return model.train()

    eager, compiled = build(), build()
    dynamo.reset()
    torch.manual_seed(1)
    logits_e, grads_e = _train_step(eager)
    torch.manual_seed(1)
    logits_c, grads_c = _train_step(torch.compile(compiled, backend="inductor"))
    assert torch.allclose(logits_c, logits_e, atol=1e-6)
    assert grads_c.keys() == grads_e.keys() and len(grads_e) > 0
    for name, grad in grads_e.items():
        assert torch.allclose(grads_c[name], grad, atol=1e-6, rtol=1e-5), name
    counters_e, counters_c = _counters(eager), _counters(compiled)
    assert counters_c.keys() == counters_e.keys() and len(counters_e) == 2 * len(DEBERTA_TARGETS)
    for name, counts in counters_e.items():
        assert torch.equal(counters_c[name], counts), name  # not one unit lost or counted twice
    assert sum(int(c[1]) for c in counters_e.values()) > 0  # token units were counted at all


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["lora", "spike"])
def test_the_runner_trains_compiled(adapter, tmp_path):
    # Dynamo's capture through HF's Trainer (backend "eager": no code generation, the numbers are
    # the Inductor test's business above); two steps and a short evaluation.
    record = run_here(
        [
            "+experiment=smoke",
            f"adapter={adapter}",
            "trainer.max_steps=2",
            "max_eval_samples=16",
            "+trainer.torch_compile=true",
            "+trainer.torch_compile_backend=eager",
        ],
        tmp_path,
    )
    assert record["status"] == "complete"
    assert record["provenance"]["canonical_config"]["trainer"]["torch_compile"] is True  # a run of its own
    if adapter == "spike":
        assert 0.0 < record["final"]["eval_sparsity"] < 1.0
