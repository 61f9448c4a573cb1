"""Whole-dataset transforms applied once, before training (on-device per-batch augmentation lives elsewhere)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from research.data.registry import Dataset


def resize_images(x: np.ndarray, size: int, chunk: int = 1000) -> np.ndarray:
    """NHWC images resized to size x size (bilinear with antialiasing), in chunks to bound memory."""
    if x.shape[1:3] == (size, size):
        return x
    out = [np.asarray(jax.image.resize(jnp.asarray(x[i:i + chunk]), (len(x[i:i + chunk]), size, size, x.shape[3]),
                                       "linear")) for i in range(0, len(x), chunk)]
    return np.concatenate(out).astype(np.float32)


def resized(dataset: Dataset, size: int) -> Dataset:
    """`dataset` with every split's images `x` resized to size x size (a no-op at their own size). The resized
    images are float32 values (uint8-coded images are decoded first; the result has no `scales`)."""
    if dataset.input_shape[:2] == (size, size):
        return dataset
    resize = lambda arrays: {**arrays, "x": resize_images(arrays["x"], size)}
    splits = {name: resize(dataset.split(name)) for name in dataset.splits}
    return dataclasses.replace(dataset, splits=splits, info={**dataset.info, "resized_to": size}, scales={})
