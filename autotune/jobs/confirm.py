"""Re-time each task's finalists side by side, so compile picks by fair timings.

A record's latency is one measurement, taken alone, whenever the search reached it. This machine's
speed drifts, so the fastest of hundreds of search samples is biased low (the winner's curse), and
a kernel alone keeps its weights in cache where, inside the model, they come from memory. At the
end of a job each task's finalists (the current pick, then the best of each provenance) are timed
again in turns: on a local CPU inside the model, one build of the model per finalist rank, every
kernel timed in place (``autotune.profile``); remotely or on a GPU, alone. The winner, by median
over rounds (the current pick stays unless beaten by more than ``KEEP_MARGIN``), becomes a
``confirm`` record: its trace, its timings, and in ``source`` the pick it was up against and every
contender's record id and re-timed latency. A workload's newest ``confirm`` record is what compile
uses (``store.selection.Selection``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from ..backends import backend_for
from ..common.records import Provenance, latency_of
from ..common.results import Result
from ..common.turns import turn_order
from ..frontend.tasks import Task
from ..store.selection import Selection
from .prepare import Prepared

# Provenances take finalist places in turn; the naive nest comes after them all.
PROVENANCES = (Provenance.MANUAL, Provenance.HEURISTIC, Provenance.SEARCH, Provenance.IMPORTED)
ISOLATED = (4, 3)  # finalists and rounds when re-timed alone (remote or GPU)
IN_PLACE = (3, 8, 3)  # finalists, rounds and inferences per round when timed inside the model
IN_PLACE_TIMEOUT_S = 1800.0
# A finalist replaces the current pick only when faster by more than this: kernels that are equal
# differ by a few percent between turns on a shared machine, and flipping picks on such ties made
# whole builds slower (docs/measurements.md).
KEEP_MARGIN = 0.03


@dataclass
class Contender(Result):
    """A finalist: its record, where it came from, its latency as recorded and as re-timed."""

    record_id: int
    provenance: str
    recorded_s: float | None
    retimed_s: float | None


@dataclass
class Confirmation(Result):
    """A task's finalists re-timed side by side, and the winner (``record_id``) that became a
    ``confirm`` record; ``current_id`` is the pick it was up against."""

    task: str
    record_id: int
    provenance: str
    timed: str  # "in place" or "alone"
    rounds: int
    current_id: int | None
    contenders: list[Contender] = field(default_factory=list)

    def source(self) -> dict:
        """What the ``confirm`` record keeps in its ``source`` column."""
        return {k: v for k, v in self.as_dict().items() if k != "task"}

    def winner_retimed_ms(self) -> float | None:
        winner = next(c for c in self.contenders if c.record_id == self.record_id)
        return None if winner.retimed_s is None else round(winner.retimed_s * 1e3, 4)


def finalists(database, task: Task, limit: int) -> list:
    """Up to ``limit`` record rows worth re-timing: the current pick, then the best of each
    provenance in turn, then the second best of each, and so on, the naive nest (``default``) after
    them all; never the same trace twice. (A heuristic's serial and parallel variants both get a
    place before the naive nest: alone the serial one may look faster.)"""
    current = database.chosen_row(task.mod)
    ranked = {str(p): [] for p in (*PROVENANCES, Provenance.DEFAULT)}
    for row in database.best_rows(task.mod, 2000):
        ranked.setdefault(row.provenance, []).append(row)
    queue = [row for rank in range(max(map(len, ranked.values()), default=0))
             for p in map(str, PROVENANCES) if rank < len(ranked[p]) for row in [ranked[p][rank]]]
    queue += ranked[str(Provenance.DEFAULT)]
    chosen, seen = [], set()
    for row in [*([current] if current else []), *queue]:
        if len(chosen) == limit:
            break
        trace = json.dumps(json.loads(row.record_json)[0], sort_keys=True)
        if trace not in seen:
            seen.add(trace)
            chosen.append(row)
    return chosen


def _record(database, task: Task, row):
    """The MetaSchedule record a record row holds."""
    from tvm.s_tir.meta_schedule.database import TuningRecord

    return TuningRecord.from_json(json.loads(row.record_json), database.commit_workload(task.mod))


def _schedule(database, task: Task, row):
    """The schedule a record row describes, replayed on the task, and its record."""
    from tvm import s_tir

    record = _record(database, task, row)
    sch = s_tir.Schedule(task.mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch, record


def _time_in_turns(measurer, artifacts: list[tuple[str, list]], target, rounds: int
                   ) -> list[list[float]]:
    """Each built artifact's run times, one run per artifact per round, the order rotating."""
    times: list[list[float]] = [[] for _ in artifacts]
    for index in range(rounds):
        for i in turn_order(list(range(len(artifacts))), index):
            path, arg_info = artifacts[i]
            ran = measurer.run_built(path, target, arg_info)
            if ran.error_msg is None:
                times[i].append(latency_of([float(s) for s in ran.run_secs]))
    return times


def winner_index(contenders: list[dict], current_id: int | None) -> int:
    """The contender with the lowest re-timed latency, except that the current pick (record
    ``current_id``) stays unless that one beats it by more than ``KEEP_MARGIN``."""
    timed = [i for i, c in enumerate(contenders) if c["retimed_s"] is not None]
    best = min(timed, key=lambda i: contenders[i]["retimed_s"])
    keep = next((i for i in timed if contenders[i]["record_id"] == current_id), best)
    if contenders[best]["retimed_s"] < contenders[keep]["retimed_s"] * (1 - KEEP_MARGIN):
        return best
    return keep


def _commit_winner(database, task: Task, rows: list, times: list[list[float]], how: str, runner: str
                   ) -> Confirmation | None:
    """Commit the winning row (``winner_index``) as a ``confirm`` record, with every contender."""
    from tvm.s_tir import meta_schedule as ms

    from ..measure.outcome import Outcome

    contenders = [Contender(row.id, row.provenance, row.latency_s, latency_of(t)) for row, t in zip(rows, times)]
    if sum(c.retimed_s is not None for c in contenders) < 2:
        return None
    current = database.chosen_row(task.mod)
    current_id = current.id if current is not None else None
    best = winner_index(contenders, current_id)
    record = _record(database, task, rows[best])
    confirmed = ms.database.TuningRecord(record.trace, record.workload, times[best], task.target,
                                         record.args_info)
    confirmation = Confirmation(task.name, rows[best].id, rows[best].provenance, how, len(times[best]),
                                current_id, contenders)
    database.commit_record(confirmed, Outcome(run_secs=times[best]), provenance=Provenance.CONFIRM,
                           source=confirmation.source(), runner=runner)
    return confirmation


def confirm_alone(task: Task, database, measurer) -> Confirmation | None:
    """Re-time ``task``'s finalists alone, in turns, and commit the winner; None if nothing to do."""
    from tvm.s_tir import meta_schedule as ms

    limit, rounds = ISOLATED
    rows = finalists(database, task, limit)
    if len(rows) < 2:
        return None
    schedules = [_schedule(database, task, row) for row in rows]
    built = measurer.builder.build([ms.builder.BuilderInput(sch.mod, task.target) for sch, _ in schedules])
    kept = [(row, record, result.artifact_path) for row, (_, record), result in zip(rows, schedules, built)
            if result.error_msg is None]
    times = _time_in_turns(measurer, [(path, record.args_info) for _, record, path in kept], task.target,
                           rounds)
    return _commit_winner(database, task, [row for row, _, _ in kept], times, "alone", measurer.runner_id)


def _build_variants(prepared: Prepared, database, candidates: dict[str, list], width: int,
                    folder: str) -> list[str]:
    """``width`` builds of the model, one per finalist rank: build j takes each task's j-th
    finalist (or its last, when it has fewer)."""
    from ..deploy.build import build_tuned

    paths = []
    for j in range(width):
        overrides = {database.workload_id(t.mod): rows[min(j, len(rows) - 1)].id
                     for t in prepared.tasks if (rows := candidates[t.name])}
        path = f"{folder}/variant{j}.so"
        variant = database.with_selection(Selection(overrides=overrides))
        build_tuned(prepared.fused, prepared.target, variant).export_library(path)
        paths.append(path)
    return paths


def confirm_in_place(prepared: Prepared, database, measurer,
                     progress: Callable[[dict], None] | None = None) -> list[Confirmation]:
    """Time every task's finalists inside the model, builds taking turns, and commit each winner.

    A kernel alone keeps its weights in cache; in the model they come from memory, and a schedule
    that reads them pre-packed wins there even where a searched one wins alone.
    """
    from ..frontend.ranged import calls_per_entry
    from ..measure.profile import save_calls

    limit, rounds, inferences = IN_PLACE
    candidates = {t.name: finalists(database, t, limit) for t in prepared.tasks}
    width = max(map(len, candidates.values()), default=0)
    if width < 2:
        return []
    with tempfile.TemporaryDirectory(prefix="autotune-confirm-") as folder:
        if progress:
            progress({"confirming": f"building {width} variants of the model"})
        paths = _build_variants(prepared, database, candidates, width, folder)
        save_calls(f"{folder}/inputs.npz", calls_per_entry(prepared.model))
        if progress:
            progress({"confirming": f"timing every kernel in place, {rounds} rounds"})
        timings = measurer.profile(paths, f"{folder}/inputs.npz", rounds, inferences,
                                   timeout_s=IN_PLACE_TIMEOUT_S)
    results = []
    for task in prepared.tasks:
        rows = candidates[task.name]
        if len(rows) < 2:
            continue
        times: list[list[float]] = [[] for _ in rows]
        for j, kernels in enumerate(timings):
            kernel = kernels.get(task.name)
            if kernel and kernel["calls"]:
                times[min(j, len(rows) - 1)] += [t / kernel["calls"] for t in kernel["per_round_s"]]
        if result := _commit_winner(database, task, rows, times, "in place", measurer.runner_id):
            results.append(result)
    return results


def confirm_finalists(prepared: Prepared, database, measurer,
                      progress: Callable[[dict], None] | None = None) -> list[Confirmation]:
    """Re-time every task's finalists and commit the winners; returns what each confirmation found.

    Where the backend allows and the measurer is local, the finalists are timed inside the model;
    remotely or on a GPU, alone.
    """
    if backend_for(prepared.target).retimes_in_place and measurer.rpc is None:
        return confirm_in_place(prepared, database, measurer, progress)
    results = []
    for done, task in enumerate(prepared.tasks, start=1):
        if (result := confirm_alone(task, database, measurer)) is not None:
            results.append(result)
        if progress:
            progress({"confirming": f"{task.name} ({done}/{len(prepared.tasks)})"})
    return results
