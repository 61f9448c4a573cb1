"""GAN losses and penalties, chosen by name, with one signature each (after compare_gan's loss_lib/penalty_lib).

Losses: `(d_real, d_fake) -> (d_loss, g_loss, parts)` on the discriminator's raw outputs (logits, or critic
values for `wasserstein` and `hinge`); both players minimise their loss.

    minimax         d: -log D(x) - log(1 - D(G(z)))       g: log(1 - D(G(z)))          (Goodfellow et al. 2014)
    nonsaturating   d: as minimax                          g: -log D(G(z))
    wasserstein     d: E[C(G(z))] - E[C(x)]                g: -E[C(G(z))]               (Arjovsky et al. 2017)
    hinge           d: E[relu(1 - C(x))] + E[relu(1 + C(G(z)))]   g: -E[C(G(z))]      (Lim & Ye; Miyato et al.)
    least_squares   d: (E[(C(x) - 1)^2] + E[C(G(z))^2]) / 2      g: E[(C(G(z)) - 1)^2] / 2   (Mao et al. 2017)

with D = sigmoid(logit). Penalties (`Penalty`, chosen by name with `gan_penalty`): `none`; `gradient_penalty`
(WGAN-GP, Gulrajani et al. 2017), added to the critic's loss; `weight_clip` (WGAN), a projection of the critic's
parameters to [-c, c] after each critic update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from research.errors import ConfigError

Parts = dict[str, jax.Array]
LossFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array, Parts]]
Critic = Callable[[jax.Array], jax.Array]


def minimax(d_real: jax.Array, d_fake: jax.Array) -> tuple[jax.Array, jax.Array, Parts]:
    real, fake = jnp.mean(jax.nn.softplus(-d_real)), jnp.mean(jax.nn.softplus(d_fake))
    return real + fake, -fake, {"d_loss_real": real, "d_loss_fake": fake}


def nonsaturating(d_real: jax.Array, d_fake: jax.Array) -> tuple[jax.Array, jax.Array, Parts]:
    real, fake = jnp.mean(jax.nn.softplus(-d_real)), jnp.mean(jax.nn.softplus(d_fake))
    return real + fake, jnp.mean(jax.nn.softplus(-d_fake)), {"d_loss_real": real, "d_loss_fake": fake}


def wasserstein(d_real: jax.Array, d_fake: jax.Array) -> tuple[jax.Array, jax.Array, Parts]:
    real, fake = -jnp.mean(d_real), jnp.mean(d_fake)
    return real + fake, -fake, {"d_loss_real": real, "d_loss_fake": fake, "wasserstein_estimate": -(real + fake)}


def hinge(d_real: jax.Array, d_fake: jax.Array) -> tuple[jax.Array, jax.Array, Parts]:
    real, fake = jnp.mean(jax.nn.relu(1.0 - d_real)), jnp.mean(jax.nn.relu(1.0 + d_fake))
    return real + fake, -jnp.mean(d_fake), {"d_loss_real": real, "d_loss_fake": fake}


def least_squares(d_real: jax.Array, d_fake: jax.Array) -> tuple[jax.Array, jax.Array, Parts]:
    real, fake = 0.5 * jnp.mean(jnp.square(d_real - 1.0)), 0.5 * jnp.mean(jnp.square(d_fake))
    return real + fake, 0.5 * jnp.mean(jnp.square(d_fake - 1.0)), {"d_loss_real": real, "d_loss_fake": fake}


LOSSES: dict[str, LossFn] = {"minimax": minimax, "nonsaturating": nonsaturating, "wasserstein": wasserstein,
                             "hinge": hinge, "least_squares": least_squares}


def gan_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise ConfigError(f"unknown GAN loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def gradient_penalty(critic: Critic, real: jax.Array, fake: jax.Array, rng: jax.Array,
                     target: float = 1.0) -> jax.Array:
    """E[(||grad_x C(x_hat)||_2 - target)^2] at x_hat = e x + (1 - e) G(z), e ~ U[0, 1] per example.

    `critic` maps a batch to one value per example and must treat examples independently (no batch norm), so
    the gradient of the sum is every example's own gradient.
    """
    eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    x_hat = eps * real + (1.0 - eps) * fake
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1) + 1e-12)
    return jnp.mean(jnp.square(norms - target))


def clip_weights(params: Any, c: float) -> Any:
    """Every parameter clipped elementwise to [-c, c] (WGAN's Lipschitz constraint)."""
    return jax.tree.map(lambda p: jnp.clip(p, -c, c), params)


class Penalty(NamedTuple):
    """A critic regulariser: `loss(critic, real, fake, rng) -> (value, parts)` is added to the critic's loss, and
    `project(params)` is applied to the critic's parameters after each of its updates. Every penalty has both
    (a no-op where it does not act), so the train step has no per-penalty branches."""

    loss: Callable[[Critic, jax.Array, jax.Array, jax.Array], tuple[jax.Array, Parts]]
    project: Callable[[Any], Any]


def _no_loss(critic: Critic, real: jax.Array, fake: jax.Array, rng: jax.Array) -> tuple[jax.Array, Parts]:
    return jnp.zeros((), real.dtype), {}


def _identity(params: Any) -> Any:
    return params


def _gradient_penalty(weight: float) -> Penalty:
    def loss(critic, real, fake, rng):
        value = gradient_penalty(critic, real, fake, rng)
        return weight * value, {"gradient_penalty": value}

    return Penalty(loss, _identity)


PENALTIES: dict[str, Callable[[float], Penalty]] = {
    "none": lambda strength: Penalty(_no_loss, _identity),
    "gradient_penalty": _gradient_penalty,                                             # strength: lambda
    "weight_clip": lambda strength: Penalty(_no_loss, lambda p: clip_weights(p, strength)),  # strength: c
}


def gan_penalty(name: str, strength: float) -> Penalty:
    """The penalty `name` with its strength (the gradient penalty's weight, or weight clipping's c)."""
    if name not in PENALTIES:
        raise ConfigError(f"unknown GAN penalty {name!r}; choose one of {', '.join(PENALTIES)}")
    return PENALTIES[name](strength)
