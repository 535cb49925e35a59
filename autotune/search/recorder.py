"""The measure callback committing every search candidate, failures included, as it arrives; a
candidate cut short by a stop signal is not measured and is left out (the resumed job measures it)."""

from __future__ import annotations

from collections.abc import Callable

from ..common import stopping
from ..measure.outcome import outcome_of


def make_recorder(database, on_measured: Callable[[float | None], None], runner: str):
    """A MetaSchedule measure callback committing every candidate to ``database`` (as timed by
    ``runner``) and telling ``on_measured`` its latency (None for a failure)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.database import TuningRecord
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class RecordEverything(PyMeasureCallback):
        """Commits successes and failures alike."""

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            task = task_scheduler.tasks_[task_id].ctx
            workload = database.commit_workload(task.mod)
            for cand, built, ran in zip(measure_candidates, builder_results, runner_results):
                outcome = outcome_of(built, ran)
                if stopping.STOPPED in (outcome.error_msg or ""):
                    continue
                record = TuningRecord(cand.sch.trace, workload, outcome.run_secs, task.target,
                                      cand.args_info)
                database.commit_record(record, outcome, runner=runner)
                on_measured(outcome.latency_s)

    return RecordEverything()
