"""Finalists re-timed at the end of a job: what compile and history then pick, in place and alone."""

from __future__ import annotations

import json
import pytest
from sqlalchemy import select

import autotune
from autotune.store import history
from autotune.jobs.confirm import KEEP_MARGIN, confirm_alone, finalists, winner_index
from autotune.common.records import Provenance
from autotune.store.engine import Store
from autotune.store.metaschedule import SqlDatabase
from autotune.jobs.prepare import prepare
from autotune.measure.measurer import Measurer
from autotune.store.schema import TuningRecordRow
from autotune.targets.names import canonical

from .conftest import TINY_SHAPES, copy_database


@pytest.fixture(scope="module")
def opened(tuned):
    prepared = prepare(tuned["model"], TINY_SHAPES, "host")
    store = Store(tuned["db"])
    return prepared, store, SqlDatabase(store, canonical(prepared.target))


def _confirm_rows(store: Store) -> list[TuningRecordRow]:
    with store.session() as session:
        return list(session.scalars(select(TuningRecordRow).where(TuningRecordRow.provenance == Provenance.CONFIRM)))


def test_every_confirmation_was_timed_in_place_against_another_provenance(tuned, opened):
    _, store, _ = opened
    rows = _confirm_rows(store)
    assert len(rows) == len(tuned["summary"]["confirmed"]) > 0
    for row in rows:
        contenders = row.source["contenders"]
        assert row.source["timed"] == "in place" and row.source["rounds"] >= 3
        assert len({c["record_id"] for c in contenders}) == len(contenders) >= 2
        winner = contenders[winner_index(contenders, row.source["current_id"])]
        assert winner["record_id"] == row.source["record_id"]
        assert row.latency_s == pytest.approx(winner["retimed_s"])
        with store.session() as session:
            original = session.get(TuningRecordRow, row.source["record_id"])
        assert json.loads(original.record_json)[0] == json.loads(row.record_json)[0]  # same trace


@pytest.mark.parametrize("faster_by, replaces", [(0.01, False), (0.10, True)])
def test_a_finalist_replaces_the_current_pick_only_by_more_than_the_margin(faster_by, replaces):
    """In-turn timings of equal kernels differ by a few percent: a tie keeps the current pick."""
    assert 0.01 < KEEP_MARGIN < 0.10
    contenders = [{"record_id": 7, "retimed_s": 1.0e-3}, {"record_id": 9, "retimed_s": None},
                  {"record_id": 8, "retimed_s": 1.0e-3 * (1 - faster_by)}]
    assert winner_index(contenders, current_id=7) == (2 if replaces else 0)
    assert winner_index(contenders, current_id=None) == 2  # no pick yet: the fastest
    assert winner_index(contenders, current_id=9) == 2  # the pick was not timed: the fastest


def test_compile_and_history_use_the_newest_confirmation(tuned, opened, tmp_path):
    prepared, store, database = opened
    confirmed = {r.workload_id: r for r in sorted(_confirm_rows(store), key=lambda r: r.id)}
    chosen = {t.name: database.chosen_row(t.mod) for t in prepared.tasks}
    for row in chosen.values():
        if row.workload_id in confirmed:
            assert row.id == confirmed[row.workload_id].id  # even where a search claim is lower
    built = autotune.compile(tuned["model"], tmp_path / "m.so", TINY_SHAPES, db=tuned["db"])
    assert set(built["record_ids"]) == {r.id for r in chosen.values()}
    assert Provenance.CONFIRM in built["provenance"] and built["validation"]["passed"]
    best = {r["workload_id"]: r["record_id"] for r in history.best(store, job=tuned["summary"]["job_id"])}
    assert best == {r.workload_id: r.id for r in chosen.values()}


def test_finalists_lead_with_the_pick_then_alternate_provenance(opened):
    prepared, _, database = opened
    task = next(t for t in prepared.tasks if "matmul" in t.name)
    rows = finalists(database, task, 4)
    assert rows[0].id == database.chosen_row(task.mod).id
    traces = [json.dumps(json.loads(r.record_json)[0], sort_keys=True) for r in rows]
    assert len(set(traces)) == len(rows) == 4
    assert {"heuristic", "search"} <= {r.provenance for r in rows[1:]}


def test_confirm_alone_retimes_and_becomes_the_pick(tuned, opened, tmp_path):
    """The path for remote and GPU targets, run here on the local CPU (on a copy of the database)."""
    prepared, _, _ = opened
    store = Store(copy_database(tuned["db"], tmp_path / "copy.db"))
    database = SqlDatabase(store, canonical(prepared.target))
    task = next(t for t in prepared.tasks if "matmul" in t.name)
    with Measurer() as measurer:
        result = confirm_alone(task, database, measurer)
    assert result is not None and result["timed"] == "alone" and len(result["contenders"]) >= 2
    newest = max(_confirm_rows(store), key=lambda r: r.id)
    assert newest.source["timed"] == "alone" and database.chosen_row(task.mod).id == newest.id
