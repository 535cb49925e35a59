"""The same code against a real PostgreSQL server on loopback: tune, resume, reuse, history, compile."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

import autotune
from autotune.store import history, migrate
from autotune.store.engine import Store

from .conftest import TINY_SHAPES
from .postgres_server import PostgresServer


@pytest.fixture(scope="module")
def pg_url():
    try:
        server = PostgresServer()
        url = server.start()
    except Exception as err:  # noqa: BLE001 - whatever stops the server from starting, skip
        pytest.skip(f"no PostgreSQL server could start here: {err}")
    yield url
    server.stop()


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
