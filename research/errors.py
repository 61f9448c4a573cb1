"""The one exception type for bad user input.

Launch modules turn a `ConfigError` into a one-line message on stderr and a non-zero exit; library code
raises it wherever the cause is something the user asked for (an unknown dataset, a batch size that does not
divide the device count, a checkpoint from another architecture), never for internal bugs.
"""


class ConfigError(ValueError):
    """Bad input from the user: reported as one line, exit status 2."""


class NonFiniteError(RuntimeError):
    """A training loss or norm became NaN/Inf; the message names the step."""


class Interrupted(RuntimeError):
    """Training stopped on a signal after saving a checkpoint; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
