"""A small Optuna study over two graph knobs: resumes from the database, compiles its best."""

from __future__ import annotations

import optuna
import pytest

from autotune.cli import main
from autotune.jobs.study import best_configuration, run_study
from autotune.space import load_space

from .conftest import TINY_SHAPE_FLAGS, TINY_SHAPES


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text("family: tiny\nbudget: {trials: 96}\n"
                    "graph: {threads: [1, 2], trials_per_round: [2, 4]}\nstudy: {trials: 3}\n")
    return load_space(path)


def test_study_resumes_after_interruption_and_compiles_best(space, tiny_translation, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'study.db'}"

    def interrupt_second(event: dict) -> None:
        if event["trial"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(tiny_translation, TINY_SHAPES, space, db, progress=interrupt_second)
    first = optuna.load_study(study_name=f"tiny_translation:{space.name}", storage=db)
    assert [t.state for t in first.trials][:1] == [optuna.trial.TrialState.COMPLETE]

    study = run_study(tiny_translation, TINY_SHAPES, space, db)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and complete[0].number == 0
    assert all(t.user_attrs["validation"]["passed"] and t.value > 0 for t in complete)
    assert {k for t in complete for k in t.params} == {"threads", "trials_per_round"}
    best = best_configuration(study)
    assert best["p50_ms"] == min(t.value for t in complete)

    so_path = tmp_path / "best.so"
    assert main(["study", str(tiny_translation), *TINY_SHAPE_FLAGS, "--space", str(space.path),
                 "--db", db, "-o", str(so_path), "--json", "--quiet"]) == 0
    assert so_path.is_file()
    html = tmp_path / "report.html"
    assert main(["report", "--job", str(best["job_id"]), "--db", db, "-o", str(html),
                 "--study", study.study_name]) == 0
    text = html.read_text()
    assert "Graph-level study" in text and text.count("data:image/png;base64") >= 3
