"""Shared fixtures: tiny models built from configs (nothing is downloaded)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

from spikelora.experiment.backbones import deberta_v3_config

# Test helpers (fault callbacks, the W&B record reader) import as top-level modules, as in the
# subprocesses the tests start with tests/helpers on PYTHONPATH.
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

# Under pytest-xdist (README's `-n 2`) each worker, and every run it starts, computes on one
# thread: two workers with two threads each on two cores would oversubscribe them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# The six encoder linears of the paper (query/key/value, attention output, FFN in and out).
DEBERTA_TARGETS = [
    "query_proj",
    "key_proj",
    "value_proj",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
]


def tiny_deberta_config(**overrides) -> DebertaV2Config:
    """A 2-layer DeBERTa-v3-shaped config: relative attention with shared keys (the q/k positional pass)."""
    return deberta_v3_config(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        position_buckets=8,
        **overrides,
    )


@pytest.fixture
def tiny_deberta():
    """A fresh randomly initialised 2-layer DeBERTa-v2 classifier in eval mode (seeded)."""

    def build(seed: int = 0, **overrides) -> DebertaV2ForSequenceClassification:
        torch.manual_seed(seed)
        return DebertaV2ForSequenceClassification(tiny_deberta_config(**overrides)).eval()

    return build


@pytest.fixture
def batch():
    """Token ids and a padding mask for 3 sequences of lengths 10, 7 and 4 (right padding)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 128, (3, 10), generator=g)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}
