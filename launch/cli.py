"""The absl flags parser of every `python -m launch.*` entry point: a bad flag is one line on stderr, exit 2."""

from __future__ import annotations

import sys

from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
    """`app.run(..., flags_parser=parse_flags)`: unknown flags, bad values and stray arguments exit 2 with one line
    (absl's own parser prints the usage and a traceback-like block instead)."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    if len(rest) > 1:
        sys.stderr.write(f"error: unexpected arguments {rest[1:]} (flags are --name=value)\n")
        sys.exit(2)
    return rest
