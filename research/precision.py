"""Mixed precision: compute in a low-precision dtype while parameters and optimizer state stay float32.

Tasks cast parameters and inputs to the compute dtype inside the loss; gradients flow back through the cast
to the float32 parameters, and losses are taken in float32. On CPU bfloat16 is for correctness checks only:
its speed-up is a GPU/TPU matter.
"""

from typing import Any

import jax
import jax.numpy as jnp

from research.errors import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Any:
    if name not in DTYPES:
        raise ConfigError(f"unknown compute dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def cast(tree: Any, dtype: Any) -> Any:
    """Floating-point leaves of `tree` in `dtype` (a no-op for float32)."""
    if dtype == jnp.float32:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
