"""SpikeLoRA as a PEFT method of its own, built on PEFT's LoRA tuner.

The pieces follow PEFT's design for LoRA variants such as DoRA:

* :class:`SpikeLoraConfig` — a ``LoraConfig`` with the gate's fields and its own
  ``peft_type="SPIKELORA"``, so a saved adapter reloads as SpikeLoRA (a ``LORA`` type would make
  PEFT drop the unknown fields and silently load plain LoRA).
* :class:`SpikeLoraVariant` — the computation ``result + scaling · B(gate(A(dropout(x))))``.
* :class:`SpikeLoraLinear` — ``lora.Linear`` that resolves that variant and holds one
  gate (:class:`~spikelora.neuron.Gate`, the LIF by default) per adapter in ``lora_spike``; it
  adapts ``nn.Linear`` and GPT-2's ``Conv1D`` (``fan_in_fan_out``). On a quantised base
  (bitsandbytes, QLoRA) the same gate lives in :class:`SpikeLoraLinear4bit` and
  :class:`SpikeLoraLinear8bitLt`, PEFT's own LoRA layers for those bases (their dtype handling
  of the compute type and the adapter), with the SpikeLoRA variant resolved in them.
* :class:`SpikeLoraModel` — ``LoraModel`` that refuses merging and opens the token-mask context
  (:mod:`spikelora.tokens`) on every forward.
* :class:`SpikeAdaLoraConfig`, :class:`SpikeAdaLoraModel`, :class:`SpikeSVDLinear` — the paper's
  Eq. 5 on PEFT's AdaLoRA (``peft_type="SPIKEADALORA"``): the same gate on AdaLoRA's low-rank
  activations ``Q · dropout(x)`` before ``P Λ``; plain AdaLoRA is untouched (no gate exists there).

The gate is any of :data:`spikelora.neuron.GATES` (``gate``, ``"lif"`` by default); see
:func:`spikelora.neuron.make_gate`.

Importing :mod:`spikelora` registers the type in PEFT's mappings, after which plain
``peft.get_peft_model`` and ``PeftModel.from_pretrained`` work as for LoRA.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import AdaLoraConfig, AdaLoraModel, LoraConfig, LoraModel, mapping
from peft.import_utils import is_bnb_4bit_available, is_bnb_available
from peft.tuners.adalora import SVDLinear
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora.layer import LoraLayer
from peft.tuners.lora.variants import LoraVariant
from peft.utils.error import NoMatchingPeftModuleError
from torch import nn
from transformers.pytorch_utils import Conv1D

from .neuron import Gate, make_gate
from .tokens import make_token_mask, reset_token_mask, set_token_mask

PEFT_TYPE = "SPIKELORA"
ADALORA_PEFT_TYPE = "SPIKEADALORA"

# The gate's fields: config field -> make_gate argument. The one list; the runner's adapter
# configs (conf/adapter/spike.yaml, spike_adalora.yaml) use the same config names.
GATE_FIELDS: dict[str, str] = {
    "gate": "gate",
    "v_threshold": "v_threshold",
    "tau": "tau",
    "surrogate_alpha": "surrogate_alpha",
    "decay_input": "decay_input",
    "spike_mode": "mode",
    "spike_reset": "reset",
    "learnable_threshold": "learnable_threshold",
    "learnable_tau": "learnable_tau",
    "two_sided": "two_sided",
    "temperature": "temperature",
    "topk": "topk",
    "target_sparsity": "target_sparsity",
    "temporal_impl": "temporal_impl",
}

MERGE_ERROR = (
    "SpikeLoRA adapters cannot be merged into the base weights: the LIF gate S(h) depends on each "
    "input, so B·(h ⊙ S(h)) is not a fixed matrix. Keep the adapter unmerged (PeftModel runs it as is), "
    "or use `unload()` to get the base model back without the adapter."
)


@dataclass
class GateConfig:
    """The gate's fields, shared by :class:`SpikeLoraConfig` and :class:`SpikeAdaLoraConfig`."""

    gate: str = field(
        default="lif",
        metadata={"help": "The gate on h = A·dropout(x): lif (default), threshold, relu, sigmoid, topk or random."},
    )
    v_threshold: float = field(
        default=0.1,
        metadata={
            "help": "Firing threshold V_θ (>= 0). With decay_input and spike_mode='step' the gate "
            "passes h where h >= tau * v_threshold."
        },
    )
    tau: float = field(default=2.0, metadata={"help": "Membrane time constant τ (> 1 where used)."})
    surrogate_alpha: float = field(default=2.0, metadata={"help": "Arctangent surrogate sharpness α."})
    decay_input: bool = field(
        default=True, metadata={"help": "Charge with h/τ (reference code) rather than h (paper Eq. 1)."}
    )
    spike_mode: str = field(
        default="step",
        metadata={"help": "'step': one LIF step from rest per call; 'temporal': tokens are time steps."},
    )
    spike_reset: str = field(
        default="hard", metadata={"help": "'hard' (to zero) or 'soft' (subtract V_θ); temporal mode."}
    )
    learnable_threshold: bool = field(default=False, metadata={"help": "Train V_θ, one scalar per module."})
    learnable_tau: bool = field(default=False, metadata={"help": "Train τ, one scalar per module."})
    two_sided: bool = field(
        default=False,
        metadata={"help": "Fire on |h| >= θ instead of h >= θ (lif step, threshold, relu, sigmoid, topk)."},
    )
    temperature: float | None = field(
        default=None,
        metadata={"help": "Sigmoid gate temperature t; null: τ/(2α) (decay_input) or 1/(2α), the surrogate's slope."},
    )
    topk: int | None = field(default=None, metadata={"help": "Topk gate: units kept per token."})
    target_sparsity: float | None = field(
        default=None,
        metadata={"help": "Topk gate: k = round(r(1 - s)); random gate: the drop rate. null: 0.5."},
    )
    temporal_impl: str = field(
        default="auto",
        metadata={
            "help": "Temporal LIF's loop over tokens: 'loop', 'spikingjelly' (SpikingJelly 2's fused multi-step "
            "LIFNode, equal to the loop) or 'auto' (spikingjelly where installed and V_θ, τ are fixed)."
        },
    )

    def make_gate(self, r: int | None = None) -> Gate:
        """A fresh gate for an adapter of rank ``r`` (default: the config's rank)."""
        return make_gate(
            **{GATE_FIELDS[f]: getattr(self, f) for f in GATE_FIELDS}, r=self._gate_rank() if r is None else r
        )

    def _gate_rank(self) -> int:
        return self.r


@dataclass
class SpikeLoraConfig(LoraConfig, GateConfig):
    """Configuration of a SpikeLoRA adapter: every ``LoraConfig`` field plus the gate (:class:`GateConfig`).

    The paper's setting is ``r=8, lora_alpha=sqrt(8), use_rslora=True`` (scaling 1 at every rank),
    ``lora_dropout=0``, ``gate="lif"`` and ``v_threshold=0.1``. Targets: ``nn.Linear``, GPT-2's
    ``Conv1D`` and bitsandbytes' ``Linear4bit`` / ``Linear8bitLt`` (QLoRA); any other layer type
    (``nn.Embedding``, convolutions) is refused before the model is changed.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PEFT_TYPE
        if self.r <= 0:
            raise ValueError(f"r must be a positive integer (the adapter rank), got r={self.r}.")
        bad_ranks = {k: v for k, v in (self.rank_pattern or {}).items() if v <= 0}
        if bad_ranks:
            raise ValueError(f"rank_pattern ranks must be positive, got {bad_ranks}.")
        # Building the gate checks every gate field (make_gate validates its arguments), at every rank.
        for r in {self.r, *(self.rank_pattern or {}).values()}:
            self.make_gate(r)
        for flag in ("use_dora", "use_bdlora", "use_qalora"):
            if getattr(self, flag, False):
                raise ValueError(f"SpikeLoRA cannot be combined with {flag}=True.")
        self._register_custom_module(_layer_classes())


class SpikeLoraVariant(LoraVariant):
    """``y = W x + scaling · B (h ⊙ S(h))`` with ``h = A · dropout(x)``; never mergeable."""

    def supports_lora_conversion(self) -> bool:
        return False

    @staticmethod
    def init(module: LoraLayer, adapter_name: str, config: SpikeLoraConfig, **kwargs: Any) -> None:
        weight = module.lora_A[adapter_name].weight
        module.lora_spike[adapter_name] = config.make_gate(module.r[adapter_name]).to(weight.device)

    @staticmethod
    def merge_safe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        raise ValueError(MERGE_ERROR)

    @staticmethod
    def merge_unsafe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> None:
        raise ValueError(MERGE_ERROR)

    @staticmethod
    def unmerge(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        raise ValueError(MERGE_ERROR)

    @staticmethod
    def forward(
        module: LoraLayer, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        h = module.lora_A[active_adapter](module.lora_dropout[active_adapter](x))
        gated = module.lora_spike[active_adapter](h)
        return add_b(result, gated, module.lora_B[active_adapter], module.scaling[active_adapter])


def add_b(result: torch.Tensor, gated: torch.Tensor, lora_b: nn.Module, scaling: float) -> torch.Tensor:
    """``result + scaling · B(gated)`` as one fused ``addmm`` (one kernel instead of three: the
    product, the scaling, the sum), out of place so that autograd and the base's output are as
    before. Falls back to the three ops where ``addmm`` does not apply as such (a bias on B, dtypes
    that only the separate ops would promote, a layout that is not (..., features))."""
    weight = getattr(lora_b, "weight", None)
    fusable = (
        isinstance(lora_b, nn.Linear)
        and lora_b.bias is None
        and gated.dim() >= 2
        and result.shape[:-1] == gated.shape[:-1]
        and (torch.is_autocast_enabled(result.device.type) or result.dtype == gated.dtype == weight.dtype)
    )
    if not fusable:
        return result + lora_b(gated) * scaling
    out = torch.addmm(
        result.reshape(-1, result.shape[-1]), gated.reshape(-1, gated.shape[-1]), weight.t(), alpha=scaling
    )
    return out.view(result.shape)


def zero_skip_b(gated: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, scaling: float) -> torch.Tensor:
    """``out += scaling · gated @ weightᵀ`` multiplying only the nonzero entries of ``gated`` (``(..., r)``).

    ``weight`` is B's ``(d_out, r)`` matrix; ``out`` (``(..., d_out)``) is updated in place and
    returned. The fired units are gathered (``nonzero``, which needs their count on the host: one
    sync per call) and each adds its row of ``Bᵀ`` to its token's output: ``fired · d_out`` MACs
    instead of ``N · r · d_out``.
    """
    flat = gated.reshape(-1, gated.shape[-1])
    rows, units = flat.nonzero(as_tuple=True)
    contrib = (flat[rows, units].unsqueeze(1) * weight.t()[units]).to(out.dtype)
    out.view(-1, out.shape[-1]).index_add_(0, rows, contrib, alpha=scaling)
    return out


class ZeroSkipSpikeLoraVariant(SpikeLoraVariant):
    """SpikeLoRA whose B product skips the units that did not fire; inference only (see :func:`set_zero_skip`).

    With gradients enabled it runs the dense path, so training is unchanged.
    """

    @staticmethod
    def forward(
        module: LoraLayer, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        if torch.is_grad_enabled():
            return SpikeLoraVariant.forward(module, active_adapter, x, result, **kwargs)
        h = module.lora_A[active_adapter](module.lora_dropout[active_adapter](x))
        gated = module.lora_spike[active_adapter](h)
        return zero_skip_b(gated, module.lora_B[active_adapter].weight, result, module.scaling[active_adapter])


def set_zero_skip(model: nn.Module, enabled: bool = True) -> int:
    """Run every SpikeLoRA adapter of ``model`` with the zero-skipping B product (or back to dense); returns how many.

    An inference option for very sparse gates on CPU: in ``scripts/bench_inference.py`` the
    skipping product alone beat the dense one only from about 95 % sparsity (d_out = 3072) or
    99 % (d_out = 768), and in the whole DeBERTaV3-base-shaped model the gain stayed within
    measurement noise (B is < 1 % of the model's MACs). It makes one host sync per adapted call
    (``nonzero``), which costs far more on a GPU. Outputs equal the dense path's up to float
    summation order; with gradients enabled the dense path runs.
    """
    variant = ZeroSkipSpikeLoraVariant() if enabled else SpikeLoraVariant()
    n = 0
    for module in model.modules():
        if is_spike_layer(module):
            for name in list(module.lora_variant):
                if isinstance(module.lora_variant[name], SpikeLoraVariant):
                    module.lora_variant[name] = variant
                    n += 1
    return n


class _SpikeLayer:
    """What makes a PEFT LoRA layer a SpikeLoRA one: a gate per adapter in ``lora_spike``, the
    SpikeLoRA variant, no merging. Mixed into PEFT's layer for each kind of base."""

    adapter_layer_names = (*LoraLinear.adapter_layer_names, "lora_spike")

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: LoraConfig, **kwargs: Any):
        if not hasattr(self, "lora_spike"):
            self.lora_spike = nn.ModuleDict()
        return super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)

    def resolve_lora_variant(self, *, config: LoraConfig, **kwargs: Any) -> LoraVariant:
        if not isinstance(config, SpikeLoraConfig):
            raise TypeError(
                f"{type(self).__name__} needs a SpikeLoraConfig, got {type(config).__name__}; "
                "plain LoRA and SpikeLoRA adapters cannot share a model."
            )
        return SpikeLoraVariant()

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        # Refuse before the parent loop could merge any other adapter of this layer.
        raise ValueError(MERGE_ERROR)

    def __repr__(self) -> str:
        return "spike" + super().__repr__()


class SpikeLoraLinear(_SpikeLayer, LoraLinear):
    """``lora.Linear`` whose adapters are SpikeLoRA: one LIF gate per adapter in ``lora_spike``."""


def _conv1d_layer(target: nn.Module, adapter_name: str, config: SpikeLoraConfig, **kwargs: Any) -> SpikeLoraLinear:
    """GPT-2's ``Conv1D`` (weight stored ``(in, out)``) as PEFT's default dispatch adapts it."""
    config.fan_in_fan_out = True  # the base weight's layout; the adapter's A and B are unchanged
    kwargs.update(fan_in_fan_out=True, is_target_conv_1d_layer=True)
    return SpikeLoraLinear(target, adapter_name, config=config, **kwargs)


def _bnb_layers() -> dict[type, Any]:
    """``{bitsandbytes layer: SpikeLoRA layer}`` where bitsandbytes is installed (an optional dependency)."""
    if not is_bnb_available():
        return {}
    bnb = importlib.import_module("bitsandbytes")
    peft_bnb = importlib.import_module("peft.tuners.lora.bnb")
    out: dict[type, Any] = {bnb.nn.Linear8bitLt: _spike_bnb_class("Linear8bitLt", peft_bnb.Linear8bitLt)}
    if is_bnb_4bit_available():
        out[bnb.nn.Linear4bit] = _spike_bnb_class("Linear4bit", peft_bnb.Linear4bit)
    return out


_BNB_CLASSES: dict[str, type] = {}


def quantised_lora_layers() -> tuple[type, ...]:
    """PEFT's LoRA and AdaLoRA layers for bitsandbytes bases (``lora.bnb.Linear4bit``, ``adalora.bnb.SVDLinear4bit``,
    their 8-bit twins); () without bitsandbytes."""
    if not is_bnb_available():
        return ()
    lora_bnb = importlib.import_module("peft.tuners.lora.bnb")
    adalora_bnb = importlib.import_module("peft.tuners.adalora.bnb")
    return tuple(
        getattr(module, name)
        for module, names in (
            (lora_bnb, ("Linear8bitLt", "Linear4bit")),
            (adalora_bnb, ("SVDLinear8bitLt", "SVDLinear4bit")),
        )
        for name in names
        if hasattr(module, name)
    )


def _spike_bnb_class(name: str, base: type) -> type:
    """``SpikeLoraLinear4bit`` / ``SpikeLoraLinear8bitLt``: PEFT's LoRA layer for that base with the gate."""
    if name not in _BNB_CLASSES:
        doc = f"PEFT's bitsandbytes ``lora.{name}`` whose adapters are SpikeLoRA (the gate in ``lora_spike``)."
        cls = type(f"SpikeLora{name}", (_SpikeLayer, base), {"__module__": __name__, "__doc__": doc})
        _BNB_CLASSES[name] = cls
    return _BNB_CLASSES[name]


def _layer_classes() -> dict[type, Any]:
    """Base layer type -> SpikeLoRA layer, most specific first (bitsandbytes layers are ``nn.Linear`` subclasses)."""
    return {**_bnb_layers(), Conv1D: _conv1d_layer, nn.Linear: SpikeLoraLinear}


def is_spike_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a SpikeLoRA layer (on any kind of base)."""
    return isinstance(module, _SpikeLayer)


def __getattr__(name: str) -> type:
    # SpikeLoraLinear4bit / SpikeLoraLinear8bitLt exist only where bitsandbytes does.
    if name in ("SpikeLoraLinear4bit", "SpikeLoraLinear8bitLt"):
        _bnb_layers()
        if name.removeprefix("SpikeLora") in _BNB_CLASSES:
            return _BNB_CLASSES[name.removeprefix("SpikeLora")]
        raise AttributeError(f"{name} needs bitsandbytes: pip install 'spikelora[qlora]' (or bitsandbytes).")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SpikeLoraModel(LoraModel):
    """``LoraModel`` for SpikeLoRA adapters (created by ``peft.get_peft_model``)."""

    def _create_new_module(self, lora_config, adapter_name, target, **kwargs):
        new_module = super()._create_new_module(lora_config, adapter_name, target, **kwargs)
        if not is_spike_layer(new_module):
            raise ValueError(_unsupported_message("a target module", target))
        return new_module

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        # Refuse an unsupported target before PEFT replaces any layer: the user's model stays as it was.
        config = self.peft_config[adapter_name]
        supported = tuple(_layer_classes())
        if not isinstance(config.target_modules, str) or config.target_modules != "all-linear":
            for name, module in model.named_modules():
                if name and self._check_target_module_exists(config, name):
                    base = module.get_base_layer() if isinstance(module, LoraLayer) else module
                    if not isinstance(base, supported):
                        raise ValueError(_unsupported_message(name, base))
        try:
            super().inject_adapter(model, adapter_name, *args, **kwargs)
        except NoMatchingPeftModuleError as err:
            targets = self.peft_config[adapter_name].target_modules
            targets = targets if isinstance(targets, str) else sorted(targets or [])
            names = sorted(
                {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))}
            )
            raise NoMatchingPeftModuleError(
                f"SpikeLoRA target_modules {targets!r} match no nn.Linear of "
                f"{type(model).__name__}. Its linear layers are named: {', '.join(names)} "
                "(or use target_modules='all-linear')."
            ) from err

    def _check_merge_allowed(self) -> None:
        raise ValueError(MERGE_ERROR)

    def add_weighted_adapter(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError("add_weighted_adapter combines LoRA weight products; SpikeLoRA's gated update has none.")

    def forward(self, *args: Any, **kwargs: Any):
        _refuse_temporal_cache(self.peft_config.values(), kwargs)
        return _with_token_mask(super().forward, args, kwargs)

    def generate(self, *args: Any, **kwargs: Any):
        """The wrapped model's ``generate``, every step of it with its token mask current (each
        generated token is counted once, padding never) and the temporal gate's cache check: the
        decoding loop calls the wrapped model itself, not :meth:`forward`."""
        pending: list[Any] = []

        def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
            _refuse_temporal_cache(self.peft_config.values(), kwargs)
            mask = _batch_token_mask(args, kwargs)
            pending.append(set_token_mask(None if mask is None else make_token_mask(mask)))

        def after(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if pending:
                reset_token_mask(pending.pop())

        hooks = [
            self.model.register_forward_pre_hook(before, with_kwargs=True),
            self.model.register_forward_hook(after, with_kwargs=True, always_call=True),
        ]
        try:
            return self.model.generate(*args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()


def _unsupported_message(name: str, layer: nn.Module) -> str:
    kind = type(layer).__name__
    why = (
        " An embedding's 'activations' are rows looked up by token id, not A·x: no gate applies."
        if isinstance(layer, nn.Embedding)
        else ""
    )
    return (
        f"SpikeLoRA adapts nn.Linear, GPT-2's Conv1D and bitsandbytes' Linear4bit/Linear8bitLt layers; "
        f"{name} is a {kind} ({layer}).{why} Remove it from target_modules (name the linear layers, or use "
        "target_modules='all-linear'); to train the embedding in full, list it in modules_to_save."
    )


def _refuse_temporal_cache(configs: Any, kwargs: dict) -> None:
    """Temporal SpikeLoRA integrates the membrane over a sequence's tokens; a KV cache feeds only
    the new token, so the membrane would restart from rest at every generated token."""
    cache = kwargs.get("past_key_values", kwargs.get("cache"))  # transformers 5 also names it ``cache``
    if cache is None or not any(getattr(c, "spike_mode", "step") == "temporal" for c in configs):
        return
    length = cache.get_seq_length() if hasattr(cache, "get_seq_length") else len(cache)
    if length:
        raise ValueError(
            "spike_mode='temporal' carries the LIF membrane across the tokens of a sequence, but with a KV "
            "cache each step runs only the new token and the membrane would restart from rest. Generate with "
            "use_cache=False (every step re-runs the whole sequence, so the membrane is exact), or use "
            "spike_mode='step' (stateless per token, cache-safe)."
        )


def _with_token_mask(forward: Any, args: tuple, kwargs: dict) -> Any:
    """``forward(*args, **kwargs)`` with the batch's token mask current. Plain set/reset rather
    than a ``with`` block: TorchDynamo traces it without a graph break."""
    mask = _batch_token_mask(args, kwargs)
    handle = set_token_mask(None if mask is None else make_token_mask(mask))
    try:
        return forward(*args, **kwargs)
    finally:
        reset_token_mask(handle)


def _batch_token_mask(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The 2-D mask of real tokens for this call, from ``attention_mask`` or the input's shape.

    With a KV cache, ``attention_mask`` covers the cached tokens too (Hugging Face's convention):
    the tokens of this call are its last columns, so each generated token is counted once."""
    mask = kwargs.get("attention_mask")
    ids = kwargs.get("input_ids")
    if ids is None and args and isinstance(args[0], torch.Tensor):
        ids = args[0]
    embeds = kwargs.get("inputs_embeds")
    shape = None
    if isinstance(ids, torch.Tensor) and ids.dim() == 2:
        shape = ids.shape
    elif isinstance(embeds, torch.Tensor) and embeds.dim() == 3:
        shape = embeds.shape[:2]
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        if shape is not None and mask.shape[0] == shape[0] and mask.shape[1] > shape[1]:
            return mask[:, -shape[1] :]
        return mask
    if shape is not None:
        device = (ids if isinstance(ids, torch.Tensor) and ids.dim() == 2 else embeds).device
        return torch.ones(shape, dtype=torch.bool, device=device)
    return None


# ---------------------------------------------------------------------------------- AdaLoRA
@dataclass
class SpikeAdaLoraConfig(AdaLoraConfig, GateConfig):
    """The paper's Eq. 5 done on PEFT's AdaLoRA: every ``AdaLoraConfig`` field plus the gate.

    AdaLoRA's update is ``P Λ Q x`` (PEFT: ``lora_B``, ``lora_E``, ``lora_A``). The gate acts on
    the low-rank activations ``h = Q · dropout(x)``, as SpikeLoRA's on ``A · dropout(x)``::

        Δ x = P Λ (h ⊙ S(h)) · scaling / ranknum

    (gating after Λ would gate nothing at first: AdaLoRA starts with Λ = 0, so ``Λ h`` is 0 and
    neither the gate nor its surrogate gradient could pass anything). The gate is the one of
    :class:`SpikeLoraConfig` (any of ``GATES``, the LIF by default, with its surrogate gradient),
    one per adapted module, stateless between calls (the LIF starts from rest on every call).
    Plain AdaLoRA (``peft.AdaLoraConfig``) builds no gate at all. The gate's rank is ``init_r``.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = ADALORA_PEFT_TYPE
        if self.init_r <= 0 or self.target_r <= 0 or self.target_r > self.init_r:
            raise ValueError(
                f"AdaLoRA ranks must satisfy 0 < target_r <= init_r, got target_r={self.target_r}, init_r={self.init_r}."
            )
        self.make_gate()  # checks every gate field

    def _gate_rank(self) -> int:
        return self.init_r


class SpikeSVDLinear(SVDLinear):
    """AdaLoRA's ``SVDLinear`` with a gate per adapter in ``lora_spike`` on ``Q · dropout(x)``; never mergeable."""

    adapter_layer_names = (*SVDLinear.adapter_layer_names, "lora_spike")

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: AdaLoraConfig, **kwargs: Any) -> None:
        if not isinstance(config, SpikeAdaLoraConfig):
            raise TypeError(
                f"SpikeSVDLinear needs a SpikeAdaLoraConfig, got {type(config).__name__}; "
                "plain AdaLoRA and SpikeAdaLoRA adapters cannot share a model."
            )
        if not hasattr(self, "lora_spike"):
            self.lora_spike = nn.ModuleDict()
        super().update_layer(adapter_name, r, lora_alpha, config=config, **kwargs)
        # A fresh gate (also when PEFT resizes the layer to a saved rank pattern; learnable V_θ / τ
        # are loaded with the weights afterwards). Its rank is the config's init_r.
        self.lora_spike[adapter_name] = config.make_gate().to(self.lora_A[adapter_name].device)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(MERGE_ERROR)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        raise ValueError(MERGE_ERROR)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters or self.merged:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        for active_adapter in self.active_adapters:
            if active_adapter not in self.lora_A:
                continue
            lora_A = self.lora_A[active_adapter]
            lora_B = self.lora_B[active_adapter]
            lora_E = self.lora_E[active_adapter]
            dropout = self.lora_dropout[active_adapter]
            scaling = self.scaling[active_adapter]
            ranknum = self.ranknum[active_adapter] + 1e-5
            x = self._cast_input_dtype(x, lora_A.dtype)
            h = dropout(x) @ lora_A.T
            gated = self.lora_spike[active_adapter](h)
            result += ((gated * lora_E.T) @ lora_B.T) * scaling / ranknum
        return result

    def __repr__(self) -> str:
        return "spike" + super().__repr__()


class SpikeAdaLoraModel(AdaLoraModel):
    """``AdaLoraModel`` for SpikeAdaLoRA adapters: gated ``SVDLinear`` layers, no merging, the token mask."""

    @staticmethod
    def _create_new_module(lora_config, adapter_name, target, device_map=None, **kwargs):
        base = target.get_base_layer() if isinstance(target, LoraLayer) else target
        if not isinstance(base, nn.Linear) or kwargs.get("loaded_in_8bit") or kwargs.get("loaded_in_4bit"):
            raise ValueError(
                f"SpikeAdaLoRA supports (unquantised) nn.Linear targets only, but a target module is a "
                f"{type(base).__name__}: {target}. Remove it from target_modules."
            )
        kwargs.pop("loaded_in_8bit", None)
        kwargs.pop("loaded_in_4bit", None)
        kwargs.pop("gptq_quantization_config", None)
        return SpikeSVDLinear(target, adapter_name, config=lora_config, **kwargs)

    def _check_merge_allowed(self) -> None:
        raise ValueError(MERGE_ERROR)

    def add_weighted_adapter(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError("add_weighted_adapter is not supported for SpikeAdaLoRA (nor for AdaLoRA).")

    def forward(self, *args: Any, **kwargs: Any):
        return _with_token_mask(super().forward, args, kwargs)


def register() -> None:
    """Make ``peft_type="SPIKELORA"`` and ``"SPIKEADALORA"`` known to PEFT (idempotent; done on ``import spikelora``)."""
    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[PEFT_TYPE] = SpikeLoraConfig
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[PEFT_TYPE] = SpikeLoraModel
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[PEFT_TYPE] = SpikeLoraModel.prefix
    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[ADALORA_PEFT_TYPE] = SpikeAdaLoraConfig
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[ADALORA_PEFT_TYPE] = SpikeAdaLoraModel
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[ADALORA_PEFT_TYPE] = SpikeAdaLoraModel.prefix


register()  # importing the method makes it known to PEFT (see spikelora/__init__.py)
