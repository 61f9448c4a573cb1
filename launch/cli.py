"""The absl flags parser of every `python -m launch.*` entry point: a bad flag is one line on stderr, exit 2."""

from __future__ import annotations

import sys

from absl import flags

from research.errors import EXIT_BAD_INPUT


def fail(message: str, code: int = EXIT_BAD_INPUT, prefix: str = "error: ") -> None:
    """End the process with `<prefix><message>` as one line on stderr."""
    text = " ".join(str(message).split())  # one line, whatever the message held
    for absl_prefix in ("ERROR:: ", "ERROR: "):  # absl's own prefix on some of its errors
        text = text.removeprefix(absl_prefix)
    sys.stderr.write(f"{prefix}{text}\n")
    sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
    """`app.run(..., flags_parser=parse_flags)`: unknown flags, bad values, unreadable flagfiles and stray
    arguments exit 2 with one line (absl's own parser prints the usage and a traceback-like block instead)."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e))
    except UnicodeDecodeError as e:
        fail(f"a flagfile is not UTF-8 text ({e.reason} at byte {e.start})")
    except OSError as e:
        fail(f"cannot read a flagfile: {e}")
    if len(rest) > 1:
        fail(f"unexpected arguments {rest[1:]} (flags are --name=value)")
    return rest
