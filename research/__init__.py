"""Classic generative and sequence models in JAX: the library behind `launch/`."""

from research import xla_workarounds

xla_workarounds.apply()
