"""The same code against a real PostgreSQL server on loopback: tune, resume, reuse, history, compile."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from sqlalchemy import create_engine, text

import autotune
from autotune.store import history, migrate
from autotune.store.engine import Store

from .conftest import TINY_SHAPE_FLAGS, TINY_SHAPES, run_env
from .faults import chaos_record, cli, start, tune_command
from .postgres_server import PostgresServer


@pytest.fixture(scope="module")
def pg_server():
    try:
        server = PostgresServer()
        url = server.start()
    except Exception as err:  # noqa: BLE001 - whatever stops the server from starting, skip
        pytest.skip(f"no PostgreSQL server could start here: {err}")
    yield server, url
    server.stop()


@pytest.fixture(scope="module")
def pg_url(pg_server):
    return pg_server[1]


def test_tune_compile_and_history_on_postgres(pg_url, tiny_translation, tiny_encoder, tmp_path):
    first = autotune.tune(tiny_translation, TINY_SHAPES, "host", pg_url, trials=36)
    assert first["trials_measured"] == 36 and first["failures"] == 0
    second = autotune.tune(tiny_encoder, {"input_ids": (1, 16)}, "host", pg_url, trials=6)
    assert second["tasks_from_database"] >= 3
    built = autotune.compile(tiny_translation, tmp_path / "pg.so", TINY_SHAPES, "host", pg_url)
    assert built["validation"]["passed"]
    store = Store(pg_url)
    assert {j["job_id"] for j in history.jobs(store)} == {first["job_id"], second["job_id"]}
    assert len(history.curve(store, first["job_id"])) == 36 + 1
    assert history.artifacts(store)[0]["record_ids"] == built["record_ids"]
    with create_engine(pg_url).connect() as conn:
        assert conn.execute(text("SELECT version_num FROM autotune_schema_version")).scalar() == migrate.head_revision()


def _trials(url: str) -> int:
    with create_engine(url).connect() as conn:
        return conn.execute(text("SELECT count(*) FROM tuning_records WHERE provenance != 'confirm'")).scalar()


def _wait_for_trials(url: str, count: int, proc) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _trials(url) >= count:
                return
        except Exception:  # noqa: BLE001 - the schema is not there yet
            pass
        time.sleep(0.3)
    pytest.fail(f"tuner never reached {count} records: {proc.communicate()[1][-1500:]}")


def test_a_server_restart_mid_job_is_retried_and_the_job_completes(pg_server, tiny_translation):
    server, _ = pg_server
    url = server.create_database("restarted")
    command = tune_command(tiny_translation, url, 50, TINY_SHAPE_FLAGS, "--no-confirm")
    proc = start(command)
    _wait_for_trials(url, 8, proc)
    server.restart()
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out)["trials_measured"] == _trials(url) == 50
    chaos_record("PostgreSQL restart mid-job", completed=1)


def test_a_database_turned_read_only_mid_job(pg_server, tiny_translation):
    """The job stops with one line naming the database (exit 4), read-only commands still work,
    and once it is writable again the rerun resumes to the exact budget."""
    server, _ = pg_server
    url = server.create_database("readonly")
    command = tune_command(tiny_translation, url, 50, TINY_SHAPE_FLAGS, "--no-confirm")
    proc = start(command)
    _wait_for_trials(url, 8, proc)
    admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("ALTER DATABASE readonly SET default_transaction_read_only = on"))
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'readonly'"))
    _, err = proc.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.startswith("autotune:")]
    assert proc.returncode == 4 and len(lines) == 1, err[-2000:]
    assert "make the database writable" in lines[0] and url in lines[0]
    history = subprocess.run(cli("history", "jobs", "--db", url, "--json"), env=run_env(),
                             capture_output=True, text=True, timeout=120)
    assert history.returncode == 0 and json.loads(history.stdout)["rows"], history.stderr[-1500:]
    survived = _trials(url)
    with admin.connect() as conn:
        conn.execute(text("ALTER DATABASE readonly SET default_transaction_read_only = off"))
    done = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["resumed"] and _trials(url) == 50 >= survived
    chaos_record("database read-only mid-job", completed=1)
