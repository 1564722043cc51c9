"""Model and tokenizer construction for the runner.

``kind: hf`` loads any sequence-classification model and its tokenizer by hub id or local path
(``model.name_or_path``); ``kind: tiny`` builds a small DeBERTa-v2 from a config with a
byte-level tokenizer made in code, so nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from ..tasks import TaskSpec

SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """One token per UTF-8 byte plus BERT-style specials: works on any text, needs no training."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def tiny_deberta(cfg: Any, num_labels: int, vocab_size: int, seed: int) -> DebertaV2ForSequenceClassification:
    """A small DeBERTa-v3-shaped classifier (relative attention, shared keys), randomly initialised."""
    config = DebertaV2Config(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=64,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        position_biased_input=False,
        type_vocab_size=0,
        num_labels=num_labels,
        pad_token_id=0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return DebertaV2ForSequenceClassification(config)


def build_model_and_tokenizer(cfg: Any, task: TaskSpec, seed: int) -> tuple[PreTrainedModel, Any]:
    """The classifier for ``task`` and its tokenizer, from the ``model`` config group."""
    if cfg.kind == "tiny":
        tokenizer = byte_level_tokenizer()
        return tiny_deberta(cfg, task.num_labels, len(tokenizer), seed), tokenizer
    if cfg.kind == "hf":
        source = str(cfg.name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForSequenceClassification.from_pretrained(
                source,
                num_labels=task.num_labels,
                problem_type="regression" if task.is_regression else "single_label_classification",
            )
        except OSError as err:
            raise OSError(
                f"Could not load model {source!r}: {err}\nOn a node without internet, download it once "
                "(e.g. `hf download microsoft/deberta-v3-base --local-dir /models/deberta-v3-base`) and pass "
                "model.name_or_path=/models/deberta-v3-base."
            ) from err
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer
    raise ValueError(f"Unknown model.kind {cfg.kind!r}: use 'hf' or 'tiny'.")
