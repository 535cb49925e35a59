"""The exceptions users see: a clear, single-line message, never a traceback.

Each carries the exit code the command line ends with (``autotune --help`` lists them): 2 bad input
or usage, 3 validation failed, 4 database or environment, 130 interrupted (Ctrl-C), 143 terminated.
"""


class AutotuneError(Exception):
    """A problem with the user's input or environment, worded for the user (exit code 2)."""

    exit_code = 2


class ValidationFailed(AutotuneError):
    """A compiled artifact does not match the reference within the tolerances (exit code 3)."""

    exit_code = 3


class EnvironmentFault(AutotuneError):
    """The database or the operating system cannot do what the job needs (disk full, read-only,
    unreachable); the job stays resumable (exit code 4)."""

    exit_code = 4


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where the process was, so that it stops as cleanly as on Ctrl-C (exit 143)."""

    exit_code = 143
