"""History queries, the curve plot, schema migration, and bound parameters."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, inspect, text

import autotune
from autotune.store import history, migrate
from autotune.cli import main
from autotune.store.engine import Store

from .conftest import TINY_SHAPES


def test_jobs_lists_the_tuned_job(tuned):
    rows = history.jobs(Store(tuned["db"]), model="tiny_translation")
    job = next(r for r in rows if r["job_id"] == tuned["summary"]["job_id"])
    assert job["status"] == "finished" and job["trials"] == tuned["summary"]["trials_measured"]
    assert job["failures"] == 0 and job["target"]


def test_best_has_one_record_per_task_with_provenance(tuned):
    rows = history.best(Store(tuned["db"]), job=tuned["summary"]["job_id"])
    assert len(rows) == tuned["summary"]["tasks"]
    assert {r["provenance"] for r in rows} <= {"search", "default", "heuristic", "confirm"}
    assert all(r["latency_ms"] > 0 and r["records_measured"] >= 1 for r in rows)


def test_curve_ends_at_the_jobs_estimate_and_never_rises(tuned):
    points = history.curve(Store(tuned["db"]), tuned["summary"]["job_id"])
    assert len(points) == tuned["summary"]["trials_measured"] + 1  # trial 0: before any
    assert points[0] == {"trial": 0, "seconds": 0.0, "estimated_latency_ms": None}
    known = [p["estimated_latency_ms"] for p in points if p["estimated_latency_ms"] is not None]
    assert known and all(b <= a for a, b in zip(known, known[1:]))
    assert known[-1] == pytest.approx(tuned["summary"]["estimated_latency_ms"])
    assert all(p["seconds"] is not None for p in points)


def _faster_confirmations(prepared, database, measurer, progress=None):
    """Stands in for ``confirm_finalists``: each task's pick re-timed at half its recorded latency
    (a re-timing may come out below every trial: the machine was busier during the search)."""
    from autotune.common.records import Provenance
    from autotune.jobs.confirm import _record
    from autotune.measure.outcome import Outcome

    for task in prepared.tasks:
        if (row := database.chosen_row(task.mod)) is not None:
            database.commit_record(_record(database, task, row), Outcome(run_secs=[row.latency_s / 2]),
                                   provenance=Provenance.CONFIRM,
                                   source={"record_id": row.id, "provenance": row.provenance})
    return []


def test_the_jobs_estimate_is_where_its_curve_ends_when_a_confirmation_times_lower(tuned, tiny_encoder,
                                                                                tmp_path, monkeypatch):
    """Confirmations are not trials: neither the curve nor the job's estimate takes their latency,
    and a later job starts its curve where this one ended."""
    from autotune.jobs import tune as tune_job

    from .conftest import copy_database

    url = copy_database(tuned["db"], tmp_path / "confirmed.db")
    monkeypatch.setattr(tune_job, "confirm_finalists", _faster_confirmations)
    summary = autotune.tune(tiny_encoder, {"input_ids": (1, 16)}, "host", url, trials=8)
    points = history.curve(Store(url), summary["job_id"])
    assert points[-1]["estimated_latency_ms"] == pytest.approx(summary["estimated_latency_ms"], rel=1e-12)
    again = autotune.tune(tiny_encoder, {"input_ids": (1, 16)}, "host", url, trials=9)
    assert history.curve(Store(url), again["job_id"])[0]["estimated_latency_ms"] == \
        pytest.approx(summary["estimated_latency_ms"], rel=1e-12)


def test_curve_json_and_png_from_the_cli(tuned, tmp_path, capsys):
    job = str(tuned["summary"]["job_id"])
    assert main(["history", "curve", "--job", job, "--db", tuned["db"], "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == tuned["summary"]["trials_measured"] + 1
    png = tmp_path / "curve.png"
    assert main(["report", "--job", job, "-o", str(png), "--db", tuned["db"]]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_artifacts_name_the_records_they_were_built_from(tuned, tmp_path):
    built = autotune.compile(tuned["model"], tmp_path / "a.so", TINY_SHAPES, "host", tuned["db"],
                             validate=False)
    rows = history.artifacts(Store(tuned["db"]), artifact=built["artifact_id"])
    assert rows[0]["record_ids"] == built["record_ids"] and rows[0]["sha256"] == built["sha256"]


def test_compare_needs_a_known_model(tuned, capsys):
    assert main(["history", "compare", "--model", "nope", "--db", tuned["db"]]) == 2
    assert "no jobs for model 'nope'" in capsys.readouterr().err


def test_injection_through_a_filter_is_inert(tuned, capsys):
    evil = "'; DROP TABLE jobs; --"
    assert main(["history", "jobs", "--model", evil, "--db", tuned["db"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == []
    assert history.jobs(Store(tuned["db"]))  # the table survived


def test_first_revision_database_upgrades_in_place(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine, migrate.FIRST_REVISION)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO targets (canonical, host_features) VALUES ('{}', '')"))
    assert main(["history", "jobs", "--db", url]) == 4  # the environment's to fix, not bad input
    assert "autotune db upgrade" in capsys.readouterr().err
    assert main(["db", "upgrade", "--db", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"before": "0001", "after": migrate.head_revision()}
    assert "job_tasks" in inspect(create_engine(url)).get_table_names()
    with create_engine(url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM targets")).scalar() == 1
    assert history.jobs(Store(url)) == []


def test_compile_trusts_only_local_records_where_several_rpc_keys_timed_records(tuned, tmp_path):
    """A server registered under a key can report any timing: once servers of two keys have timed
    records of a target, compile builds from local records unless told whom to trust."""
    from autotune.jobs.prepare import prepare
    from autotune.store.metaschedule import SqlDatabase
    from autotune.targets.names import canonical

    from .conftest import copy_database

    url = copy_database(tuned["db"], tmp_path / "runners.db")
    store = Store(url)
    prepared = prepare(tuned["model"], TINY_SHAPES, "host")
    database = SqlDatabase(store, canonical(prepared.target))
    picks = [database.chosen_row(t.mod) for t in prepared.tasks[:2]]
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE tuning_records SET runner = 'local:builder'"))
        for pick, key in zip(picks, ["a", "b"]):
            conn.execute(text("UPDATE tuning_records SET runner = :r WHERE id = :id"),
                         {"r": f"rpc:{key}@10.0.0.9:9090", "id": pick.id})
    default = autotune.compile(tuned["model"], tmp_path / "local.so", TINY_SHAPES, "host", url, validate=False)
    assert not {p.id for p in picks} & set(default["record_ids"])
    trusting_a = autotune.compile(tuned["model"], tmp_path / "a.so", TINY_SHAPES, "host", url, validate=False,
                                  trust_runners=["local", "rpc:a"])
    assert picks[0].id in trusting_a["record_ids"] and picks[1].id not in trusting_a["record_ids"]
