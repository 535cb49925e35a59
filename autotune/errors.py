"""The one exception type users see: a clear, single-line message, never a traceback."""


class AutotuneError(Exception):
    """A problem with the user's input or environment, worded for the user."""
