"""Which positions of the current batch are real tokens.

The LIF gate needs to know this twice: the temporal mode must not let padding charge the
membrane, and the sparsity counters must count real tokens only. Both read the mask from a
context variable instead of taking it as an argument, because PEFT calls the adapted layers
with the layer input alone. ``SpikeLoraModel.forward`` opens the context for every call from
the model's ``attention_mask`` (or, failing that, the shape of ``input_ids``), so callers
normally never touch this module; the trainer may set it explicitly too.

A call is "over tokens" when its activations have shape ``(batch, seq, r)`` matching the mask.
Anything else (DeBERTa's second pass of ``query_proj``/``key_proj`` over the 1 x 512
relative-position table, for instance) is not, and is counted apart.

Under ``torch.compile`` the mask lives in a plain module-level holder instead of the context
variable: TorchDynamo cannot trace ``ContextVar.get`` (every gate call would break the graph),
but it traces an attribute read and write. Eager code sets both, so a compiled region inside an
eager model reads the same mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import NamedTuple

import torch


class TokenMask(NamedTuple):
    """A boolean ``(batch, seq)`` mask of real tokens, as ``(batch, seq, 1)``, its count (on the
    device), and ``flag_mask``: ``(5, batch, seq, 1)``, ``mask3`` four times and then all true,
    which the gates' counters apply to their stacked flags in one operation."""

    mask: torch.Tensor
    mask3: torch.Tensor
    n_real: torch.Tensor
    flag_mask: torch.Tensor

    def matches(self, h: torch.Tensor) -> bool:
        """Whether ``h`` (``(batch, seq, r)``) is laid out over these tokens."""
        return h.dim() == 3 and h.shape[:2] == self.mask.shape


def make_token_mask(mask: torch.Tensor) -> TokenMask:
    """The :class:`TokenMask` of a ``(batch, seq)`` padding mask (nonzero = real)."""
    if mask.dim() != 2:
        raise ValueError(
            f"token_mask expects a (batch, seq) attention mask, got shape {tuple(mask.shape)}; "
            "pass the 2-D padding mask, not an expanded attention bias."
        )
    m = mask if mask.dtype == torch.bool else mask != 0
    m3 = m.unsqueeze(-1)
    flag_mask = torch.cat([m3.expand(4, *m3.shape), torch.ones((1, *m3.shape), dtype=torch.bool, device=m.device)])
    return TokenMask(mask=m, mask3=m3, n_real=m.sum(), flag_mask=flag_mask)


_CURRENT: ContextVar[TokenMask | None] = ContextVar("spikelora_token_mask", default=None)


class _Holder:
    """The current mask where TorchDynamo can trace it (see the module docstring)."""

    value: TokenMask | None = None


_COMPILED = _Holder()


def current_token_mask() -> TokenMask | None:
    """The mask of the innermost :func:`token_mask` context, or ``None`` outside any."""
    if torch.compiler.is_compiling():
        return _COMPILED.value
    return _CURRENT.get()


def set_token_mask(value: TokenMask | None) -> tuple[Token | None, TokenMask | None]:
    """Make ``value`` the current mask; returns the handle :func:`reset_token_mask` restores from."""
    previous = _COMPILED.value
    _COMPILED.value = value
    if torch.compiler.is_compiling():
        return None, previous
    return _CURRENT.set(value), previous


def reset_token_mask(handle: tuple[Token | None, TokenMask | None]) -> None:
    """Restore the mask that was current before the :func:`set_token_mask` that gave ``handle``."""
    token, previous = handle
    _COMPILED.value = previous
    if token is not None:
        _CURRENT.reset(token)


@contextmanager
def token_mask(mask: torch.Tensor | None) -> Iterator[TokenMask | None]:
    """Declare the real tokens of the batch being run: ``mask`` is ``(batch, seq)``, nonzero = real.

    ``None`` clears any outer mask (every call then counts as a token call).
    """
    value = None if mask is None else make_token_mask(mask)
    handle = set_token_mask(value)
    try:
        yield value
    finally:
        reset_token_mask(handle)
