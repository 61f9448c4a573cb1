"""Layers shared by several model families."""

from __future__ import annotations

import jax


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
    """(N, H, W, b*b*C) with channels ordered (row phase, column phase, C) -> (N, b*H, b*W, C): each pixel's
    channels become a b x b patch (the "sub-pixel convolution" / pixel shuffle)."""
    n, h, w, c = x.shape
    out = c // (block * block)
    x = x.reshape(n, h, w, block, block, out)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * block, w * block, out)
