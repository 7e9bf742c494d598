"""The feature-map shapes of a model input: what the PRN head is built with and what the memory estimate counts,
from one place (prn_edge.model.memory must know them before a model exists)."""
from __future__ import annotations

from .backbones import STRIDES

# The head works on the encoder scales at strides 4, 8 and 16; stride 2 only feeds a decoder skip.
HEAD_SCALES = (1, 2, 3)


def head_hws(hw: tuple[int, int]) -> list[tuple[int, int]]:
    """(h, w) of each head scale's feature map for a model input of hw = (height, width)."""
    return [(hw[0] // STRIDES[s], hw[1] // STRIDES[s]) for s in HEAD_SCALES]


def attention_sizes(patch_sizes: tuple[int, ...], hw: tuple[int, int]) -> tuple[int, ...]:
    """The multi-size attention patch sizes a feature map of hw keeps: those that tile it exactly (a larger patch
    would be one token attending to itself; one that does not divide a side cannot tile it). (1,) when none does."""
    return tuple(p for p in patch_sizes if hw[0] % p == 0 and hw[1] % p == 0) or (1,)
