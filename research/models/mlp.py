"""Multi-layer perceptron for classification (logits) and regression (outputs); inputs are flattened."""

from collections.abc import Sequence

import flax.linen as nn
import jax

from research.models.activations import activation


class MLP(nn.Module):
    """Dense -> [BatchNorm] -> activation -> [Dropout] per hidden layer, then a linear output layer."""

    hidden: Sequence[int]
    out_dim: int
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        act = activation(self.activation)
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.Dense(width, use_bias=not self.batch_norm)(x)  # BN's shift replaces the bias
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = act(x)
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.out_dim)(x)
