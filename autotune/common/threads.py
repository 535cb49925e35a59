"""TVM's runtime thread count: read from ``TVM_NUM_THREADS`` when its thread pool starts.

Left unset, TVM may start fewer threads than the process may use, and schedules made for several
cores then run on one; so every entry point says how many it wants before TVM loads, and a process
that already runs TVM resizes the pool.
"""

from __future__ import annotations

import os
import sys

ENV = "TVM_NUM_THREADS"


def thread_env(threads: int) -> dict[str, str]:
    """The environment entry that gives a new process ``threads`` TVM runtime threads."""
    return {ENV: str(threads)}


def set_tvm_threads(threads: int) -> None:
    """Give this process ``threads`` TVM runtime threads, now or when TVM loads."""
    os.environ[ENV] = str(threads)
    if "tvm" in sys.modules:
        import tvm

        tvm.get_global_func("runtime.config_threadpool")(0, threads)


def default_tvm_threads(threads: int | None) -> None:
    """``threads`` TVM runtime threads unless the caller set a number (``TVM_NUM_THREADS`` or
    ``OMP_NUM_THREADS``, which TVM reads), whether TVM runs already or not.

    Left to itself TVM sizes its pool to half the cores on x86, and, with neither variable set,
    reads ``/sys/devices/system/cpu/online`` at every parallel launch (a few microseconds each,
    a hundred launches per inference)."""
    if threads and ENV not in os.environ and "OMP_NUM_THREADS" not in os.environ:
        set_tvm_threads(threads)
