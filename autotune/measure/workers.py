"""Warm worker processes that isolate crashes and hangs.

Each worker is a spawned process that imports TVM once and then serves jobs from
``worker_jobs`` over a pipe. A job whose worker dies (segfault, abort) or outlives its
timeout fails alone: the worker is replaced and the caller gets an error string for that job.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait


_STARTUP_TIMEOUT_S = 120.0


@dataclass
class JobResult:
    """What one job returned, or why it failed."""

    value: object = None
    error: str | None = None


def serve(fd: int) -> None:
    """Worker main loop: run named jobs received on socket ``fd`` until it closes."""
    from . import worker_jobs

    conn = Connection(fd)

    while True:
        try:
            name, args = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        try:
            conn.send((True, worker_jobs.JOBS[name](*args)))
        except Exception as err:  # report every job failure to the parent, never die of it
            conn.send((False, f"{type(err).__name__}: {err}"))


class _Worker:
    """A ``python -c`` child serving jobs on one end of a socket pair (no __main__ re-import)."""

    def __init__(self, env: dict[str, str] | None = None):
        parent, child = socket.socketpair()
        child_fd = child.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"from autotune.measure.workers import serve; serve({child_fd})"],
            pass_fds=[child_fd], stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None)
        child.close()
        self.conn = Connection(parent.detach())

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=5)
        self.conn.close()


def _death_reason(process: subprocess.Popen) -> str:
    code = process.wait(timeout=5)
    if code is not None and code < 0:
        return f"worker killed by {signal.Signals(-code).name}"
    return f"worker exited with code {code}"


class WorkerPool:
    """A fixed number of warm workers; ``map`` runs jobs on them with a per-job timeout."""

    def __init__(self, size: int, env: dict[str, str] | None = None):
        self._env = env
        self._workers = [_Worker(env) for _ in range(max(1, size))]
        self.busy_seconds = 0.0  # wall time spent inside ``map``, start-up excluded
        self.map("ping", [()] * len(self._workers), timeout_s=_STARTUP_TIMEOUT_S)
        self.busy_seconds = 0.0

    @property
    def size(self) -> int:
        return len(self._workers)

    def map(self, name: str, arg_tuples: Sequence[tuple], timeout_s: float) -> list[JobResult]:
        """Run job ``name`` once per argument tuple; results come back in order."""
        started = time.monotonic()
        results: list[JobResult | None] = [None] * len(arg_tuples)
        pending = list(range(len(arg_tuples)))
        busy: dict[int, tuple[int, float]] = {}  # worker index -> (job index, deadline)
        while pending or busy:
            for w_index in range(len(self._workers)):
                if w_index not in busy and pending:
                    job = pending.pop(0)
                    self._workers[w_index].conn.send((name, arg_tuples[job]))
                    busy[w_index] = (job, time.monotonic() + timeout_s)
            self._collect(busy, results)
        self.busy_seconds += time.monotonic() - started
        return results  # type: ignore[return-value]

    def _collect(self, busy: dict[int, tuple[int, float]], results: list) -> None:
        conns = {self._workers[w].conn: w for w in busy}
        deadline = min(d for _, d in busy.values())
        ready = wait(list(conns), timeout=max(0.0, deadline - time.monotonic()))
        for conn in ready:
            w_index = conns[conn]
            job, _ = busy.pop(w_index)
            try:
                ok, payload = conn.recv()
                results[job] = JobResult(payload, None) if ok else JobResult(None, payload)
            except (EOFError, OSError):
                results[job] = JobResult(None, _death_reason(self._workers[w_index].process))
                self._replace(w_index)
        now = time.monotonic()
        for w_index, (job, job_deadline) in list(busy.items()):
            if job_deadline <= now:
                busy.pop(w_index)
                results[job] = JobResult(None, "timed out")
                self._replace(w_index)

    def _replace(self, w_index: int) -> None:
        self._workers[w_index].kill()
        worker = _Worker(self._env)
        self._workers[w_index] = worker
        worker.conn.send(("ping", ()))
        if worker.conn.poll(_STARTUP_TIMEOUT_S):
            worker.conn.recv()

    def close(self) -> None:
        """Stop all workers."""
        for worker in self._workers:
            worker.kill()
        self._workers = []
