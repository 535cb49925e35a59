"""kill -9 loses at most the trials in flight; rerunning resumes the same job; writers coexist."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from .conftest import TINY_SHAPE_FLAGS, run_env
from .faults import chaos_record, records, tune_command, wait_for_records


def _integrity(db_path) -> str:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.mark.parametrize("kills", [3])
def test_kill_9_then_rerun_resumes_the_same_job(tmp_path, tiny_translation, kills):
    db_path = tmp_path / "resume.db"
    command = tune_command(tiny_translation, f"sqlite:///{db_path}", 90, TINY_SHAPE_FLAGS)
    survived: list[tuple[int, int]] = []
    moments = random.Random(kills)
    for _ in range(kills):
        proc = subprocess.Popen(command, env=run_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for_records(db_path, len(survived) + 8, proc)
        time.sleep(moments.uniform(0.0, 1.5))  # anywhere in a round: building, running, committing
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _integrity(db_path) == "ok"
        now = records(db_path)
        assert set(survived) <= set(now)  # nothing committed was lost
        survived = now
    done = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["resumed"] is True
    final = records(db_path)
    assert set(survived) <= set(final)
    assert {job for _, job in final} == {summary["job_id"]}
    assert len(final) == summary["trials_measured"] == 90  # killed trials not measured twice
    chaos_record("kill -9 of tune", injected=kills, completed=1, records_lost=len(set(survived) - set(final)))


def test_two_tuners_share_one_sqlite_file(tmp_path, tiny_translation, tiny_encoder):
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [subprocess.Popen(tune_command(tiny_translation, db_url, 40, TINY_SHAPE_FLAGS),
                              env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
             subprocess.Popen(tune_command(tiny_encoder, db_url, 24, ["--shape", "input_ids=1x16"]),
                              env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    summaries = [json.loads(out) for out, _ in outputs]
    db_path = tmp_path / "shared.db"
    assert _integrity(db_path) == "ok"
    measured = records(db_path)
    for summary in summaries:
        assert sum(1 for _, job in measured if job == summary["job_id"]) == summary["trials_measured"]
    with sqlite3.connect(db_path) as conn:
        duplicated = conn.execute("SELECT count(*) - count(DISTINCT content_sha256) FROM workloads").fetchone()
    assert duplicated == (0,)


OPEN_AT = """
import sys, time
from autotune.store.engine import Store
start = float(sys.argv[2])
while time.time() < start:
    pass
Store(sys.argv[1])
"""


def test_processes_creating_one_new_sqlite_file_at_once_all_open_it(tmp_path):
    """The first creates the schema; the others wait for it, not refuse a half-made database."""
    for attempt in range(3):
        db_url = f"sqlite:///{tmp_path / f'new{attempt}.db'}"
        start = time.time() + 3
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, db_url, str(start)], env=run_env(),
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [e[-500:] for e in errors]
        assert _integrity(tmp_path / f"new{attempt}.db") == "ok"


def test_a_unique_key_clash_takes_the_row_another_process_inserted(tmp_path):
    """Two tuners creating the same target row at once: the one whose insert clashes takes the
    other's row (it had stopped with 'UNIQUE constraint failed: targets.canonical')."""
    from sqlalchemy import select

    from autotune.store.engine import Store
    from autotune.store.schema import TargetRow

    store = Store(f"sqlite:///{tmp_path / 'clash.db'}")
    canonical = '{"kind": "llvm"}'
    existing = store.target_id(canonical)
    attempts = []

    def find_else_insert(session) -> int:
        attempts.append(1)
        if len(attempts) == 1:  # its find ran before the other process committed the row
            session.add(TargetRow(canonical=canonical, host_features=""))
            session.flush()
        return session.scalars(select(TargetRow.id).where(TargetRow.canonical == canonical)).one()

    assert store.get_or_create(find_else_insert) == existing and len(attempts) == 2
