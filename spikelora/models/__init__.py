"""Model and tokenizer construction for the runner.

``kind: hf`` loads any sequence-classification model and its tokenizer by hub id or local path
(``model.name_or_path``); ``kind: tiny`` builds a small DeBERTa-v2 from a config with a
byte-level tokenizer made in code, so nothing is downloaded; ``kind: spikegpt`` loads a SpikeGPT
checkpoint (or builds a random one from its sizes) with the GPT-NeoX-20B tokenizer.
"""

from __future__ import annotations

from pathlib import Path
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


def deberta_v3_config(
    vocab_size: int = 128100,
    hidden_size: int = 768,
    num_hidden_layers: int = 12,
    num_attention_heads: int = 12,
    intermediate_size: int = 3072,
    position_buckets: int = 256,
    num_labels: int = 2,
    **extra: Any,
) -> DebertaV2Config:
    """A DeBERTaV3-shaped config (defaults: base): relative attention with shared keys, no absolute positions.

    ``extra`` goes to ``DebertaV2Config`` unchanged (e.g. dropout probabilities).
    """
    return DebertaV2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=position_buckets,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        position_biased_input=False,
        type_vocab_size=0,
        num_labels=num_labels,
        pad_token_id=0,
        **extra,
    )


def tiny_deberta(cfg: Any, num_labels: int, vocab_size: int, seed: int) -> DebertaV2ForSequenceClassification:
    """A small DeBERTa-v3-shaped classifier, randomly initialised."""
    config = deberta_v3_config(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        position_buckets=64,
        num_labels=num_labels,
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
    if cfg.kind == "spikegpt":
        return _spikegpt(cfg, task, seed)
    raise ValueError(f"Unknown model.kind {cfg.kind!r}: use 'hf', 'tiny' or 'spikegpt'.")


def spikegpt_tokenizer(source: str) -> PreTrainedTokenizerFast:
    """GPT-NeoX-20B BPE from ``20B_tokenizer.json`` (a file), a directory or hub id; ``byte`` for tests.

    Padding is ``<|padding|>`` (id 1), on the right, as in the SpikeGPT recipes.
    """
    if source == "byte":
        return byte_level_tokenizer()
    path = Path(str(source)).expanduser()
    if path.is_file():
        tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    else:
        try:
            tok = AutoTokenizer.from_pretrained(str(source))
        except OSError as err:
            raise OSError(
                f"Could not load the SpikeGPT tokenizer {source!r}: {err}\nOffline, pass "
                "model.tokenizer=/path/to/20B_tokenizer.json (SpikeGPT's tools/20B_tokenizer.json, or the "
                "tokenizer.json of EleutherAI/gpt-neox-20b)."
            ) from err
    if "<|padding|>" in tok.get_vocab():
        tok.pad_token = "<|padding|>"
    elif tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.padding_side = "right"
    return tok


def _spikegpt(cfg: Any, task: TaskSpec, seed: int):
    from .spikegpt import SpikeGPT, SpikeGPTConfig

    if task.is_regression:
        raise ValueError(f"SpikeGPT has a classification head only; task {task.name!r} is a regression.")
    tokenizer = spikegpt_tokenizer(cfg.tokenizer)
    if cfg.get("checkpoint"):
        model = SpikeGPT.from_checkpoint(
            cfg.checkpoint, n_classes=task.num_labels, ctx_len=cfg.ctx_len, pooling=cfg.pooling
        )
        if model.cfg.vocab_size < len(tokenizer):
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the checkpoint's embedding only "
                f"{model.cfg.vocab_size}: use SpikeGPT's 20B_tokenizer.json."
            )
        return model, tokenizer
    config = SpikeGPTConfig(
        n_layer=cfg.n_layer,
        n_embd=cfg.n_embd,
        vocab_size=len(tokenizer),
        ctx_len=cfg.ctx_len,
        n_classes=task.num_labels,
        pooling=cfg.pooling,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SpikeGPT(config), tokenizer
