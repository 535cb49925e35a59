"""Error text for users: one line, bounded length."""

from __future__ import annotations

LIMIT = 300  # characters: a terminal line and a half, enough for TVM's reason without its dump


def one_line(err: BaseException | str, limit: int = LIMIT) -> str:
    """``err`` as one line of at most ``limit`` characters (its type name when it has no text)."""
    text = " ".join(str(err).split())
    if not text and isinstance(err, BaseException):
        text = type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(err: BaseException | str, limit: int = LIMIT) -> str:
    """The first non-empty line of ``err`` (where TVM and ONNX Runtime put the reason), bounded."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return one_line(lines[0] if lines else err, limit)


def last_line(err: BaseException | str, limit: int = LIMIT) -> str:
    """The last non-empty line of ``err`` (where a remote traceback puts the reason), bounded."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return one_line(lines[-1] if lines else err, limit)
