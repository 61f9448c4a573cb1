"""The exceptions that end a run on purpose, and the exit status each one means (defined here only).

Launch modules turn them into one line on stderr and these exit codes; the sweep worker reads the same codes
back to decide whether a trial is worth retrying. Library code raises `ConfigError` wherever the cause is
something the user asked for (an unknown dataset, a batch size that does not divide the device count, a
checkpoint from another architecture), never for internal bugs.
"""

from __future__ import annotations

import signal

EXIT_BAD_INPUT = 2    # ConfigError: bad flags, values, files or workdir
EXIT_NON_FINITE = 3   # NonFiniteError: a training loss or norm turned NaN/Inf


class ConfigError(ValueError):
    """Bad input from the user: reported as one line, exit status 2."""

    exit_code = EXIT_BAD_INPUT


class NonFiniteError(RuntimeError):
    """A training loss or norm became NaN/Inf; the message names the step. Exit status 3."""

    exit_code = EXIT_NON_FINITE


class Interrupted(RuntimeError):
    """Training stopped on a signal after saving a checkpoint; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = interrupted_exit_code(signum)


def interrupted_exit_code(signum: int) -> int:
    """The exit status of a run stopped by `signum` after a checkpoint (the shell's 128 + n convention)."""
    return 128 + int(signum)


RESUMABLE_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # research/preemption.py saves a checkpoint on these


def exit_reason(code: int) -> str:
    """What a launch module's exit status says about how the run ended (for sweep logs and ledgers)."""
    if code == 0:
        return "finished"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    if code == EXIT_BAD_INPUT:
        return f"config error (exit {code})"
    if code == EXIT_NON_FINITE:
        return f"non-finite loss or norm (exit {code})"
    for sig in RESUMABLE_SIGNALS:
        if code == interrupted_exit_code(sig):
            return f"stopped by {sig.name} after a checkpoint (exit {code})"
    return f"exit {code}"


def resumable(code: int) -> bool:
    """Whether a run that ended with `code` can be resumed from its checkpoints by running it again: killed by a
    signal, or stopped cleanly by SIGINT/SIGTERM after saving."""
    return code < 0 or code in {interrupted_exit_code(s) for s in RESUMABLE_SIGNALS}
