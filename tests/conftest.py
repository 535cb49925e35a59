"""Shared fixtures: tiny models made in code and one tuned database, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autotune.models import TINY, write_example

TINY_SHAPES = {"input_ids": (1, 16), "decoder_input_ids": (1, 8)}
TINY_SHAPE_FLAGS = ["--shape", "input_ids=1x16", "--shape", "decoder_input_ids=1x8"]


@pytest.fixture(autouse=True)
def _no_ambient_database(monkeypatch):
    """Tests name their database explicitly; a developer's AUTOTUNE_DB must not leak in."""
    monkeypatch.delenv("AUTOTUNE_DB", raising=False)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_translation(models_dir) -> Path:
    return write_example("translation", models_dir / "tiny_translation.onnx", TINY)


@pytest.fixture(scope="session")
def tiny_encoder(models_dir) -> Path:
    return write_example("encoder", models_dir / "tiny_encoder.onnx", TINY)


@pytest.fixture(scope="session")
def tuned(tmp_path_factory, tiny_translation) -> dict:
    """The tiny translation model tuned for a handful of trials into a fresh SQLite file."""
    import autotune

    folder = tmp_path_factory.mktemp("tuned")
    db = f"sqlite:///{folder / 'tuning.db'}"
    summary = autotune.tune(tiny_translation, TINY_SHAPES, "host", db, trials=96)
    return {"db": db, "folder": folder, "summary": summary, "model": tiny_translation}


def copy_database(db_url: str, path: Path) -> str:
    """A copy of a SQLite database (so a test may change it); the copy's URL."""
    from autotune.store.engine import copy_sqlite

    return copy_sqlite(db_url, path)


def run_env() -> dict:
    """Environment for subprocesses: this interpreter's, no ambient database."""
    env = dict(os.environ)
    env.pop("AUTOTUNE_DB", None)
    return env
