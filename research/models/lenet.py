"""A LeNet-style convolutional classifier: the evaluator network for generated digits.

Two 5x5 conv + ReLU + 2x2 max-pool blocks, a ReLU feature layer (whose activations the Fréchet distance
compares) and a linear classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax


class LeNet(nn.Module):
    num_classes: int = 10
    widths: Sequence[int] = (16, 32)
    feature_dim: int = 128
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """(logits, features) for NHWC images in [0, 1]."""
        for width in self.widths:
            x = nn.relu(nn.Conv(width, (5, 5), padding="SAME")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        features = nn.relu(nn.Dense(self.feature_dim)(x.reshape(x.shape[0], -1)))
        h = nn.Dropout(self.dropout, deterministic=not train)(features) if self.dropout else features
        return nn.Dense(self.num_classes)(h), features
