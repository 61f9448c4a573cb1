"""LeNet-style convolutional classifiers: the evaluator network for generated digits, and the MLP family's `cnn` and
`lenet` architectures.

`LeNet` is conv blocks (k x k conv -> activation -> 2x2 pool, stride 2), dense feature layers with the same
activation, optional dropout and a linear classifier; it returns (logits, features), the features being the last
feature layer's activations (the flattened conv maps when there is none), which the Fréchet distance compares. Its
defaults are the feature classifier's network (`research/metrics/feature_classifier.py`): two 5x5 SAME conv + ReLU +
max-pool blocks of 16 and 32 channels and a 128-unit ReLU feature layer.

`ConvClassifier` is a LeNet returning the logits alone, what the supervised task trains. `conv_classifier(name)`
builds the MLP family's two architectures (`ARCHITECTURES`):

- `cnn`: the Keras "Simple MNIST convnet" (keras.io/examples/vision/mnist_convnet): 32 then 64 3x3 VALID
  convolutions with ReLU, each followed by a 2x2 max-pool, flattened, dropout (the example's 0.5 is
  `--dropout=0.5`), a dense softmax layer. 28x28 inputs: 26 -> 13 -> 11 -> 5, 1,600 features, 34,826 parameters.
  Dense layers between the convolutions and the output can be added (`hidden`, e.g. 128 as in PyTorch's MNIST
  example's head).
- `lenet`: LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998) on 28x28 inputs: C1 6 5x5 maps (SAME padding: the
  paper's 32x32 input is the 28x28 digit with a 2-pixel border), S2 2x2 average pooling, C3 16 5x5 VALID maps,
  S4 average pooling, C5 120 units (dense over the 5x5x16 maps, which is what a 5x5 convolution there is), F6 84
  units, 10 outputs; tanh throughout; 61,706 parameters. Unlike the paper: plain tanh instead of 1.7159 tanh(2a/3),
  subsampling is a plain average (no trainable coefficient and bias per map), every C3 map sees all six S2 maps
  (no connection table), and the output is a softmax over logits instead of Euclidean RBF units.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from research.errors import ConfigError
from research.models.activations import activation

POOLS = {"max": nn.max_pool, "avg": nn.avg_pool}


class LeNet(nn.Module):
    num_classes: int = 10
    widths: Sequence[int] = (16, 32)
    feature_dim: int | Sequence[int] = 128   # one feature layer, or several (the last one's output are the features)
    dropout: float = 0.0
    kernel: int = 5
    padding: str | Sequence[str] = "SAME"   # of every conv, or one per conv
    pool: str = "max"                        # max | avg
    activation: str = "relu"

    def _paddings(self) -> tuple[str, ...]:
        return (self.padding,) * len(self.widths) if isinstance(self.padding, str) else tuple(self.padding)

    def _feature_dims(self) -> tuple[int, ...]:
        return (self.feature_dim,) if isinstance(self.feature_dim, int) else tuple(self.feature_dim)

    def output_size(self, size: int) -> int:
        """Side of the last conv block's maps for square inputs of side `size` (< 1: too small for this network)."""
        for padding in self._paddings():
            size = size - (self.kernel - 1) if padding == "VALID" else size
            if size < 1:
                return size
            size //= 2
        return size

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """(logits, features) for NHWC images in [0, 1]."""
        act, pool = activation(self.activation), POOLS[self.pool]
        for width, padding in zip(self.widths, self._paddings(), strict=True):
            x = act(nn.Conv(width, (self.kernel, self.kernel), padding=padding)(x))
            x = pool(x, (2, 2), strides=(2, 2))
        features = x.reshape(x.shape[0], -1)
        for dim in self._feature_dims():
            features = act(nn.Dense(dim)(features))
        h = nn.Dropout(self.dropout, deterministic=not train)(features) if self.dropout else features
        return nn.Dense(self.num_classes)(h), features


class ConvClassifier(LeNet):
    """A `LeNet` returning its logits alone: `model(x, train=...) -> logits`, what the supervised task trains."""

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return super().__call__(x, train=train)[0]


ARCHITECTURES = {
    "cnn": {"widths": (32, 64), "kernel": 3, "padding": "VALID", "pool": "max", "activation": "relu"},
    "lenet": {"widths": (6, 16), "kernel": 5, "padding": ("SAME", "VALID"), "pool": "avg", "activation": "tanh",
              "feature_dim": (120, 84)},
}


def conv_classifier(name: str, num_classes: int, *, dropout: float = 0.0, hidden: Sequence[int] = (),
                    activation_name: str | None = None) -> ConvClassifier:
    """The MLP family's architecture `name` (`ARCHITECTURES`): `hidden` dense layers and `activation_name` apply to
    `cnn` (default: none, and ReLU); `lenet` is fixed. Dropout acts on the features, before the output layer."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown convolutional architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    settings = dict(ARCHITECTURES[name])
    if name == "cnn":
        settings.update(feature_dim=tuple(hidden), activation=activation_name or "relu")
    elif tuple(hidden) or activation_name:
        raise ConfigError(f"--architecture={name} has its own layers and activation")
    return ConvClassifier(num_classes=num_classes, dropout=dropout, **settings)


def minimum_size(model: LeNet, largest: int = 1024) -> int:
    """The smallest side of square inputs `model` accepts."""
    return next(size for size in range(1, largest + 1) if model.output_size(size) >= 1)
