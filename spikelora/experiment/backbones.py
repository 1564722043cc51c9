"""The ``model`` config group as objects: each ``conf/model/*.yaml`` names a :class:`Backbone` class
in ``_target_`` and Hydra's ``instantiate`` builds it.

``kind: hf`` (:class:`HFBackbone`) loads any sequence-classification model and its tokenizer by
hub id or local path (``model.name_or_path``); ``kind: tiny`` (:class:`TinyBackbone`) builds a
small DeBERTa-v2 from a config with a byte-level tokenizer made in code, so nothing is
downloaded; ``kind: spikegpt`` (:class:`SpikeGPTBackbone`) loads a SpikeGPT checkpoint (or
builds a random one from its sizes) with the GPT-NeoX-20B tokenizer.

A new backbone is one YAML file plus one subclass with ``build``; what it reads from disk it
names in ``local_sources`` (their content enters the run identity).

Every backbone can be quantised (QLoRA): ``model.quantization=nf4|fp4|int8`` with
``model.compute_dtype`` beside it. A hub or local Hugging Face model is loaded quantised by
``from_pretrained(quantization_config=BitsAndBytesConfig(...))``, as its users load it; a model
built from a config (``tiny``, ``tiny_decoder``, SpikeGPT) has its linears swapped for
bitsandbytes' in place (:func:`quantise_linears`). Either way the head (``modules_to_save``) stays
in full precision and the model is prepared for k-bit training (PEFT's
``prepare_model_for_kbit_training``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import prepare_model_for_kbit_training
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForSequenceClassification,
)

from ..models.spikegpt import SpikeGPT, SpikeGPTConfig
from .provenance import path_fingerprint
from .tasks import TaskSpec

SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
QUANTIZATIONS = ("nf4", "fp4", "int8")
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def bitsandbytes_config(quantization: str, compute_dtype: str, skip: list[str] | None) -> BitsAndBytesConfig:
    """The ``BitsAndBytesConfig`` of ``model.quantization`` (the head modules ``skip`` stay in full precision).

    A name in ``skip`` matches that module anywhere in the model (``pooler`` is ``bert.pooler``), as
    PEFT's ``modules_to_save`` does; transformers alone matches from the root or a name's end only."""
    skip = [rf"(?:.*\.)?{re.escape(s)}" for s in skip or []]
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization,
        bnb_4bit_compute_dtype=COMPUTE_DTYPES[compute_dtype],
        llm_int8_skip_modules=skip,
    )


def _skipped(name: str, skip: list[str]) -> bool:
    parts = name.split(".")
    return any(s in parts or name == s or name.endswith("." + s) for s in skip)


def quantise_linears(model: nn.Module, quantization: str, compute_dtype: str, skip: list[str] | None) -> int:
    """Replace every ``nn.Linear`` of ``model`` outside ``skip`` by its bitsandbytes counterpart
    (``Linear4bit`` NF4/FP4 or ``Linear8bitLt``), quantising its weight; returns how many.

    What ``from_pretrained(quantization_config=...)`` does for a checkpoint, for a model built
    from a config. Marks the model ``is_loaded_in_4bit`` / ``is_loaded_in_8bit``, the attributes
    PEFT reads to dispatch its quantised LoRA layers."""
    bnb = importlib.import_module("bitsandbytes")
    skip = list(skip or [])
    n = 0
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if type(child) is not nn.Linear or _skipped(full, skip):
                continue
            device = child.weight.device
            if quantization == "int8":
                new = bnb.nn.Linear8bitLt(
                    child.in_features, child.out_features, bias=child.bias is not None, has_fp16_weights=False
                )
                new.weight = bnb.nn.Int8Params(child.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=COMPUTE_DTYPES[compute_dtype],
                    quant_type=quantization,
                )
                new.weight = bnb.nn.Params4bit(child.weight.data.clone(), requires_grad=False, quant_type=quantization)
            if child.bias is not None:
                new.bias = nn.Parameter(child.bias.data.clone(), requires_grad=False)
            setattr(parent, child_name, new.to(device))  # moving a bitsandbytes layer quantises its weight
            n += 1
    model.is_loaded_in_4bit = quantization != "int8"
    model.is_loaded_in_8bit = quantization == "int8"
    return n


@dataclass(frozen=True)
class Backbone:
    """The base model of a run: how to build it, what it adapts and what it reads from disk.

    ``quantization`` (``nf4``, ``fp4``, ``int8``; None: full precision) quantises the base for
    QLoRA, computing in ``compute_dtype``; the modules in ``modules_to_save`` stay in full precision.
    """

    kind: str
    name: str
    target_modules: Any = "all-linear"
    modules_to_save: list[str] | None = None
    hub_id: str | None = None  # the base model's hub id, for model cards, when the source is a local copy
    quantization: str | None = None
    compute_dtype: str = "float32"

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, (list, tuple)):
            object.__setattr__(self, "target_modules", list(self.target_modules))
        if self.modules_to_save is not None:
            object.__setattr__(self, "modules_to_save", list(self.modules_to_save))
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"model.quantization must be one of {', '.join(QUANTIZATIONS)} or null (full precision), "
                f"got {self.quantization!r}."
            )
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"model.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype!r}."
            )
        if self.quantization is None and self.compute_dtype != "float32":
            raise ValueError(
                f"model.compute_dtype={self.compute_dtype} is the compute type of a quantised base: set "
                "model.quantization=nf4|fp4|int8 too (for mixed precision on a float base, use trainer.bf16=true)."
            )
        if self.quantization == "int8" and self.compute_dtype != "float32":
            raise ValueError(
                "model.compute_dtype applies to 4-bit bases (nf4, fp4); bitsandbytes' int8 layers choose their own "
                "(float16): leave model.compute_dtype=float32 with model.quantization=int8."
            )

    def local_sources(self) -> dict[str, Path]:
        """``{config key: local path}`` of what the model is read from (its content is fingerprinted)."""
        return {}

    def check(self) -> None:
        """Raise ``ValueError`` naming the fix when the model cannot be had on this machine."""
        for key, path in self.local_sources().items():
            if not path.exists():
                raise ValueError(f"model.{key}={path}: no such file or directory. Point it at a local copy.")
        if self.quantization is not None and importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError(
                f"model.quantization={self.quantization} needs bitsandbytes: pip install 'spikelora[qlora]' "
                "(bitsandbytes >= 0.46 runs on CPU too)."
            )

    def full_precision_modules(self) -> list[str]:
        """What a quantised base keeps in full precision: the head and whatever trains in full
        (``modules_to_save``; PEFT's classification heads when that is null)."""
        return list(self.modules_to_save or ["classifier", "score"])

    def quantisation_label(self) -> str | None:
        """``nf4``, ``nf4-bfloat16``, ``int8`` ... (None: full precision): the base's precision in run names."""
        if self.quantization is None:
            return None
        return self.quantization if self.compute_dtype == "float32" else f"{self.quantization}-{self.compute_dtype}"

    def quantise(self, model: nn.Module) -> nn.Module:
        """The built model ready for QLoRA: quantised (in place unless it was loaded so) and prepared
        for k-bit training; unchanged where ``quantization`` is None."""
        if self.quantization is None:
            return model
        loaded = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        if not loaded and not quantise_linears(
            model, self.quantization, self.compute_dtype, self.full_precision_modules()
        ):
            raise ValueError(f"model.quantization={self.quantization}: model {self.name} has no nn.Linear to quantise.")
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)

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
        if self.quantization is not None:
            out["quantization"] = {
                "scheme": self.quantization,
                "compute_dtype": self.compute_dtype,
                "full_precision": self.full_precision_modules(),
            }
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
        quantised = {}
        if self.quantization is not None:
            quantised["quantization_config"] = bitsandbytes_config(
                self.quantization, self.compute_dtype, self.full_precision_modules()
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForSequenceClassification.from_pretrained(
                source,
                num_labels=task.num_labels,
                problem_type="regression" if task.is_regression else "single_label_classification",
                **quantised,
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


# Per decoder family: the classifier built from a config, and the layers SpikeLoRA adapts (every
# projection of attention and MLP; GPT-2's are Conv1D layers, adapted with fan_in_fan_out).
DECODER_FAMILIES: dict[str, tuple[Any, Any]] = {
    "llama": (LlamaConfig, LlamaForSequenceClassification),
    "qwen2": (Qwen2Config, Qwen2ForSequenceClassification),
    "gpt2": (GPT2Config, GPT2ForSequenceClassification),
}
DECODER_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}


def tiny_decoder(family: str, shape: Any, num_labels: int, vocab_size: int, pad_token_id: int, seed: int) -> Any:
    """A small random decoder classifier of ``family``: pooled at the last real token (``pad_token_id``)."""
    if family not in DECODER_FAMILIES:
        raise ValueError(f"model.family must be one of {', '.join(DECODER_FAMILIES)}, got {family!r}.")
    config_cls, model_cls = DECODER_FAMILIES[family]
    if family == "gpt2":
        config = config_cls(
            vocab_size=vocab_size,
            n_embd=shape.hidden_size,
            n_layer=shape.num_hidden_layers,
            n_head=shape.num_attention_heads,
            n_inner=shape.intermediate_size,
            n_positions=512,
        )
    else:
        config = config_cls(
            vocab_size=vocab_size,
            hidden_size=shape.hidden_size,
            intermediate_size=shape.intermediate_size,
            num_hidden_layers=shape.num_hidden_layers,
            num_attention_heads=shape.num_attention_heads,
            num_key_value_heads=max(1, shape.num_attention_heads // 2),
            max_position_embeddings=512,
        )
    config.num_labels = num_labels
    config.pad_token_id = pad_token_id  # the classifier pools the last token that is not padding
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_cls(config)


@dataclass(frozen=True)
class TinyDecoderBackbone(Backbone):
    """A small random Llama-, Qwen2- or GPT-2-style classifier with the byte-level tokenizer, offline."""

    kind: str = "tiny_decoder"
    name: str = "tiny_llama"
    family: str = "llama"
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family not in DECODER_FAMILIES:
            raise ValueError(f"model.family must be one of {', '.join(DECODER_FAMILIES)}, got {self.family!r}.")

    def max_positions(self) -> int:
        return 512

    def width(self) -> int:
        return int(self.hidden_size)

    def build(self, task: TaskSpec, seed: int) -> tuple[PreTrainedModel, Any]:
        tokenizer = byte_level_tokenizer()
        tokenizer.padding_side = "right"
        model = tiny_decoder(self.family, self, task.num_labels, len(tokenizer), tokenizer.pad_token_id, seed)
        return model, tokenizer


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
