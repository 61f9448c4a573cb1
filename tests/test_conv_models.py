"""The MLP family's convolutional architectures (research/models/lenet.py): shapes and sizes, the feature
classifier's LeNet unchanged, the refusals, and a short training on real digits that learns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import DataConfig
from research.errors import ConfigError
from research.families import mlp
from research.loop import LoopConfig
from research.metrics.feature_classifier import FeatureClassifierConfig
from research.models.lenet import ConvClassifier, LeNet, conv_classifier, minimum_size
from research.optim import OptimizerConfig
from research.tasks.supervised import SupervisedConfig, SupervisedTask

X = jnp.zeros((2, 28, 28, 1))


def _shapes(model, x=X):
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    return jax.tree.map(lambda a: a.shape, variables["params"])


def _apply(model, x=X):
    """The output shapes (and dtypes) of `model` on `x`, without computing anything."""
    return jax.eval_shape(lambda key: model.apply(model.init(key, x), x), jax.random.PRNGKey(0))


def _count(shapes) -> int:
    return sum(int(np.prod(s)) for s in jax.tree.leaves(shapes, is_leaf=lambda s: isinstance(s, tuple)))


def test_the_cnn_is_the_keras_mnist_convnet():
    model = conv_classifier("cnn", 10, dropout=0.5)
    shapes = _shapes(model)
    assert shapes == {"Conv_0": {"kernel": (3, 3, 1, 32), "bias": (32,)},
                      "Conv_1": {"kernel": (3, 3, 32, 64), "bias": (64,)},
                      "Dense_0": {"kernel": (5 * 5 * 64, 10), "bias": (10,)}}
    assert _count(shapes) == 34_826  # Keras' model.summary() of the example
    assert _apply(model).shape == (2, 10)
    with_head = _shapes(conv_classifier("cnn", 10, hidden=(128,), activation_name="tanh"))
    assert with_head["Dense_0"]["kernel"] == (1600, 128) and with_head["Dense_1"]["kernel"] == (128, 10)


def test_lenet_has_lenet5s_layers():
    model = conv_classifier("lenet", 10)
    shapes = _shapes(model)
    assert shapes["Conv_0"]["kernel"] == (5, 5, 1, 6) and shapes["Conv_1"]["kernel"] == (5, 5, 6, 16)
    assert [shapes[f"Dense_{i}"]["kernel"] for i in range(3)] == [(400, 120), (120, 84), (84, 10)]
    assert _count(shapes) == 61_706
    logits = _apply(model)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    with pytest.raises(ConfigError, match="has its own layers"):
        conv_classifier("lenet", 10, hidden=(32,))


def test_the_feature_classifiers_lenet_is_unchanged():
    """The cached evaluator's parameters are loaded by name: the defaults must build the same tree."""
    model = FeatureClassifierConfig().model()
    assert type(model) is LeNet and _shapes(model) == {
        "Conv_0": {"kernel": (5, 5, 1, 16), "bias": (16,)}, "Conv_1": {"kernel": (5, 5, 16, 32), "bias": (32,)},
        "Dense_0": {"kernel": (7 * 7 * 32, 128), "bias": (128,)}, "Dense_1": {"kernel": (128, 10), "bias": (10,)}}
    logits, features = _apply(model)
    assert logits.shape == (2, 10) and features.shape == (2, 128)


def test_conv_classifier_returns_logits_and_lenet_the_features_too():
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 12, 12, 1))
    lenet = LeNet(widths=(4,), feature_dim=(), kernel=3, padding="VALID")
    params = jax.jit(lenet.init)(jax.random.PRNGKey(0), x)["params"]
    logits, features = jax.jit(lenet.apply)({"params": params}, x)
    assert features.shape == (2, 5 * 5 * 4)
    classifier = ConvClassifier(widths=(4,), feature_dim=(), kernel=3, padding="VALID")
    np.testing.assert_array_equal(jax.jit(classifier.apply)({"params": params}, x), logits)


def test_input_sizes_the_architectures_accept():
    cnn, lenet = conv_classifier("cnn", 10), conv_classifier("lenet", 10)
    assert (cnn.output_size(28), lenet.output_size(28)) == (5, 5)
    assert (minimum_size(cnn), minimum_size(lenet)) == (10, 12)
    assert cnn.output_size(8) < 1 and lenet.output_size(8) < 1


@pytest.mark.parametrize("architecture, shape, message", [
    ("cnn", (10,), r"--architecture=cnn needs image data .* diabetes has examples of shape \(10,\)"),
    ("lenet", (40,), "--architecture=lenet needs image data"),
    ("cnn", (8, 8, 1), "--architecture=cnn needs images of at least 10x10; digits has 8x8"),
    ("lenet", (8, 8, 1), "needs images of at least 12x12"),
])
def test_conv_architectures_refuse_data_that_are_not_images_large_enough(architecture, shape, message):
    name = "digits" if len(shape) == 3 else "diabetes"
    with pytest.raises(ConfigError, match=message):
        mlp.make_model(mlp.ModelConfig(architecture=architecture), shape, 10, name)


def test_the_model_config_validates_the_architecture():
    with pytest.raises(ConfigError, match="unknown --architecture 'resnet'"):
        mlp.ModelConfig(architecture="resnet")
    with pytest.raises(ConfigError, match="--batch_norm applies to --architecture=mlp"):
        mlp.ModelConfig(architecture="cnn", batch_norm=True)
    assert mlp.ModelConfig().architecture == "mlp"


@pytest.mark.parametrize("architecture", ["cnn", "lenet"])
def test_a_short_training_on_real_digits_learns(architecture):
    """40 Adam steps on mnist_5k (batch 32): far above the 10% of chance on 256 test digits."""
    cfg = mlp.Config(data=DataConfig("mnist_5k", 32), loop=LoopConfig(steps=40),
                     optimizer=OptimizerConfig(learning_rate=3e-3), model=mlp.ModelConfig(architecture=architecture,
                                                                                          hidden=()))
    run = mlp.build(cfg, evaluate=False)
    task: SupervisedTask = run.task
    assert isinstance(task.model, ConvClassifier) and task.cfg == SupervisedConfig()
    train, test = run.dataset.split("train"), run.dataset.split("test")
    state = jax.jit(task.init_state)(jax.random.PRNGKey(0))
    step = jax.jit(task.train_step)
    order = np.random.default_rng(0).permutation(len(train["y"]))
    for i in range(40):
        idx = order[32 * i:32 * (i + 1)]
        state, _ = step(state, {"x": train["x"][idx], "y": train["y"][idx]})
    logits = jax.jit(task.predict)(state, test["x"][:256])
    accuracy = float(np.mean(np.argmax(logits, -1) == test["y"][:256]))
    assert accuracy > 0.5, accuracy
