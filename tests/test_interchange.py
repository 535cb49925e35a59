"""Records in and out of stock MetaSchedule's JSON database, checked with stock MetaSchedule itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

import autotune
from autotune.cli import main
from autotune.frontend.inputs import random_inputs
from autotune.jobs.prepare import prepare

from .conftest import TINY_SHAPES


def _stock_build_outputs(folder, prepared, inputs):
    """Stock MetaSchedule: its JSON database, ``compile_relax`` on the fused module, a VM run."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    database = ms.database.JSONDatabase(str(folder / "database_workload.json"),
                                        str(folder / "database_tuning_record.json"), allow_missing=False)
    with prepared.target:
        executable = ms.relax_integration.compile_relax(database, prepared.fused, prepared.target, None)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(inputs[spec.name]) for spec in prepared.model.inputs])
    return len(database), result.numpy()


@pytest.fixture(scope="module")
def prepared(tuned):
    return prepare(tuned["model"], TINY_SHAPES, "host")


def test_exported_records_build_in_stock_metaschedule_and_match(tuned, prepared, tmp_path, capsys):
    assert main(["db", "export", str(tmp_path / "ms"), "--db", tuned["db"], "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["records"] > 0 and exported["workloads"] == len(prepared.tasks)
    inputs = random_inputs(prepared.model.inputs, seed=3)
    loaded, stock = _stock_build_outputs(tmp_path / "ms", prepared, inputs)
    assert loaded == exported["records"]
    built = autotune.compile(tuned["model"], tmp_path / "ours.so", TINY_SHAPES, "host", tuned["db"])
    ours = autotune.load(built["artifact"])(inputs)["logits"]
    np.testing.assert_allclose(stock, ours, rtol=1e-4, atol=1e-4)


def test_a_stock_json_database_imported_compiles_like_stock_builds_it(prepared, tmp_path, tiny_translation):
    """A database written by stock MetaSchedule's API (heuristic schedules, timed for real) goes into
    autotune's store; autotune's build from it matches stock's build from the same file."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from autotune.measure.measurer import Measurer
    from autotune.schedules.heuristics import default_schedule

    (tmp_path / "stock").mkdir()
    stock = ms.database.JSONDatabase(work_dir=str(tmp_path / "stock"))
    scheduled = [(t, sch) for t in prepared.tasks if (sch := default_schedule(t.mod, t.target)) is not None]
    with Measurer() as measurer:
        built = measurer.builder.build([ms.builder.BuilderInput(sch.mod, t.target) for t, sch in scheduled])
        for (task, sch), result in zip(scheduled, built):
            args = ms.arg_info.ArgInfo.from_entry_func(sch.mod)
            ran = measurer.run_built(result.artifact_path, task.target, args)
            stock.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, stock.commit_workload(task.mod), [float(s) for s in ran.run_secs], task.target, args))
    db = f"sqlite:///{tmp_path / 'imported.db'}"
    first = autotune.cli.main(["db", "import", str(tmp_path / "stock"), "--db", db])
    again = autotune.cli.main(["db", "import", str(tmp_path / "stock"), "--db", db, "--json"])
    assert first == again == 0
    compiled = autotune.compile(tiny_translation, tmp_path / "imported.so", TINY_SHAPES, "host", db)
    assert compiled["provenance"] == ["imported"] and len(compiled["record_ids"]) == len(scheduled)
    inputs = random_inputs(prepared.model.inputs, seed=5)
    _, reference = _stock_build_outputs(tmp_path / "stock", prepared, inputs)
    np.testing.assert_allclose(autotune.load(compiled["artifact"])(inputs)["logits"], reference,
                               rtol=1e-4, atol=1e-4)
