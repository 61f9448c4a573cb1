"""Where the DCGAN step's time goes: each 64x64 DCGAN convolution, forward + backward, XLA:CPU vs PyTorch.

The profile behind `dcgan_torch`'s result. Every discriminator convolution (4x4, stride 2, padding 1; the last
4x4 valid) and every generator transposed convolution (the same shapes in reverse), batch 64, timed as the
gradient of sum(conv(x, w)) with respect to both x and w, i.e. the three convolutions a training step runs per
layer. Both frameworks get the same shapes, float32, NHWC for XLA (what our models use) and NCHW for PyTorch
(what its CPU kernels prefer). Generator layers are timed in each form our generator can compute them:
`Upsample2x` with one 3x3 convolution to 4x the channels + depth-to-space ("phase") or four 2x2 convolutions, one
per output phase ("phase2x2"), and Flax's `nn.ConvTranspose` ("transpose"). The totals are per `--upsample`
choice, which picks a form for the hidden layers and one for the output layer (`UPSAMPLER_LAYERS`; the default
"mixed" is phase2x2 + transpose).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import median_seconds, table
from research.models.dcgan import UPSAMPLER_LAYERS, upsample_layer

BATCH = 64
# (name, in channels, out channels, input size, stride, padding, transposed)
LAYERS = [
    ("D conv1 3->64, 64->32", 3, 64, 64, 2, 1, False),
    ("D conv2 64->128, 32->16", 64, 128, 32, 2, 1, False),
    ("D conv3 128->256, 16->8", 128, 256, 16, 2, 1, False),
    ("D conv4 256->512, 8->4", 256, 512, 8, 2, 1, False),
    ("G tconv2 512->256, 4->8", 512, 256, 4, 2, 1, True),
    ("G tconv3 256->128, 8->16", 256, 128, 8, 2, 1, True),
    ("G tconv4 128->64, 16->32", 128, 64, 16, 2, 1, True),
    ("G tconv5 64->3, 32->64", 64, 3, 32, 2, 1, True),
]


def _ours(cin: int, cout: int, size: int, stride: int, pad: int, upsample: str | None, repeats: int) -> float:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((BATCH, size, size, cin), np.float32))
    if upsample is None:
        w = jnp.asarray(rng.standard_normal((4, 4, cin, cout), np.float32) * 0.02)
        conv = lambda w, x: jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
        module = upsample_layer(upsample, cout, use_bias=False, name=None)
        w = module.init(jax.random.PRNGKey(0), x)
        conv = module.apply
    grad = jax.jit(jax.grad(lambda w, x: jnp.sum(conv(w, x)), argnums=(0, 1)))
    return median_seconds(lambda: jax.block_until_ready(grad(w, x)), repeats, warmup=2)


def _torch(cin: int, cout: int, size: int, stride: int, pad: int, transposed: bool, repeats: int) -> float:
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, cin, size, size, generator=g, requires_grad=True)
    if transposed:
        w = (torch.randn(cin, cout, 4, 4, generator=g) * 0.02).requires_grad_()
        conv = lambda: F.conv_transpose2d(x, w, stride=stride, padding=pad)
    else:
        w = (torch.randn(cout, cin, 4, 4, generator=g) * 0.02).requires_grad_()
        conv = lambda: F.conv2d(x, w, stride=stride, padding=pad)

    def call():
        x.grad = w.grad = None
        conv().sum().backward()

    return median_seconds(call, repeats, warmup=2)


def main(repeats: int = 5) -> str:
    rows, totals = [], {choice: [0.0, 0.0] for choice in UPSAMPLER_LAYERS}
    forms = sorted({form for pair in UPSAMPLER_LAYERS.values() for form in pair})
    last_g = max(i for i, layer in enumerate(LAYERS) if layer[-1])
    for i, (name, *shape, transposed) in enumerate(LAYERS):
        theirs = _torch(*shape, transposed, repeats)
        for upsample in forms if transposed else (None,):
            ours = _ours(*shape, upsample, repeats)
            for choice, (hidden, last) in UPSAMPLER_LAYERS.items():
                if upsample is None or upsample == (last if i == last_g else hidden):
                    totals[choice][0] += ours
                    totals[choice][1] += theirs
            label = f"{name} ({upsample})" if upsample else name
            rows.append([label, ours * 1e3, theirs * 1e3, theirs / ours])
    for choice, (ours, theirs) in totals.items():
        rows.append([f"all eight, G with --upsample={choice}", ours * 1e3, theirs * 1e3, theirs / ours])
    return table("DCGAN convolutions, batch 64, forward + backward (x and w): ms per call",
                 ["layer", "XLA:CPU ms", "PyTorch ms", "speed vs PyTorch"], rows)


if __name__ == "__main__":
    main()
