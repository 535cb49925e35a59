"""Search spaces as files, and hand schedules measured, recorded with provenance and compiled in."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import autotune
from autotune import AutotuneError
from autotune.store import history
from autotune.store.engine import Store
from autotune.models import ModelConfig, write_example
from autotune.space import load_space

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "transformer_cpu.yaml"
ENCODER_SHAPES = {"input_ids": (1, 32)}


@pytest.mark.parametrize("text, message", [
    ("family: [unclosed", "is not valid YAML"),
    ("- a\n- b", "a search space must be a mapping"),
    ("family: t\nbudgets: {}", "unknown key 'budgets'"),
    ("family: t\nbudget: {trials: lots}", "key 'budget.trials' must be a whole number of trials, got 'lots'"),
    ("family: t\nbudget: {time: soon}", "key 'budget.time' must be a duration"),
    ("family: t\ngraph: {precision: [int4]}",
     "key 'graph.precision' must be a non-empty list drawn from ['fp32', 'fp16', 'bf16', 'int8']"),
    ("family: t\ngraph: {threads: 2}", "key 'graph.threads' must be a non-empty list"),
    ("budget: {trials: 4}", "key 'family' must be a string"),
])
def test_malformed_space_names_file_key_and_expectation(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(AutotuneError) as err:
        load_space(path)
    assert str(err.value).startswith(f"{path}") and message in str(err.value)


def test_bundled_space_parses():
    space = load_space(SPACE)
    assert space.family == "transformer" and space.manual_modules[0].is_file()
    assert set(space.graph) >= {"threads", "fusion"}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    """The bundled encoder size (d=128), one layer: dense tasks big enough for a hand schedule."""
    return write_example("encoder", tmp_path_factory.mktemp("enc") / "encoder.onnx",
                         ModelConfig(encoder_layers=1))


@pytest.fixture(scope="module")
def manual_job(encoder, tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('manual') / 'm.db'}"
    broken = tmp_path_factory.mktemp("broken") / "broken.py"
    broken.write_text(textwrap.dedent('''
        from autotune import manual

        @manual.schedule("no-such-block", match="*layer_norm*")
        def wrong(sch):
            sch.get_sblock("does_not_exist")
    '''))
    summary = autotune.tune(encoder, ENCODER_SHAPES, "host", db, trials=64,
                            manual=[load_space(SPACE).manual_modules[0], broken])
    return db, summary


def test_manual_schedules_are_measured_and_broken_ones_skipped(manual_job):
    _, summary = manual_job
    rows = summary["manual_schedules"]
    dense = [r for r in rows if r["schedule"] == "dense-4x16"]
    assert len(dense) >= 3 and all(r["error"] is None and r["latency_ms"] > 0 for r in dense)
    broken = [r for r in rows if r["schedule"] == "no-such-block"]
    assert broken and all(r["error"].startswith("apply failed") for r in broken)
    assert summary["failures"] == 0 and summary["estimated_latency_ms"] > 0


def test_manual_records_carry_provenance_and_source(manual_job):
    db, summary = manual_job
    best = history.best(Store(db), job=summary["job_id"])
    manual_source = (ROOT / "search_spaces" / "manual" / "dense_cpu.py")
    from autotune.common.files import sha256_of
    from sqlalchemy import create_engine, text
    with create_engine(db).connect() as conn:
        sources = [json.loads(s) for (s,) in conn.execute(text(
            "SELECT source FROM tuning_records WHERE provenance = 'manual'"))]
    assert sources and all(s == {"name": "dense-4x16", "file": str(manual_source),
                                 "sha256": sha256_of(manual_source)} for s in sources)
    assert {r["provenance"] for r in best} <= {"manual", "search", "default", "heuristic", "confirm"}


def test_compile_takes_the_fastest_and_honours_a_pin(manual_job, encoder, tmp_path):
    db, _ = manual_job
    free = autotune.compile(encoder, tmp_path / "free.so", ENCODER_SHAPES, "host", db)
    pinned = autotune.compile(encoder, tmp_path / "pinned.so", ENCODER_SHAPES, "host", db,
                              pins=["dense-4x16"])
    assert pinned["validation"]["passed"] and free["validation"]["passed"]
    assert "manual" in pinned["provenance"]
    from sqlalchemy import create_engine, text
    with create_engine(db).connect() as conn:
        manual_ids = {i for (i,) in conn.execute(text(
            "SELECT id FROM tuning_records WHERE provenance = 'manual' AND latency_s IS NOT NULL"))}
    assert manual_ids <= set(pinned["record_ids"])
    picks = {r["record_id"] for r in history.best(Store(db))}  # confirmed winners, else the fastest
    assert set(free["record_ids"]) == picks
