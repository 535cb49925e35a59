"""Stop signals (SIGTERM, SIGINT) that end a job at a safe point.

Raising from a signal handler is safe only while Python is not running as a callback of native
code: an exception unwinding through TVM's C++ (the search calling back the builder, the runner,
the cost model and the recorder) can leave it half-updated and crash the process. So native calls
with Python callbacks run inside ``deferred()``: there a first stop signal is only noted, work in
progress winds down (``requested()``), and ``Interrupted`` is raised once the native call has
returned. Elsewhere, and on a second signal, the stop is raised where the main thread is.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from ..errors import Interrupted

STOPPED = "stopped: the job received a stop signal"  # the reason of work cut short by a stop

_received: int | None = None
_deferring = 0  # depth of the ``deferred`` blocks the main thread is in


def requested() -> bool:
    """Whether a stop signal has arrived."""
    return _received is not None


def exit_code() -> int:
    """The exit code of a stopped process: 143 for SIGTERM, 130 for SIGINT."""
    return Interrupted.exit_code if _received == signal.SIGTERM else 130


def _raise_stop(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(f"terminated by {signal.Signals(signum).name}")


def _on_signal(signum, _frame) -> None:
    global _received
    first = _received is None
    _received = signum
    if _deferring and first:
        return  # ``deferred`` raises once the native call returns
    _raise_stop(signum)


def install() -> dict:
    """Install the stop handlers (main thread only): the previous ones, for ``restore``."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        return {}
    _received = None
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}


def restore(previous: dict) -> None:
    """Put back the handlers ``install`` replaced; the stop they received is forgotten (a later job
    in the same process must not stop on it)."""
    global _received
    _received = None
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block in which a first stop signal does not raise (a native call with Python callbacks
    runs in it); the stop is raised when the block ends."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if _received is not None and not _deferring:
        _raise_stop(_received)
