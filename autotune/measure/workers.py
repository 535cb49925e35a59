"""Warm worker processes that isolate crashes, hangs and runaway memory.

Each worker is a spawned process that imports TVM once and then serves jobs from ``worker_jobs``
over a socket. Every message carries a job id, and a reply is taken only for the job it names: a
worker that answers out of step (a late reply to an abandoned job) is replaced, so no result is
ever attributed to the wrong candidate. A job whose worker dies (segfault, abort, out of memory)
or outlives its timeout fails alone: the worker is replaced and the caller gets an error string
for that job; a job that could not even be handed over (its worker died while idle) is handed to
the replacement once. Workers die with their parent (``PR_SET_PDEATHSIG``) and run under an
address-space limit, so a runaway candidate fails its own trial instead of exhausting the host.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from ..common import stopping
from ..errors import EnvironmentFault

STARTUP_TIMEOUT_S = 120.0  # a fresh worker imports TVM before it answers
STOP_POLL_S = 0.25  # how soon a batch in progress notices a stop signal
STARTS_KILLED_LIMIT = 10  # start-ups cut short by a signal before the pool gives up
MEMORY_ENV = "AUTOTUNE_WORKER_MEMORY_MB"
ROLE_ENV = "AUTOTUNE_WORKER_ROLE"  # builder or runner: which pool a worker process serves
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_ids = itertools.count(1)


@dataclass
class JobResult:
    """What one job returned, or why it failed."""

    value: object = None
    error: str | None = None


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux), and exit now if it has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the socket closing still ends ``serve``
        pass
    if os.getppid() != parent:
        os._exit(0)


def _limit_memory() -> None:
    """Cap this process's address space at ``$AUTOTUNE_WORKER_MEMORY_MB`` (when set)."""
    megabytes = os.environ.get(MEMORY_ENV)
    if megabytes:
        limit = int(megabytes) << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def serve(fd: int, parent: int) -> None:
    """Worker main loop: run the jobs received on socket ``fd`` until it closes, replying to each
    with its id."""
    _die_with_parent(parent)
    _limit_memory()
    from . import worker_jobs

    conn = Connection(fd)
    while True:
        try:
            job_id, name, args = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        try:
            reply = (job_id, True, worker_jobs.JOBS[name](*args))
        except MemoryError:
            reply = (job_id, False, "MemoryError: the candidate exceeded the worker's memory limit")
        except Exception as err:  # report every job failure to the parent, never die of it
            reply = (job_id, False, f"{type(err).__name__}: {err}")
        conn.send(reply)


class _Worker:
    """A ``python -c`` child serving jobs on one end of a socket pair (no __main__ re-import)."""

    def __init__(self, env: dict[str, str] | None = None):
        parent, child = socket.socketpair()
        child_fd = child.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-c",
             f"from autotune.measure.workers import serve; serve({child_fd}, {os.getpid()})"],
            pass_fds=[child_fd], stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None)
        child.close()
        self.conn = Connection(parent.detach())

    def send(self, job_id: int, name: str, args: tuple) -> bool:
        """Hand a job over; False if the worker is gone."""
        try:
            self.conn.send((job_id, name, args))
            return True
        except OSError:  # BrokenPipeError, ConnectionResetError: it died while idle
            return False

    def ready(self, timeout_s: float) -> bool:
        """Whether the worker answers a ping within ``timeout_s`` (then it is in step)."""
        job_id = next(_ids)
        if not self.send(job_id, "ping", ()):
            return False
        try:
            return self.conn.poll(timeout_s) and self.conn.recv()[0] == job_id
        except (EOFError, OSError):
            return False

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=5)
        self.conn.close()


def _killed_by_signal(process: subprocess.Popen) -> bool:
    """Whether the process has died of a signal (checked before we kill it ourselves)."""
    try:
        code = process.wait(timeout=1)
    except subprocess.TimeoutExpired:  # alive: it is silent, not killed
        return False
    return code < 0


def _death_reason(process: subprocess.Popen) -> str:
    code = process.wait(timeout=5)
    if code is not None and code < 0:
        return f"worker killed by {signal.Signals(-code).name}"
    return f"worker exited with code {code}"


@dataclass
class _InFlight:
    job: int  # index of the job in the batch
    job_id: int
    deadline: float


class WorkerPool:
    """A fixed number of warm workers; ``map`` runs jobs on them with a per-job timeout."""

    def __init__(self, size: int, env: dict[str, str] | None = None):
        self._env = env
        self.fault: EnvironmentFault | None = None  # kept: TVM rewraps what a builder or runner raises
        self._workers = [self._started() for _ in range(max(1, size))]
        self.busy_seconds = 0.0  # wall time spent inside ``map``, start-up excluded

    def _started(self) -> _Worker:
        """A new worker that answered its ping. One that does not answer in time, or exits, is
        killed and retried once; one killed by a signal while it starts (someone's kill -9, the OOM
        killer) is retried up to ``STARTS_KILLED_LIMIT`` times."""
        silent = killed = 0
        while silent < 2 and killed < STARTS_KILLED_LIMIT:
            worker = _Worker(self._env)
            if worker.ready(STARTUP_TIMEOUT_S):
                return worker
            if _killed_by_signal(worker.process):
                killed += 1
            else:
                silent += 1
            worker.kill()
        self.fault = EnvironmentFault(f"measurement workers do not start (no answer in {STARTUP_TIMEOUT_S:.0f} s "
                                      f"twice, or killed {STARTS_KILLED_LIMIT} times as they started): is the "
                                      "host out of memory or processes? Rerun the same command to resume")
        raise self.fault

    @property
    def size(self) -> int:
        return len(self._workers)

    def map(self, name: str, arg_tuples: Sequence[tuple], timeout_s: float) -> list[JobResult]:
        """Run job ``name`` once per argument tuple; results come back in order. After a stop signal
        (``common.stopping``) the jobs not done fail with ``stopping.STOPPED`` and their workers are
        killed, so that no late reply is waiting when the pool is used again."""
        started = time.monotonic()
        results: list[JobResult | None] = [None] * len(arg_tuples)
        pending = list(range(len(arg_tuples)))
        handed: set[int] = set()  # jobs already handed over once to a worker that was gone
        busy: dict[int, _InFlight] = {}  # worker index -> its job
        while pending or busy:
            for w_index in range(len(self._workers)):
                if w_index not in busy and pending:
                    job = pending.pop(0)
                    job_id = next(_ids)
                    if self._workers[w_index].send(job_id, name, arg_tuples[job]):
                        busy[w_index] = _InFlight(job, job_id, time.monotonic() + timeout_s)
                    else:
                        self._replace(w_index)
                        if job in handed:
                            results[job] = JobResult(None, "worker died before taking the job, twice")
                        else:
                            handed.add(job)
                            pending.insert(0, job)
            if busy:
                self._collect(busy, results)
            if stopping.requested():
                self._abandon(pending, busy, results)
        self.busy_seconds += time.monotonic() - started
        return results  # type: ignore[return-value]

    def _collect(self, busy: dict[int, _InFlight], results: list) -> None:
        conns = {self._workers[w].conn: w for w in busy}
        deadline = min(f.deadline for f in busy.values())
        for conn in wait(list(conns), timeout=min(STOP_POLL_S, max(0.0, deadline - time.monotonic()))):
            w_index = conns[conn]
            flight = busy.pop(w_index)
            results[flight.job] = self._receive(w_index, flight)
        now = time.monotonic()
        for w_index, flight in list(busy.items()):
            if flight.deadline <= now:
                busy.pop(w_index)
                results[flight.job] = JobResult(None, "timed out")
                self._replace(w_index)

    def _abandon(self, pending: list[int], busy: dict[int, _InFlight], results: list) -> None:
        for w_index, flight in busy.items():
            self._workers[w_index].kill()  # a dead worker is replaced when next handed a job
            results[flight.job] = JobResult(None, stopping.STOPPED)
        for job in pending:
            results[job] = JobResult(None, stopping.STOPPED)
        busy.clear()
        pending.clear()

    def _receive(self, w_index: int, flight: _InFlight) -> JobResult:
        """The reply to ``flight`` from worker ``w_index``; a reply to another job, or none, fails
        the job and replaces the worker."""
        worker = self._workers[w_index]
        try:
            job_id, ok, payload = worker.conn.recv()
        except (EOFError, OSError):
            reason = _death_reason(worker.process)
            self._replace(w_index)
            return JobResult(None, reason)
        if job_id != flight.job_id:
            self._replace(w_index)
            return JobResult(None, f"worker out of step (a reply to job {job_id}, not {flight.job_id}); "
                                   "replaced")
        return JobResult(payload, None) if ok else JobResult(None, payload)

    def _replace(self, w_index: int) -> None:
        self._workers[w_index].kill()
        self._workers[w_index] = self._started()

    def close(self) -> None:
        """Stop all workers."""
        for worker in self._workers:
            worker.kill()
        self._workers = []
