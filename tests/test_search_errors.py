"""A task whose MetaSchedule design space raises (a TVM bug) keeps its default schedules; the job goes on.

TVM 0.27's multi-level tiling fails with a ScheduleError ('reverse-compute-at') on an attention-score
task: matmul + a boolean mask broadcast over heads through Where + Add, as in exported BERT models.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

import autotune


def _masked_scores(path):
    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 4, 16, 8]),
              helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 4, 8, 16]),
              helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 1, 16, 16])]
    output = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4, 16, 16])
    constants = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                 helper.make_tensor("blocked", TensorProto.FLOAT, [], [-1e4])]
    nodes = [helper.make_node("MatMul", ["q", "k"], ["s"]),
             helper.make_node("Where", ["mask", "zero", "blocked"], ["bias"]),
             helper.make_node("Add", ["s", "bias"], ["scores"])]
    graph = helper.make_graph(nodes, "masked_scores", inputs, [output], initializer=constants)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_unsearchable_task_keeps_defaults_and_the_job_completes(tmp_path):
    model = _masked_scores(tmp_path / "scores.onnx")
    db = f"sqlite:///{tmp_path / 't.db'}"
    summary = autotune.tune(model, None, "host", db, trials=24)
    (name, error), = summary["unsearchable_tasks"].items()
    assert name.startswith("fused_matmul_where_add") and "ScheduleError" in error
    assert summary["estimated_latency_ms"] > 0  # its heuristic and naive schedules were measured
    built = autotune.compile(model, tmp_path / "scores.so", None, db=db)
    assert built["validation"]["passed"]
