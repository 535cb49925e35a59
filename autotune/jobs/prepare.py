"""A model made ready for a target: imported, graph passes applied, split into tasks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..frontend.importer import ImportedModel, load_model
from ..frontend.passes import fuse
from ..frontend.ranged import kernels_named_by_bucket
from ..frontend.tasks import Task, extract_tasks
from ..schedules.matmul import sequence_rung_unit
from ..targets.names import parse_target


@dataclass
class Prepared:
    """A model imported, fused and split into tasks for one target."""

    model: ImportedModel
    target: object
    fused: object
    tasks: list[Task]


def prepare(model_path: str | Path, shapes: dict | None, target, fusion: str = "full",
            precision: str = "fp32", for_tuning: bool = False, tune_shapes: str | None = None) -> Prepared:
    """Import ``model_path`` with frozen ``shapes`` (or ranges: ``load_model``), apply graph passes,
    extract tasks for ``target`` (a name, JSON or tag, or a ``tvm.target.Target``)."""
    tvm_target = parse_target(target) if isinstance(target, str) else target
    model = load_model(model_path, shapes, for_tuning, tune_shapes, sequence_rung_unit(tvm_target))
    fused = fuse(model.relax_mod, tvm_target, fusion, precision)
    if model.plan is not None:  # a range: each kernel named after the bucket it serves
        fused = kernels_named_by_bucket()(fused)
    return Prepared(model, tvm_target, fused, extract_tasks(fused, tvm_target))
