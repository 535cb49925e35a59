"""A candidate that segfaults, hangs or fails to compile fails its own trial, recorded with the
reason; the job goes on. (A native crash inside the compiler takes the same path as the run-time
segfault: the build worker dies, the trial fails with the signal, a fresh worker takes over.)"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from autotune.store.engine import Store
from autotune.store.metaschedule import SqlDatabase
from autotune.measure.config import MeasureConfig
from autotune.measure.measurer import Measurer
from autotune.store.schema import TuningRecordRow
from autotune.search.budget import Budget
from autotune.search.driver import search
from autotune.targets.names import canonical, parse_target
from autotune.errors import EnvironmentFault
from autotune.frontend.tasks import Task

from .faults import chaos_record


def _task(name: str, build_compute) -> Task:
    import tvm
    from tvm import te

    a = te.placeholder((16,), name="A")
    out = build_compute(a, te)
    mod = tvm.IRModule({"main": te.create_prim_func([a, out])})
    return Task(name=name, weight=1, flops=16.0, structural_hash=name, mod=mod,
                target=parse_target("host"))


def _segfaulting(a, te):
    """Reads 4 GiB past the end of its input: the process dies of SIGSEGV."""
    return te.compute((16,), lambda i: a[i + (1 << 30)] * 2.0, name="oob")


def _hanging(a, te):
    """Ten billion iterations: runs for minutes, far past the runner's timeout."""
    k1 = te.reduce_axis((0, 100000), name="k1")
    k2 = te.reduce_axis((0, 100000), name="k2")
    return te.compute((16,), lambda i: te.sum(a[(i + k1 + k2) % 16], axis=[k1, k2]), name="slow")


def _uncompilable(a, te):
    """An intrinsic the CPU code generator does not know: the compiler fails on it."""
    import tvm

    return te.compute((16,), lambda i: tvm.tirx.call_intrin(
        "float32", "tirx.tvm_warp_shuffle", a[i], a[i], 0, 32, 32), name="bad")


def _healthy(a, te):
    return te.compute((16,), lambda i: a[i] + 1.0, name="ok")


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tasks = [_task("segfaults", _segfaulting), _task("hangs", _hanging),
             _task("uncompilable", _uncompilable), _task("healthy", _healthy)]
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('iso') / 'db.sqlite'}")
    database = SqlDatabase(store, canonical(tasks[0].target))
    with Measurer(MeasureConfig(run_timeout_s=3.0)) as measurer:
        result = search(tasks, database, measurer, Budget(trials=12))
    with store.session() as session:
        rows = list(session.scalars(select(TuningRecordRow)))
    by_task = {t.name: [r for r in rows if r.workload_id == database.workload_id(t.mod)] for t in tasks}
    return result, by_task


def test_job_completes_with_every_trial_recorded(measured):
    result, by_task = measured
    assert result.trials_measured == 12
    assert sum(len(rows) for rows in by_task.values()) == 12


def test_segfault_is_a_failed_trial_with_its_signal(measured):
    _, by_task = measured
    rows = by_task["segfaults"]
    seen = [(r.provenance, r.error_kind, r.error_msg, r.latency_s) for r in rows]
    assert rows and all(r.latency_s is None and r.error_msg for r in rows), seen
    ran = [r for r in rows if r.error_kind == "run"]  # (a search variant may fail to build instead)
    assert ran and all("SIGSEGV" in r.error_msg for r in ran), seen


def test_hang_is_a_failed_trial_after_the_timeout(measured):
    _, by_task = measured
    rows = by_task["hangs"]
    seen = [(r.provenance, r.error_kind, r.error_msg, r.latency_s) for r in rows]
    assert rows and all(r.latency_s is None and r.error_msg for r in rows), seen
    ran = [r for r in rows if r.error_kind == "run"]
    assert ran and all("timed out" in r.error_msg for r in ran), seen


def test_compiler_failure_is_a_failed_build_with_its_message(measured):
    _, by_task = measured
    rows = by_task["uncompilable"]
    assert rows and all(r.error_kind == "build" and "unknown intrinsic" in r.error_msg for r in rows)


def test_healthy_task_still_measured(measured):
    _, by_task = measured
    assert any(r.latency_s and r.error_kind is None for r in by_task["healthy"])


def _runaway(a, te):
    """Writes a 4 GiB intermediate buffer: past the workers' address-space limit below."""
    big = te.compute((1 << 30,), lambda i: a[i % 16] * 2.0, name="big")
    return te.compute((16,), lambda i: big[i * (1 << 26)], name="pick")


def test_a_runaway_memory_candidate_fails_its_own_trial(tmp_path):
    """Under a 2 GiB address-space limit the 4 GiB candidate fails; without one it would run."""
    from autotune.search.fixed import FixedSchedule, measure_schedules
    from autotune.common.records import Provenance

    import tvm

    tasks = [_task("runaway", _runaway), _task("healthy", _healthy)]
    database = SqlDatabase(Store(f"sqlite:///{tmp_path / 'db.sqlite'}"), canonical(tasks[0].target))
    with Measurer(MeasureConfig(run_timeout_s=30.0, memory_limit_mb=2048)) as measurer:
        latencies = measure_schedules([FixedSchedule(t, tvm.s_tir.Schedule(t.mod), Provenance.DEFAULT)
                                       for t in tasks], database, measurer)
    assert latencies[0] is None and latencies[1] is not None
    with database.store.session() as session:
        row = session.scalars(select(TuningRecordRow).where(
            TuningRecordRow.workload_id == database.workload_id(tasks[0].mod))).one()
    assert row.error_kind == "run" and row.error_msg
    chaos_record("runaway-memory candidate", completed=1)


def test_a_worker_slow_to_start_never_answers_for_another_job(monkeypatch):
    """The desync case: a replacement worker that has not answered its start-up ping in time is
    killed, not left holding an unread reply that the next job would take for its own."""
    import autotune.measure.workers as workers

    monkeypatch.setattr(workers, "STARTUP_TIMEOUT_S", 0.01)  # no worker can import TVM this fast
    with pytest.raises(EnvironmentFault, match="do not start"):
        workers.WorkerPool(1)
    monkeypatch.undo()
    pool = workers.WorkerPool(1)
    try:
        results = pool.map("ping", [()] * 3, timeout_s=60)
        assert [r.value for r in results] == ["ready"] * 3
        pool._workers[0].process.kill()  # dies while idle: the next job goes to a replacement
        pool._workers[0].process.wait()
        assert [r.value for r in pool.map("ping", [()], timeout_s=60)] == ["ready"]
    finally:
        pool.close()
    chaos_record("worker slow to start", injected=2, completed=1)
