"""The exceptions users see: a clear, single-line message, never a traceback.

Each carries the exit code the command line ends with (``autotune --help`` lists them).
"""


class AutotuneError(Exception):
    """A problem with the user's input or environment, worded for the user (exit code 2)."""

    exit_code = 2


class ValidationFailed(AutotuneError):
    """A compiled artifact does not match the reference within the tolerances (exit code 3)."""

    exit_code = 3
