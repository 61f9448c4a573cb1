"""On-device augmentation (research/data/augment.py): the spec, each op's shapes, range, geometry, identity at
strength 0 and determinism from the key, and the refusals on data that are not images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import Dataset
from research.data import augment as aug
from research.data.augment import AugmentConfig
from research.errors import ConfigError
from research.state import TrainState, step_rng

KEY = jax.random.PRNGKey(3)
IMAGES = jax.random.uniform(jax.random.PRNGKey(0), (8, 12, 10, 2))  # N, H, W, C in [0, 1], not square
STRONG = {"crop": 3, "flip": 0.5, "translate": 2.5, "rotate": 30.0, "noise": 0.2}


# ---- the spec

def test_a_spec_parses_into_one_field_per_op_in_any_order():
    cfg = AugmentConfig.parse("noise:0.1, rotate:10,flip,translate:2,crop:4")
    assert cfg == AugmentConfig(crop=4, flip=0.5, translate=2.0, rotate=10.0, noise=0.1)
    assert cfg.spec == "crop:4,flip:0.5,translate:2,rotate:10,noise:0.1" and cfg.enabled
    assert AugmentConfig.parse("flip:0.25").flip == 0.25
    assert AugmentConfig.parse(None) == AugmentConfig.parse("") == AugmentConfig() and not AugmentConfig().enabled
    assert isinstance(AugmentConfig.parse("crop:2.0").crop, int)


@pytest.mark.parametrize("spec, message", [
    ("blur:2", "unknown op 'blur'"), ("crop", "crop needs a strength"), ("rotate:ten", "is not a number"),
    ("flip,flip", "given twice"), ("crop:4,,flip", "empty item"), ("crop:2.5", "whole number"),
    ("crop:-1", "crop:N needs"), ("rotate:200", "rotate must be in [0, 180]"), ("noise:1.5", "noise must be in"),
    ("flip:2", "flip must be in [0, 1]"), ("translate:-1", "translate must be in"), ("translate:nan", "finite"),
    ("rotate:inf", "finite"),
])
def test_bad_specs_are_one_line_config_errors(spec, message):
    with pytest.raises(ConfigError) as err:
        AugmentConfig.parse(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_only_image_datasets_large_enough_are_accepted():
    images = Dataset("imgs", {"train": {"x": np.zeros((2, 8, 8, 1), np.float32)}})
    AugmentConfig(crop=7, translate=7.5).check(images)
    with pytest.raises(ConfigError, match="not smaller than the 8x8 images of imgs"):
        AugmentConfig(crop=8).check(images)
    flat = Dataset("flat", {"train": {"x": np.zeros((2, 40), np.float32)}})
    with pytest.raises(ConfigError, match=r"applies to image datasets .* flat has inputs of shape \(40,\)"):
        AugmentConfig(flip=0.5).check(flat)
    text = Dataset("text", {"train": {"tokens": np.zeros(10, np.int32)}})
    with pytest.raises(ConfigError, match=r"text has arrays \['tokens'\]"):
        AugmentConfig(noise=0.1).check(text)
    AugmentConfig().check(flat)  # nothing asked for: nothing to refuse


# ---- the ops

@pytest.mark.parametrize("name", aug.OPS)
def test_each_op_keeps_shape_dtype_and_range_and_changes_the_images(name):
    out = jax.jit(aug.FUNCTIONS[name], static_argnums=2)(KEY, IMAGES, STRONG[name])
    assert out.shape == IMAGES.shape and out.dtype == IMAGES.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not np.array_equal(np.asarray(out), np.asarray(IMAGES))


@pytest.mark.parametrize("name", aug.OPS)
def test_each_op_is_the_identity_at_strength_zero(name):
    out = aug.FUNCTIONS[name](KEY, IMAGES, 0 if name == "crop" else 0.0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(IMAGES))


@pytest.mark.parametrize("name", aug.OPS)
def test_each_op_is_a_function_of_the_key_with_its_own_draw_per_example(name):
    f = lambda key: np.asarray(aug.FUNCTIONS[name](key, IMAGES, STRONG[name]))
    np.testing.assert_array_equal(f(KEY), f(KEY))
    assert not np.array_equal(f(KEY), f(jax.random.PRNGKey(4)))
    same = jnp.broadcast_to(IMAGES[:1], IMAGES.shape)  # eight copies of one image: each augmented its own way
    out = np.asarray(aug.FUNCTIONS[name](KEY, same, STRONG[name]))
    assert len({out[i].tobytes() for i in range(len(out))}) > 1


def _dot(h=9, w=9, y=4, x=4):
    image = np.zeros((1, h, w, 1), np.float32)
    image[0, y, x, 0] = 1.0
    return jnp.asarray(image)


def test_translate_and_crop_move_the_content_by_their_draw():
    shifted = np.asarray(aug._resample(_dot(), jnp.arange(9.0)[None, :, None] - 2.0 + jnp.zeros((1, 9, 9)),
                                       jnp.arange(9.0)[None, None, :] + 1.0 + jnp.zeros((1, 9, 9))))
    assert np.argwhere(shifted[0, ..., 0] == 1.0).tolist() == [[6, 3]]  # down 2, left 1, exactly
    half = np.asarray(aug._resample(_dot(), jnp.arange(9.0)[None, :, None] + jnp.zeros((1, 9, 9)),
                                    jnp.arange(9.0)[None, None, :] - 0.5 + jnp.zeros((1, 9, 9))))
    np.testing.assert_allclose(half[0, 4, 4:6, 0], [0.5, 0.5])  # half a pixel: bilinear
    cropped = np.asarray(aug.crop(KEY, jnp.broadcast_to(_dot(), (16, 9, 9, 1)), 2))
    moves = {tuple(np.argwhere(c[..., 0] == 1.0)[0] - 4) for c in cropped}
    assert len(moves) > 4 and all(max(abs(d) for d in m) <= 2 for m in moves)


def test_flip_mirrors_and_rotate_turns_about_the_centre():
    flipped = np.asarray(aug.flip(KEY, IMAGES, 1.0))
    np.testing.assert_array_equal(flipped, np.asarray(IMAGES)[:, :, ::-1])
    np.testing.assert_array_equal(np.asarray(aug.flip(KEY, IMAGES, 0.0)), np.asarray(IMAGES))
    square = jax.random.uniform(KEY, (1, 9, 9, 1))
    quarter = np.asarray(aug._resample(square, *_rotation_coordinates(9, 90.0)))
    candidates = [np.rot90(np.asarray(square)[0, ..., 0], k) for k in (1, -1)]
    assert any(np.allclose(quarter[0, ..., 0], c, atol=1e-5) for c in candidates)
    turned = np.asarray(aug.rotate(KEY, jnp.broadcast_to(_dot(), (8, 9, 9, 1)), 45.0))
    np.testing.assert_allclose(turned[:, 4, 4, 0], 1.0)  # the centre stays where it is


def _rotation_coordinates(size: int, degrees: float):
    angle = np.deg2rad(degrees)
    rows, cols = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32), indexing="ij")
    c = (size - 1) / 2
    dy, dx = rows - c, cols - c
    return (jnp.asarray(c + np.cos(angle) * dy + np.sin(angle) * dx)[None],
            jnp.asarray(c + np.cos(angle) * dx - np.sin(angle) * dy)[None])


# ---- several ops, and the key of a train step

def test_ops_draw_from_their_own_keys_so_adding_one_leaves_the_others_alone():
    cfg = AugmentConfig(crop=2, translate=1.0)
    both = np.asarray(aug.augment(cfg, KEY, IMAGES))
    by_hand = aug.translate(jax.random.fold_in(KEY, 2), aug.crop(jax.random.fold_in(KEY, 0), IMAGES, 2), 1.0)
    np.testing.assert_array_equal(both, np.asarray(by_hand))
    assert aug.augment(AugmentConfig(), KEY, IMAGES) is IMAGES


def test_augment_batch_draws_from_the_step_and_leaves_batches_alone_when_off():
    state = TrainState(step=jnp.int32(5), params={}, opt_state=(), model_state={}, rng=jax.random.PRNGKey(7))
    batch = {"x": IMAGES, "y": jnp.arange(8)}
    assert aug.augment_batch(AugmentConfig(), state, batch) is batch
    cfg = AugmentConfig(**STRONG)
    out = jax.jit(lambda s, b: aug.augment_batch(cfg, s, b))(state, batch)
    np.testing.assert_array_equal(np.asarray(out["y"]), np.arange(8))
    by_hand = aug.augment(cfg, step_rng(state, aug.AUGMENT_STREAM), IMAGES)  # not jitted: last-bit differences
    np.testing.assert_allclose(np.asarray(out["x"]), np.asarray(by_hand), rtol=0, atol=2e-6)
    later = aug.augment_batch(cfg, state.replace(step=jnp.int32(6)), batch)
    other_run = aug.augment_batch(cfg, state.replace(rng=jax.random.PRNGKey(8)), batch)
    assert not np.array_equal(np.asarray(later["x"]), np.asarray(out["x"]))
    assert not np.array_equal(np.asarray(other_run["x"]), np.asarray(out["x"]))
