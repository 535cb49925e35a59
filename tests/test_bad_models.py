"""Every broken model of the corpus gets one clear error line, exit 2, and no database rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import onnx
import pytest

from autotune.cli import main
from autotune.frontend.importer import load_model

from .bad_models import CORPUS, valid_model, write_valid

CASES = sorted(CORPUS)
SCHEMA_BOOKKEEPING = {"autotune_schema_version"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Each case in a folder of its own, two levels deep, with a file where ``../../etc/passwd``
    points: the traversal is refused for leaving the folder, not because the target is missing."""
    root = tmp_path_factory.mktemp("bad_models")
    _mkdir(root / "etc").joinpath("passwd").write_bytes(bytes(4096))
    return {name: case.build(_mkdir(root / name / "model")) for name, case in CORPUS.items()}


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def _error_line(capfd, argv: list[str]) -> str:
    """The one line on stderr (file descriptor 2, so what onnxsim and TVM write natively counts)."""
    assert main(argv) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autotune: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("case", CASES)
def test_tasks_gives_one_clear_line(capfd, corpus, case):
    line = _error_line(capfd, ["tasks", str(corpus[case])])
    assert str(corpus[case]) in line, line
    assert CORPUS[case].expect in line, line


@pytest.fixture(scope="module")
def upgraded_db(tmp_path_factory) -> Path:
    """A database with every table already created, shared by the cases."""
    db = tmp_path_factory.mktemp("db") / "existing.db"
    assert main(["db", "upgrade", "--db", f"sqlite:///{db}"]) == 0
    return db


def _rows(db: Path) -> dict[str, int]:
    """Rows in each data table (jobs, tuning_records, ...); {} when the file does not exist."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in sorted(tables - SCHEMA_BOOKKEEPING)}


@pytest.mark.parametrize("existing", [False, True], ids=["new_db", "existing_db"])
@pytest.mark.parametrize("case", CASES)
def test_tune_writes_nothing_to_the_database(capfd, corpus, case, existing, tmp_path, upgraded_db):
    db = upgraded_db if existing else tmp_path / "x.db"
    argv = ["tune", str(corpus[case]), "--trials", "2", "--db", f"sqlite:///{db}"]
    line = _error_line(capfd, argv)
    assert CORPUS[case].expect in line, line
    assert all(count == 0 for count in _rows(db).values()), _rows(db)
    assert not existing or {"jobs", "tuning_records"} <= set(_rows(db))


def test_the_corpus_is_derived_from_a_model_that_works(capfd, tmp_path):
    """The broken files are broken, not the model they come from."""
    assert main(["tasks", str(write_valid(tmp_path))]) == 0
    assert "matmul" in capfd.readouterr().out


def test_external_data_inside_the_folder_still_loads(tmp_path):
    """The size and location checks refuse bad claims only: honest external data loads."""
    model = valid_model()
    onnx.save(model, str(tmp_path / "external.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    loaded = load_model(tmp_path / "external.onnx")
    assert [spec.shape for spec in loaded.inputs] == [(1, 16)]
