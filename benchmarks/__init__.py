"""Benchmarks: `python -m benchmarks.run [--only NAME]`. Each prints medians over repeats and the ratio to a
baseline measured in the same run. Run them alone on the machine: a timing taken beside other work is noise."""

import research  # noqa: F401  (applies research.xla_workarounds before any benchmark starts JAX's backend)
