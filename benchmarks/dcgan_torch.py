"""DCGAN train step (one D update on real + fake, one G update): ours vs a PyTorch twin of the same network.

The pytorch/examples DCGAN: 64x64x3 images, nz 100, ngf = ndf = 64, batch 64, random data, Adam 2e-4 (0.5,
0.999), non-saturating BCE loss. Ours is `GANTask.train_step` (the code `launch.gan` runs) with
`DCGANGenerator` / `DCGANDiscriminator` at the same sizes, timed per dispatched step, with the generator's
transposed convolutions computed each way `--upsample` offers (`phase`, the default: one 3x3 convolution to 4x the
channels and depth-to-space; `mixed`: four 2x2 phase convolutions for the hidden layers and `nn.ConvTranspose` for
the output layer; `phase2x2`; `transpose`). Target: ours >= 0.8x PyTorch's speed on this CPU.
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks.timing import median_seconds, table
from research.models.dcgan import UPSAMPLERS

BATCH, SIZE, NZ, WIDTH = 64, 64, 100, 64


def ours(repeats: int, upsample: str) -> float:
    from research.data.registry import Dataset
    from research.models.dcgan import DCGANDiscriminator, DCGANGenerator
    from research.optim import OptimizerConfig
    from research.tasks.gan import GANConfig, GANTask

    rng = np.random.default_rng(0)
    x = rng.random((BATCH, SIZE, SIZE, 3), np.float32)
    ds = Dataset("random64", {"train": {"x": x}, "test": {"x": x}})
    opt = OptimizerConfig("adam", 2e-4, beta1=0.5)
    task = GANTask(DCGANGenerator(SIZE, 3, WIDTH, upsample=upsample), DCGANDiscriminator(SIZE, WIDTH), ds, opt, opt,
                   GANConfig(z_dim=NZ, loss="nonsaturating"), batch_size=BATCH, steps=100)
    state = jax.jit(task.init_state)(jax.random.PRNGKey(0))
    step = jax.jit(task.train_step, donate_argnums=0)
    batch = {"x": jax.device_put(x)}
    holder = [state]

    def call():
        holder[0], m = step(holder[0], batch)
        jax.block_until_ready(m)

    return median_seconds(call, repeats, warmup=2)


def torch_twin(repeats: int) -> float:
    from benchmarks.torch_twins import TorchDCGAN

    gan = TorchDCGAN(nz=NZ, ngf=WIDTH, ndf=WIDTH, batch=BATCH)
    return median_seconds(gan.step, repeats, warmup=2)


def main(repeats: int = 5) -> str:
    theirs = torch_twin(repeats)
    rows = [["PyTorch (twin, ConvTranspose2d)", theirs, 1.0]]
    for upsample in UPSAMPLERS:
        t = ours(repeats, upsample)
        rows.append([f"ours, --upsample={upsample}", t, theirs / t])
    return table("DCGAN 64x64 train step (D + G), batch 64: seconds per step (target: ours >= 0.8x PyTorch)",
                 ["implementation", "s / step", "speed vs PyTorch"], rows)


if __name__ == "__main__":
    main()
