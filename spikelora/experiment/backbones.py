"""The ``model`` config group as objects: each ``conf/model/*.yaml`` names a :class:`Backbone` class
in ``_target_`` and Hydra's ``instantiate`` builds it.

``kind: hf`` (:class:`HFBackbone`) loads any sequence-classification model and its tokenizer by
hub id or local path (``model.name_or_path``); ``kind: tiny`` (:class:`TinyBackbone`) builds a
small DeBERTa-v2 from a config with a byte-level tokenizer made in code, so nothing is
downloaded; ``kind: spikegpt`` (:class:`SpikeGPTBackbone`) loads a SpikeGPT checkpoint (or
builds a random one from its sizes) with the GPT-NeoX-20B tokenizer.

A new backbone is one YAML file plus one subclass with ``build``; what it reads from disk it
names in ``local_sources`` (their content enters the run identity).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from ..models.spikegpt import SpikeGPT, SpikeGPTConfig
from .provenance import path_fingerprint
from .tasks import TaskSpec

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


def tiny_deberta(shape: Any, num_labels: int, vocab_size: int, seed: int) -> DebertaV2ForSequenceClassification:
    """A small DeBERTa-v3-shaped classifier, randomly initialised."""
    config = deberta_v3_config(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        intermediate_size=shape.intermediate_size,
        position_buckets=64,
        num_labels=num_labels,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return DebertaV2ForSequenceClassification(config)


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


@functools.lru_cache(maxsize=32)
def _auto_config(source: str) -> Any:
    """A model's config, read once per source and process (planning asks for its positions and width)."""
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError):
        return None  # not reachable now: loading the model will say so


def is_local_path(value: str) -> bool:
    """Whether a model/tokenizer source names a local path rather than a hub id."""
    return value.startswith(("/", "./", "../", "~")) or Path(value).expanduser().exists()


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@dataclass(frozen=True)
class Backbone:
    """The base model of a run: how to build it, what it adapts and what it reads from disk."""

    kind: str
    name: str
    target_modules: Any = "all-linear"
    modules_to_save: list[str] | None = None
    hub_id: str | None = None  # the base model's hub id, for model cards, when the source is a local copy

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, (list, tuple)):
            object.__setattr__(self, "target_modules", list(self.target_modules))
        if self.modules_to_save is not None:
            object.__setattr__(self, "modules_to_save", list(self.modules_to_save))

    def local_sources(self) -> dict[str, Path]:
        """``{config key: local path}`` of what the model is read from (its content is fingerprinted)."""
        return {}

    def check(self) -> None:
        """Raise ``ValueError`` naming the fix when the model cannot be had on this machine."""
        for key, path in self.local_sources().items():
            if not path.exists():
                raise ValueError(f"model.{key}={path}: no such file or directory. Point it at a local copy.")

    def max_positions(self) -> int | None:
        """The longest input the model takes (None: unknown)."""
        return None

    def width(self) -> int | None:
        """The hidden size of the adapted layers (None: unknown): no rank above it can be meant."""
        return None

    def build(self, task: TaskSpec, seed: int) -> tuple[Any, Any]:
        """(model, tokenizer) for ``task``."""
        raise NotImplementedError

    def content(self) -> dict[str, Any]:
        """The fingerprint of every local source (sha256 of its config and weight files)."""
        return {key: path_fingerprint(path) for key, path in sorted(self.local_sources().items())}

    def fingerprint(self, model: Any) -> dict[str, Any]:
        """Identifier and fingerprint of the built model, for the record's provenance."""
        sources = self.local_sources()
        source = getattr(self, "name_or_path", None) or getattr(self, "checkpoint", None)
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "source": source}
        if self.hub_id:
            out["hub_id"] = self.hub_id
        main = sources.get("name_or_path") or sources.get("checkpoint")
        if main is not None and main.exists():
            out["files_sha256"] = path_fingerprint(main)
        elif source:
            out["hub_commit"] = getattr(getattr(model, "config", None), "_commit_hash", None)
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_json_string"):
            text = config.to_json_string(use_diff=False)
        else:
            text = json.dumps(getattr(config, "__dict__", {}) or {}, sort_keys=True, default=str)
        out["config_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        return out


@dataclass(frozen=True)
class HFBackbone(Backbone):
    """Any Hugging Face sequence-classification model, by hub id or local directory."""

    kind: str = "hf"
    name: str = "hf"
    name_or_path: str = ""

    def local_sources(self) -> dict[str, Path]:
        value = str(self.name_or_path)
        return {"name_or_path": Path(value).expanduser()} if is_local_path(value) else {}

    def check(self) -> None:
        super().check()
        if not self.local_sources() and hub_offline():
            raise ValueError(
                f"model.name_or_path={self.name_or_path} is not a local directory and the hub is offline "
                "(HF_HUB_OFFLINE is set): download it once and pass its local directory."
            )

    def _config(self) -> Any:
        return _auto_config(str(self.name_or_path))

    def max_positions(self) -> int | None:
        limit = getattr(self._config(), "max_position_embeddings", None)
        return int(limit) if isinstance(limit, int) and limit > 0 else None

    def width(self) -> int | None:
        size = getattr(self._config(), "hidden_size", None)
        return int(size) if isinstance(size, int) and size > 0 else None

    def build(self, task: TaskSpec, seed: int) -> tuple[PreTrainedModel, Any]:
        source = str(self.name_or_path)
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


@dataclass(frozen=True)
class TinyBackbone(Backbone):
    """A small random DeBERTa-v3-shaped classifier with a byte-level tokenizer: runs anywhere, offline."""

    kind: str = "tiny"
    name: str = "tiny"
    name_or_path: str | None = None
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 128

    def max_positions(self) -> int:
        return 512  # deberta_v3_config's max_position_embeddings and the byte tokenizer's limit

    def width(self) -> int:
        return int(self.hidden_size)

    def build(self, task: TaskSpec, seed: int) -> tuple[PreTrainedModel, Any]:
        tokenizer = byte_level_tokenizer()
        return tiny_deberta(self, task.num_labels, len(tokenizer), seed), tokenizer


@dataclass(frozen=True)
class SpikeGPTBackbone(Backbone):
    """SpikeGPT (:mod:`spikelora.models.spikegpt`): from a checkpoint, or random from its sizes."""

    kind: str = "spikegpt"
    name: str = "spikegpt"
    checkpoint: str | None = None
    tokenizer: str = "byte"
    n_layer: int | None = None
    n_embd: int | None = None
    ctx_len: int = 1024
    pooling: str = "last_token"
    wkv: str = "auto"
    lif: str = "auto"

    def local_sources(self) -> dict[str, Path]:
        out = {}
        for key in ("checkpoint", "tokenizer"):
            value = getattr(self, key)
            if value and value != "byte" and is_local_path(str(value)):
                out[key] = Path(str(value)).expanduser()
        return out

    def max_positions(self) -> int:
        return int(self.ctx_len)

    def width(self) -> int | None:
        return int(self.n_embd) if self.n_embd else None

    def build(self, task: TaskSpec, seed: int) -> tuple[Any, Any]:
        return _spikegpt(self, task, seed)


def _spikegpt(backbone: SpikeGPTBackbone, task: TaskSpec, seed: int) -> tuple[SpikeGPT, Any]:
    if task.is_regression:
        raise ValueError(f"SpikeGPT has a classification head only; task {task.name!r} is a regression.")
    tokenizer = spikegpt_tokenizer(backbone.tokenizer)
    if backbone.checkpoint:
        model = SpikeGPT.from_checkpoint(
            backbone.checkpoint,
            n_classes=task.num_labels,
            ctx_len=backbone.ctx_len,
            pooling=backbone.pooling,
            wkv=backbone.wkv,
            lif=backbone.lif,
        )
        if model.cfg.vocab_size < len(tokenizer):
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the checkpoint's embedding only "
                f"{model.cfg.vocab_size}: use SpikeGPT's 20B_tokenizer.json."
            )
        return model, tokenizer
    config = SpikeGPTConfig(
        n_layer=backbone.n_layer,
        n_embd=backbone.n_embd,
        vocab_size=len(tokenizer),
        ctx_len=backbone.ctx_len,
        n_classes=task.num_labels,
        pooling=backbone.pooling,
        wkv=backbone.wkv,
        lif=backbone.lif,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SpikeGPT(config), tokenizer
