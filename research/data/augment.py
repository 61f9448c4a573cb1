"""On-device augmentation of training images: pure functions of (rng, images), called inside jitted train steps.

`--augment` names any subset of these ops, comma separated, each at most once (e.g. `crop:4,flip,rotate:10`):

    crop:N        pad N pixels of zeros on every side, then cut the original size back out at a random offset
                  (the CIFAR recipe: an integer shift of up to N pixels in each direction, zero fill)
    flip[:P]      mirror left-right with probability P (default 1/2); label-preserving for clothes, not for digits
    translate:PX  shift by a random sub-pixel offset in [-PX, PX] along each axis (bilinear, zero fill)
    rotate:DEG    rotate about the image centre by a random angle in [-DEG, DEG] degrees (bilinear, zero fill)
    noise:STD     add N(0, STD^2) to every pixel, then clip to [0, 1]

They run in that order whatever order the spec lists them in. Every example draws its own parameters; op i draws
from `fold_in(rng, i)`, so adding or removing one op leaves the others' draws unchanged. Images are NHWC in
[0, 1] (the `Dataset` contract) and stay in [0, 1]; every op is the identity at strength 0.

Tasks call `augment_batch(cfg, state, batch)` first thing in `train_step`: the key is
`research.state.step_rng(state, AUGMENT_STREAM)`, a function of the run's key and the step only, so a resumed run
draws the same augmentations as an uninterrupted one, and the replicas of a `--num_seeds` run (each with its own
key) draw different ones. Nothing happens on the host per step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

from research.errors import ConfigError
from research.state import step_rng

OPS = ("crop", "flip", "translate", "rotate", "noise")  # the order they are applied in
USAGE = "crop:N, flip[:P], translate:PX, rotate:DEG, noise:STD"
AUGMENT_STREAM = 0x41554731  # step_rng name of the augmentation draws ("AUG1"), apart from dropout's and others'


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Strength of each op; 0 turns it off. All zero (the default): no augmentation, and no random draws."""

    crop: int = 0            # pixels of zero padding before the random crop
    flip: float = 0.0        # probability of a left-right mirror
    translate: float = 0.0   # largest shift in pixels, each axis
    rotate: float = 0.0      # largest rotation in degrees, either way
    noise: float = 0.0       # standard deviation of the added Gaussian noise

    def __post_init__(self) -> None:
        for name in OPS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"--augment: {name} must be a finite number, got {value!r}")
        if not isinstance(self.crop, int) or self.crop < 0:
            raise ConfigError(f"--augment: crop:N needs a whole number of pixels >= 0, got {self.crop}")
        limits = {"flip": (0.0, 1.0, "a probability"), "translate": (0.0, math.inf, "pixels"),
                  "rotate": (0.0, 180.0, "degrees"), "noise": (0.0, 1.0, "a standard deviation of pixels in [0, 1]")}
        for name, (lo, hi, what) in limits.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ConfigError(f"--augment: {name} must be in [{lo:g}, {hi:g}] ({what}), got {value:g}")

    @classmethod
    def parse(cls, spec: str | None) -> AugmentConfig:
        """The config of an `--augment` spec such as `crop:4,flip,rotate:10` (None or empty: no augmentation)."""
        if spec is None or not spec.strip():
            return cls()
        values: dict[str, Any] = {}
        for item in spec.split(","):
            name, sep, text = (part.strip() for part in item.partition(":"))
            if not name:
                raise ConfigError(f"--augment={spec!r} has an empty item; write ops as {USAGE}")
            if name not in OPS:
                raise ConfigError(f"--augment: unknown op {name!r} in {spec!r}; choose from {USAGE}")
            if name in values:
                raise ConfigError(f"--augment: {name} is given twice in {spec!r}")
            if not sep and name != "flip":
                raise ConfigError(f"--augment: {name} needs a strength, e.g. {name}:{_EXAMPLES[name]}")
            if not sep:
                values[name] = 0.5
                continue
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"--augment: {name}:{text} is not a number") from None
            if name == "crop":
                if not value.is_integer():
                    raise ConfigError(f"--augment: crop:N needs a whole number of pixels, got {text}")
                value = int(value)
            values[name] = value
        return cls(**values)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, name) for name in OPS)

    @property
    def spec(self) -> str:
        """The canonical `--augment` spec of this config (ops in the order they are applied)."""
        return ",".join(f"{name}:{getattr(self, name):g}" for name in OPS if getattr(self, name))

    def check(self, dataset: Any) -> None:
        """ConfigError (one line) unless `dataset` holds images NHWC large enough for the shifts asked for."""
        if not self.enabled:
            return
        first: Mapping[str, np.ndarray] = next(iter(dataset.splits.values()))
        x = first.get("x")
        if x is None or np.ndim(x) != 4:
            what = f"inputs of shape {tuple(np.shape(x)[1:])}" if x is not None else f"arrays {sorted(first)}"
            raise ConfigError(f"--augment applies to image datasets (x of shape N x H x W x C); {dataset.name} has "
                              f"{what}")
        size = min(np.shape(x)[1:3])
        for name in ("crop", "translate"):
            if getattr(self, name) >= size:
                raise ConfigError(f"--augment: {name}:{getattr(self, name):g} is not smaller than the "
                                  f"{np.shape(x)[1]}x{np.shape(x)[2]} images of {dataset.name}")


_EXAMPLES = {"crop": "4", "translate": "2", "rotate": "10", "noise": "0.1"}
NO_AUGMENT = AugmentConfig()  # the default of tasks that take an AugmentConfig


# ---- the ops: (rng, images (N, H, W, C) in [0, 1], strength) -> images of the same shape and dtype

def crop(rng: jax.Array, images: jax.Array, pad: int) -> jax.Array:
    """Zero-pad by `pad` pixels, then cut each example's H x W window at its own offset in [0, 2 pad]."""
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(rng, (n, 2), 0, 2 * pad + 1)
    return jax.vmap(lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c)))(padded, offsets)


def flip(rng: jax.Array, images: jax.Array, probability: float = 0.5) -> jax.Array:
    """Mirror each example left-right with `probability`."""
    mirror = jax.random.bernoulli(rng, probability, (images.shape[0],))
    return jnp.where(mirror[:, None, None, None], images[:, :, ::-1, :], images)


def _resample(images: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """images sampled at per-example coordinates `rows`, `cols` (N, H, W): bilinear, zeros outside, clipped to
    [0, 1] (a convex combination of pixels in [0, 1] can round a last bit above 1)."""
    def one_channel(plane, r, c):
        return map_coordinates(plane, [r, c], order=1, mode="constant", cval=0.0)

    per_example = jax.vmap(one_channel, in_axes=(2, None, None), out_axes=2)  # over channels
    return jnp.clip(jax.vmap(per_example)(images, rows, cols), 0.0, 1.0)


def _grid(images: jax.Array) -> tuple[jax.Array, jax.Array]:
    _, h, w, _ = images.shape
    return jnp.meshgrid(jnp.arange(h, dtype=images.dtype), jnp.arange(w, dtype=images.dtype), indexing="ij")


def translate(rng: jax.Array, images: jax.Array, max_shift: float) -> jax.Array:
    """Shift each example by its own (dy, dx), uniform in [-max_shift, max_shift] pixels (bilinear)."""
    shift = jax.random.uniform(rng, (images.shape[0], 2, 1, 1), images.dtype, -max_shift, max_shift)
    rows, cols = _grid(images)
    return _resample(images, rows[None] - shift[:, 0], cols[None] - shift[:, 1])


def rotate(rng: jax.Array, images: jax.Array, max_degrees: float) -> jax.Array:
    """Rotate each example about the image centre by its own angle, uniform in [-max_degrees, max_degrees]
    (bilinear): the output pixel p takes the input at centre + R(angle) (p - centre)."""
    _, h, w, _ = images.shape
    angle = jnp.deg2rad(jax.random.uniform(rng, (images.shape[0], 1, 1), images.dtype, -max_degrees, max_degrees))
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    rows, cols = _grid(images)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    dy, dx = rows[None] - cy, cols[None] - cx
    return _resample(images, cy + (cos * dy + sin * dx), cx + (cos * dx - sin * dy))


def noise(rng: jax.Array, images: jax.Array, std: float) -> jax.Array:
    """Add N(0, std^2) to every pixel and clip to [0, 1]."""
    return jnp.clip(images + std * jax.random.normal(rng, images.shape, images.dtype), 0.0, 1.0)


FUNCTIONS: dict[str, Callable[[jax.Array, jax.Array, Any], jax.Array]] = {
    "crop": crop, "flip": flip, "translate": translate, "rotate": rotate, "noise": noise}


def augment(cfg: AugmentConfig, rng: jax.Array, images: jax.Array) -> jax.Array:
    """`images` through every op of `cfg` that is on, in the order of `OPS`; op i draws from fold_in(rng, i)."""
    for i, name in enumerate(OPS):
        strength = getattr(cfg, name)
        if strength:
            images = FUNCTIONS[name](jax.random.fold_in(rng, i), images, strength)
    return images


def augment_batch(cfg: AugmentConfig, state: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """`batch` with its images `x` augmented from the step's key (`step_rng(state, AUGMENT_STREAM)`); the batch
    itself, untouched, when `cfg` turns nothing on (so runs without --augment keep their exact bits)."""
    if not cfg.enabled:
        return batch
    return {**batch, "x": augment(cfg, step_rng(state, AUGMENT_STREAM), batch["x"])}
