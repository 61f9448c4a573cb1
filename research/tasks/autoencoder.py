"""The autoencoder family's task: plain, denoising or variational autoencoders of pixels in [0, 1].

Training minimises a per-image reconstruction loss (`bce` or `mse`, see `research.objectives.reconstruction`)
of the clean input from the (optionally corrupted) input, plus `kl_weight` times the KL term for a VAE.
Evaluation reconstructs the test split from clean inputs and reports the metrics of
`research.metrics.reconstruction` beside an exact PCA baseline with the same code size (fitted once on the
training split), so both numbers land in `final.json`. A denoising run also reports both models' error on
corrupted test inputs (the same corruption for every evaluation); a VAE reports its ELBO in nats.

Pictures at every evaluation (PNG under `<workdir>/images/` and in TensorBoard): `reconstructions`
(rows: input, [corrupted input,] autoencoder, PCA), `interpolation` (decoded codes on the line between two
test digits), `codes` (a scatter of 2-D test codes coloured by label) and, for a VAE, `samples` from the
prior and, with a 2-D code, the decoded `manifold`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.data import Dataset, Pipeline, map_batches, train_pipeline
from research.errors import ConfigError
from research.loop import EvalContext
from research.metrics.reconstruction import fit_pca, pca_report, reconstruction_report
from research.models.autoencoder import NOISES, Autoencoder, corrupt
from research.objectives.reconstruction import bernoulli_cross_entropy, gaussian_kl, reconstruction_loss, squared_error
from research.optim import OptimizerConfig, make_optimizer
from research.parallel import batch_sharding, check_divisible
from research.state import TrainState, global_norm, step_rng
from research.writers import MetricWriter, image_grid

# fold_in constants of the run key for evaluation draws: fixed for the whole run, so every evaluation (and a
# resumed run) sees the same corrupted test inputs and the same prior samples.
_EVAL_STREAM, _SAMPLE_STREAM = 0x7FFF0001, 0x7FFF0002


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    batch_size: int
    steps: int
    loss: str = "bce"              # bce | mse
    noise: str = "none"            # none | gaussian | mask: corruption of training inputs (denoising)
    noise_level: float = 0.0       # gaussian: std; mask: probability a pixel is zeroed
    kl_weight: float = 1.0         # VAE only: weight of the KL term in the training loss (1: the ELBO)
    eval_batch_size: int = 0       # 0: the smallest multiple of batch_size holding >= 512 examples
    interpolation_steps: int = 8   # decoded points between (and including) two codes

    def validate(self, variational: bool) -> None:
        reconstruction_loss(self.loss)
        if self.noise not in NOISES:
            raise ConfigError(f"unknown --noise {self.noise!r}; choose one of {', '.join(NOISES)}")
        if self.noise == "none" and self.noise_level:
            raise ConfigError(f"--noise_level={self.noise_level} needs --noise=gaussian or --noise=mask")
        if self.noise != "none" and not self.noise_level > 0:
            raise ConfigError(f"--noise={self.noise} needs --noise_level > 0")
        if self.noise == "mask" and not self.noise_level < 1:
            raise ConfigError(f"--noise=mask needs --noise_level in (0, 1), got {self.noise_level}")
        if variational and self.loss != "bce":
            raise ConfigError("the variational autoencoder's ELBO uses a Bernoulli decoder: use --loss=bce")
        if not variational and self.kl_weight != 1.0:
            raise ConfigError("--kl_weight applies only to --variational")
        if self.kl_weight < 0:
            raise ConfigError(f"--kl_weight must be >= 0, got {self.kl_weight}")
        if self.interpolation_steps < 2:
            raise ConfigError(f"--interpolation_steps must be >= 2, got {self.interpolation_steps}")
        if self.eval_batch_size < 0:
            raise ConfigError(f"--eval_batch_size must be >= 0, got {self.eval_batch_size}")


class AutoencoderTask:
    def __init__(self, model: Autoencoder, dataset: Dataset, optimizer: OptimizerConfig, cfg: AutoencoderConfig):
        cfg.validate(model.variational)
        train_x = dataset.split("train")["x"]
        lo, hi = float(train_x.min()), float(train_x.max())
        if lo < 0 or hi > 1:
            raise ConfigError(f"autoencoders here reconstruct pixels in [0, 1]; dataset {dataset.name!r} has "
                              f"values in [{lo:.3g}, {hi:.3g}]")
        self.model, self.dataset, self.cfg = model, dataset, cfg
        self.loss_fn = reconstruction_loss(cfg.loss)
        self.tx, self.schedule = make_optimizer(optimizer, cfg.steps)
        self.eval_batch_size = cfg.eval_batch_size or cfg.batch_size * math.ceil(512 / cfg.batch_size)
        self.pca = fit_pca(train_x, model.latent)
        self.denoising = cfg.noise != "none"
        self._eval_batch = jax.jit(self.eval_batch)
        self._decode = jax.jit(self.decode)

    # ---- pure functions (jitted by the loop)
    def init_state(self, rng: jax.Array) -> TrainState:
        params_rng, run_rng = jax.random.split(rng)
        x = jnp.zeros((1, *self.dataset.input_shape), jnp.float32)
        params = self.model.init({"params": params_rng}, x)["params"]
        return TrainState.create(params, self.tx, run_rng)

    def train_step(self, state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
        rng = step_rng(state)
        x = batch["x"]
        seen = corrupt(jax.random.fold_in(rng, 0), x, self.cfg.noise, self.cfg.noise_level)

        def loss_fn(params):
            logits, mean, logvar = self.model.apply({"params": params}, seen, sample=self.model.variational,
                                                    rngs={"latent": jax.random.fold_in(rng, 1)})
            recon = self.loss_fn(logits, x)
            extra = {"sq_error": jnp.mean(squared_error(logits, x))}
            if not self.model.variational:
                return jnp.mean(recon), extra
            kl = gaussian_kl(mean, logvar)
            extra.update(kl=jnp.mean(kl), elbo=-jnp.mean(recon + kl))
            return jnp.mean(recon + self.cfg.kl_weight * kl), extra

        (loss, extra), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **extra, "learning_rate": self.schedule(state.step),
                   "grad_norm": global_norm(grads), "param_norm": global_norm(params),
                   "update_norm": global_norm(updates)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def eval_batch(self, state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Test outputs for examples `batch["idx"]`: logits and codes of the clean input; for a denoising
        run the corrupted input and its logits; for a VAE the one-sample ELBO and the KL, per example.
        Random draws depend only on the run key and the example index, not on batching or devices."""
        x, params = batch["x"], {"params": state.params}
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(state.rng, _EVAL_STREAM), i))(batch["idx"])
        mean, logvar = self.model.apply(params, x, method=Autoencoder.encode)
        logits = self.model.apply(params, mean, method=Autoencoder.decode)
        out = {"logits": logits, "code": mean}
        if self.denoising:
            noisy = jax.vmap(lambda k, xi: corrupt(jax.random.fold_in(k, 0), xi, self.cfg.noise,
                                                   self.cfg.noise_level))(keys, x)
            noisy_code = self.model.apply(params, noisy, method=Autoencoder.encode)[0]
            out.update(noisy=noisy, noisy_logits=self.model.apply(params, noisy_code, method=Autoencoder.decode))
        if self.model.variational:
            eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), mean.shape[1:]))(keys)
            sample_logits = self.model.apply(params, mean + jnp.exp(0.5 * logvar) * eps, method=Autoencoder.decode)
            kl = gaussian_kl(mean, logvar)
            out.update(elbo=-(bernoulli_cross_entropy(sample_logits, x) + kl), kl=kl)
        return out

    def decode(self, state: TrainState, z: jax.Array) -> jax.Array:
        """Pixels in [0, 1] decoded from codes `z`."""
        return jax.nn.sigmoid(self.model.apply({"params": state.params}, z, method=Autoencoder.decode))

    def _decode_host(self, state: TrainState, z: np.ndarray) -> np.ndarray:
        """`decode` on the host, with rows padded to a multiple of 256 so every picture shares one compilation."""
        n = len(z)
        padded = np.zeros((-(-n // 256) * 256, z.shape[1]), np.float32)
        padded[:n] = z
        return np.asarray(self._decode(state, padded))[:n]

    # ---- host side
    def train_pipeline(self, seed: int, sharding) -> Pipeline:
        check_divisible(self.cfg.batch_size, sharding.mesh)
        return train_pipeline(self.dataset, self.cfg.batch_size, seed=seed, sharding=sharding)

    def evaluate(self, state: TrainState, ctx: EvalContext, split: str = "test") -> dict[str, float]:
        arrays = self.dataset.split(split)
        x = arrays["x"]
        check_divisible(self.eval_batch_size, ctx.mesh, "--eval_batch_size")
        out = map_batches(lambda b: self._eval_batch(state, b), {"x": x, "idx": np.arange(len(x), dtype=np.int32)},
                          self.eval_batch_size, batch_sharding(ctx.mesh))
        metrics = {**reconstruction_report(out["logits"], x), **pca_report(self.pca, x),
                   "pca_explained_variance": self.pca.explained_variance_ratio}
        if self.denoising:
            noisy = reconstruction_report(out["noisy_logits"], x)
            metrics.update(denoise_sq_error=noisy["sq_error"], denoise_bce=noisy["bce"],
                           pca_denoise_sq_error=pca_report(self.pca, out["noisy"], x)["pca_sq_error"])
        if self.model.variational:
            metrics.update(elbo=float(np.mean(out["elbo"])), kl=float(np.mean(out["kl"])))
        if len(self.dataset.input_shape) == 3:
            self._pictures(state, ctx.writer, ctx.step, x, arrays.get("y"), out)
        return metrics

    def params(self, state: TrainState) -> Any:
        return state.params

    # ---- pictures
    def _pictures(self, state: TrainState, writer: MetricWriter, step: int, x: np.ndarray, y: np.ndarray | None,
                  out: dict[str, np.ndarray]) -> None:
        if not writer.enabled:
            return
        shown = _one_per_class(y, len(x), 10)
        rows = [x[shown]]
        if self.denoising:
            rows += [out["noisy"][shown], _sigmoid(out["noisy_logits"][shown])]
        rows += [_sigmoid(out["logits"][shown]), np.clip(self.pca.reconstruct(x[shown]), 0, 1)]
        writer.image(step, "reconstructions", _grid(np.concatenate(rows), len(shown)))

        # Interpolation between digits of consecutive classes; the end columns are the inputs themselves.
        codes = out["code"]
        a, b = shown, np.roll(shown, -1)
        alphas = np.linspace(0.0, 1.0, self.cfg.interpolation_steps)[None, :, None]
        line = (1 - alphas) * codes[a][:, None] + alphas * codes[b][:, None]  # (pairs, steps, latent)
        decoded = self._decode_host(state, line.reshape(-1, codes.shape[1]))
        decoded = decoded.reshape(len(a), self.cfg.interpolation_steps, *x.shape[1:])
        grid = np.concatenate([x[a][:, None], decoded, x[b][:, None]], axis=1)
        writer.image(step, "interpolation", _grid(grid.reshape(-1, *x.shape[1:]), self.cfg.interpolation_steps + 2))

        if codes.shape[1] == 2:
            writer.figure(step, "codes", _code_scatter(codes, y, step))
        if self.model.variational:
            # numpy seeded by the run key (host-side, nothing to compile); the same draws at every evaluation
            words = np.asarray(jax.device_get(jax.random.key_data(state.rng))).ravel().tolist()
            z = np.random.default_rng([*words, _SAMPLE_STREAM]).standard_normal((64, self.model.latent))
            writer.image(step, "samples", _grid(self._decode_host(state, z), 8))
            if self.model.latent == 2:
                from scipy.stats import norm

                q = norm.ppf(np.linspace(0.05, 0.95, 15))
                z = np.stack(np.meshgrid(q, q[::-1]), -1).reshape(-1, 2).astype(np.float32)
                writer.image(step, "manifold", _grid(self._decode_host(state, z), 15))


def _grid(images: np.ndarray, ncol: int) -> np.ndarray:
    """`image_grid`, enlarged (nearest neighbour) so that small images such as 8x8 digits are legible."""
    grid = image_grid(images, ncol=ncol)
    scale = max(1, math.ceil(28 / images.shape[1]))
    return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, np.float64)))


def _one_per_class(y: np.ndarray | None, n: int, k: int) -> np.ndarray:
    """Indices of the first example of each of the first `k` classes (the first `k` examples without labels)."""
    if y is None or y.dtype.kind not in "iu":
        return np.arange(min(k, n))
    classes = np.unique(y)[:k]
    return np.array([np.flatnonzero(y == c)[0] for c in classes])


def _code_scatter(codes: np.ndarray, y: np.ndarray | None, step: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    if y is not None and y.dtype.kind in "iu":
        points = ax.scatter(codes[:, 0], codes[:, 1], c=y, cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
        fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    else:
        ax.scatter(codes[:, 0], codes[:, 1], s=6)
    ax.set(xlabel="code 1", ylabel="code 2", title=f"test codes, step {step}")
    fig.tight_layout()
    return fig
