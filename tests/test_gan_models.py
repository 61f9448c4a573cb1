"""DCGAN and MLP generators/discriminators: shapes, the fast upsampling against nn.ConvTranspose, inits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import ConfigError
from research.models.dcgan import UPSAMPLERS, DCGANDiscriminator, DCGANGenerator, Upsample2x, resolution_plan
from research.models.gan_mlp import MLPDiscriminator, MLPGenerator, kernel_init
from research.tasks.gan import param_key


@pytest.mark.parametrize("taps", [3, 2])
def test_upsample_equals_conv_transpose(taps):
    """Both phase forms (3x3 conv, four 2x2 convs) equal nn.ConvTranspose: outputs and gradients (x, kernel, bias)."""
    shape, features = (2, 5, 6, 3), 4
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    variables = jax.eval_shape(Upsample2x(features).init, jax.random.PRNGKey(1), x)
    # random (not DCGAN-small) kernel and bias so every tap matters
    variables = jax.tree.map(lambda a: jax.random.normal(jax.random.PRNGKey(2), a.shape), variables)
    fast_m = Upsample2x(features, taps=taps)
    slow_m = nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")
    probe = jax.random.normal(jax.random.PRNGKey(3), (shape[0], 2 * shape[1], 2 * shape[2], features))

    def outputs_and_grads(m, v, x):
        y = m.apply(v, x)
        return y, jax.grad(lambda v, x: jnp.sum(m.apply(v, x) * probe), argnums=(0, 1))(v, x)

    (fast, fast_grads), (reference, ref_grads) = jax.jit(
        lambda v, x: (outputs_and_grads(fast_m, v, x), outputs_and_grads(slow_m, v, x)))(variables, x)
    assert fast.shape == (shape[0], 2 * shape[1], 2 * shape[2], features)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(reference), atol=1e-4, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(fast_grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("size,plan", [(28, (7, 2)), (32, (4, 3)), (64, (4, 4)), (14, (7, 1))])
def test_resolution_plan(size, plan):
    assert resolution_plan(size) == plan


@pytest.mark.parametrize("size", [7, 30, 36])
def test_resolution_plan_rejects(size):
    with pytest.raises(ConfigError, match="not supported"):
        resolution_plan(size)


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 1)])
def test_generator_and_discriminator_shapes(size, channels):
    z = jax.ShapeDtypeStruct((2, 10), jnp.float32)
    g = DCGANGenerator(size=size, channels=channels, width=4)
    gv = jax.eval_shape(g.init, jax.random.PRNGKey(1), z)
    x, _ = jax.eval_shape(lambda v, z: g.apply(v, z, train=True, mutable=["batch_stats"]), gv, z)
    assert x.shape == (2, size, size, channels)
    d = DCGANDiscriminator(size=size, width=4)
    dv = jax.eval_shape(d.init, jax.random.PRNGKey(2), x)
    assert jax.eval_shape(d.apply, dv, x).shape == (2,)


def test_generator_upsamplers_agree_and_dcgan_init():
    """Same parameters, same images: checkpoints work with any --upsample. Weights start at N(0, 0.02)."""
    z = jax.random.normal(jax.random.PRNGKey(0), (3, 8))
    assert set(UPSAMPLERS) == {"mixed", "phase", "phase2x2", "transpose"}
    gens = {u: DCGANGenerator(size=28, channels=1, width=16, upsample=u) for u in UPSAMPLERS}
    assert DCGANGenerator(size=28, channels=1).upsample == "phase"  # the default keeps earlier runs' numbers
    variables = jax.jit(gens["mixed"].init)(param_key(jax.random.PRNGKey(1)), z)  # rbg: compiles faster
    shapes = lambda tree: jax.tree.map(jnp.shape, tree)
    for g in gens.values():
        assert shapes(variables) == shapes(jax.eval_shape(g.init, jax.random.PRNGKey(1), z))
    images = jax.jit(lambda v, z: {u: g.apply(v, z) for u, g in gens.items()})(variables, z)
    for u in UPSAMPLERS:
        np.testing.assert_allclose(np.asarray(images[u]), np.asarray(images["transpose"]), atol=1e-5, err_msg=u)
    a = images["mixed"]
    assert float(jnp.max(jnp.abs(a))) <= 1.0  # tanh output
    kernel = np.asarray(variables["params"]["project"]["kernel"])  # (8, 7 * 7 * 32)
    assert abs(kernel.std() - 0.02) < 0.002 and abs(kernel.mean()) < 0.002


def test_conditional_and_spectral_norm():
    labels = jnp.array([0, 3])
    g = DCGANGenerator(size=28, channels=1, width=4, num_classes=10)
    rng = np.random.default_rng(0)
    gv = jax.tree_util.tree_map_with_path(  # random values without compiling an init; variances 1
        lambda path, a: np.ones(a.shape, np.float32) if "var" in jax.tree_util.keystr(path)
        else (0.3 * rng.standard_normal(a.shape)).astype(np.float32),
        jax.eval_shape(g.init, jax.random.PRNGKey(0), jnp.zeros((2, 5)), labels))
    assert "label_embed" in gv["params"]
    x, other = jax.jit(lambda v, z: (g.apply(v, z, labels), g.apply(v, z, jnp.array([1, 3]))))(gv, jnp.ones((2, 5)))
    assert not np.allclose(np.asarray(x[0]), np.asarray(other[0]))   # the label changes the image
    np.testing.assert_allclose(np.asarray(x[1]), np.asarray(other[1]), atol=1e-6)
    d = DCGANDiscriminator(size=28, width=4, num_classes=10, spectral_norm=True, batch_norm=False)
    dv = jax.eval_shape(d.init, jax.random.PRNGKey(1), x, labels)
    names = ["/".join(map(str, p)) for p, _ in jax.tree_util.tree_flatten_with_path(dv["batch_stats"])[0]]
    assert any("sigma" in n for n in names) and "label_embed" in dv["params"]
    out, updated = jax.eval_shape(lambda v, x, y: d.apply(v, x, y, train=True, mutable=["batch_stats"]), dv, x, labels)
    assert out.shape == (2,)
    assert jax.tree.structure(updated["batch_stats"]) == jax.tree.structure(dv["batch_stats"])


def test_mlp_players_and_orthogonal_init():
    kernel = np.asarray(kernel_init("orthogonal", 1.4)(jax.random.PRNGKey(0), (256, 128)))
    np.testing.assert_allclose(kernel.T @ kernel, 1.4 ** 2 * np.eye(128), atol=1e-4)  # orthonormal columns * gain
    g = MLPGenerator(out_shape=(2,), hidden=(128, 128), weight_init="orthogonal", init_gain=1.4)
    gv = jax.eval_shape(g.init, jax.random.PRNGKey(0), jnp.zeros((1, 256)))
    assert [gv["params"][f"Dense_{i}"]["kernel"].shape for i in range(3)] == [(256, 128), (128, 128), (128, 2)]
    assert jax.eval_shape(g.apply, gv, jnp.ones((5, 256))).shape == (5, 2)
    d = MLPDiscriminator(hidden=(16,))
    dv = jax.eval_shape(d.init, jax.random.PRNGKey(1), jnp.ones((5, 2)))
    assert jax.eval_shape(d.apply, dv, jnp.ones((5, 2))).shape == (5,)
    images = MLPGenerator(out_shape=(4, 4, 1), hidden=(8,), output_tanh=True)
    out = jax.jit(lambda z: images.apply(images.init(param_key(jax.random.PRNGKey(2)), z), 10 * z))(jnp.ones((2, 3)))
    assert out.shape == (2, 4, 4, 1) and float(jnp.max(jnp.abs(out))) <= 1.0
    with pytest.raises(ConfigError, match="unknown initialisation"):
        kernel_init("xavier")
