"""``compile``: the database's chosen records built into a validated, deployable artifact."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..backends import backend_for
from ..common.results import Result
from ..common.tolerances import ATOL, RTOL, reduced_precision_limits, sentence_cosine_limit
from ..frontend.quantized import quantizes_in_graph
from ..errors import ValidationFailed
from ..store import jobs as job_rows
from ..store.engine import Store
from ..store.selection import Selection
from ..targets.host import usable_cores
from ..targets.names import canonical
from .prepare import prepare


@dataclass(frozen=True)
class CompileOptions:
    """What to build for and how it is checked: the arguments of ``autotune.compile`` but the model
    and the output path."""

    shapes: dict[str, tuple[int, ...]] | None = None
    target: object = "host"
    db: str | None = None
    validate: bool = True
    rtol: float = RTOL
    atol: float = ATOL
    fusion: str = "full"
    pins: Sequence[str] = ()  # manual schedules used wherever they have a record, even when slower
    precision: str = "fp32"
    max_rel_err: float | None = None  # reduced precision: limits instead of rtol/atol
    min_cosine: float | None = None
    inputs: str | Path | None = None  # an .npz of validation inputs (default: inputs the model accepts)
    trust_runners: Sequence[str] | None = None  # only records these runners timed (default: trusted_runners)
    min_sentence_cosine: float | None = None  # reduced precision, on real sentences (default per precision)


@dataclass
class CompileResult(Result):
    """Where the artifact is, what it was built from, and how it compared with ONNX Runtime."""

    artifact: str
    manifest: str
    artifact_id: int
    sha256: str
    record_ids: list[int]
    fusion: str
    precision: str
    provenance: list[str]
    job_ids: list[int]
    tasks: int
    tasks_tuned: int
    validation: dict | None
    records_passed_over: int = 0  # a range artifact's: records whose weight layout would store a weight twice


def compile(model: str | Path, output: str | Path, options: CompileOptions = CompileOptions(),  # noqa: A001
            on_event: Callable[[dict], None] | None = None) -> CompileResult:
    """Build the model with the database's chosen records, validate it, and only then put it at
    ``output`` (+ manifest); a failed validation leaves what was at ``output`` untouched.
    ``on_event`` gets ``{"stage": text, "seconds": since the start}`` as each stage begins."""
    from ..deploy import export
    from ..deploy.build import build_tuned
    from ..frontend.inputs import inputs_from_file
    from ..store.metaschedule import SqlDatabase

    # stages are reported once the model and inputs pass their checks: a refused call writes one line
    stage = _stage_reporter(on_event)
    prepared = prepare(model, options.shapes, options.target, options.fusion, options.precision)
    given = inputs_from_file(options.inputs, prepared.model.inputs) if options.inputs is not None else None
    store = Store(options.db)
    target_id = store.target_id(canonical(prepared.target))
    selection = Selection(pins=frozenset(options.pins), runners=trusted_runners(store, target_id, options.trust_runners))
    database = SqlDatabase(store, canonical(prepared.target), selection=selection)
    chosen = [(t, row) for t in prepared.tasks if (row := database.chosen_row(t.mod)) is not None]
    used = [row for _, row in chosen]
    passed_over = frozenset()
    if prepared.model.plan is not None:  # a range artifact stores each weight once
        passed_over = _weights_in_other_layouts(chosen, prepared.target, database)
        database = database.with_selection(replace(selection, passed_over=passed_over))
        used = [row for row in used if row.workload_id not in passed_over]
    buckets = f", {len(prepared.model.plan.buckets())} shape buckets" if prepared.model.plan is not None else ""
    stage(f"imported; building {len(prepared.tasks)} tasks ({len(used)} from tuning records{buckets})")
    executable = build_tuned(prepared.fused, prepared.target, database)
    built_from = export.BuildProvenance(
        record_ids=sorted(r.id for r in used), job_ids=sorted({r.job_id for r in used if r.job_id is not None}),
        provenance=sorted({r.provenance for r in used}), fusion=options.fusion, precision=options.precision,
        tasks=len(prepared.tasks), tasks_tuned=len(used))
    so_path = Path(output)
    staged = export.stage(executable, so_path, prepared.model, prepared.target, built_from)
    try:
        if prepared.model.plan is not None and options.validate:  # runs here: time its buckets
            stage("timing the buckets to route each shape to the fastest that covers it")
            _route_to_faster_buckets(staged, prepared)
        if options.validate:
            stage("validating against ONNX Runtime")
        validation = _validate(staged, prepared, options, given) if options.validate else None
        staged.commit()
    finally:
        staged.discard()  # nothing left of a staged pair that was neither committed nor kept
    manifest = staged.manifest
    artifact_id = job_rows.record_artifact(store, so_path, manifest.sha256, manifest.as_dict(),
                                           built_from.record_ids)
    return CompileResult(artifact=str(so_path), manifest=f"{so_path}.json", artifact_id=artifact_id,
                         sha256=manifest.sha256, **built_from.as_dict(),
                         validation=validation.as_dict() if validation else None,
                         records_passed_over=len(passed_over))


def _stage_reporter(on_event: Callable[[dict], None] | None) -> Callable[[str], None]:
    """A function reporting a stage's start to ``on_event`` (nothing without one)."""
    started = time.monotonic()

    def stage(text: str) -> None:
        if on_event is not None:
            on_event({"stage": text, "seconds": time.monotonic() - started})

    return stage


def _weights_in_other_layouts(chosen: list, target, database) -> frozenset[int]:
    """Workloads whose chosen record (``chosen``: task and record row pairs) reads its weights in
    another layout than the heuristic schedule packs them in. Every bucket of a range artifact
    without a record for a task packs a weight the heuristic's way (its panel width does not depend
    on the rows), so such a record would store that weight a second time; its bucket takes the
    heuristic schedule instead."""
    from tvm.s_tir import meta_schedule as ms

    from ..schedules.heuristics import default_schedule, has_layout_free_weights, weight_layouts

    passed_over = set()
    for task, row in chosen:
        heuristic = default_schedule(task.mod, target) if has_layout_free_weights(task.mod) else None
        if heuristic is None:
            continue
        record = database.to_record(row, ms.database.Workload(task.mod))
        if weight_layouts(record.trace) != weight_layouts(heuristic.trace):
            passed_over.add(row.workload_id)
    return frozenset(passed_over)


def trusted_runners(store: Store, target_id: int, given: Sequence[str] | None) -> frozenset[str] | None:
    """The runners whose records count: the user's, else all, unless servers of more than one RPC
    key timed records of this target: then only local ones (a server registered under a key can
    report any timing, and records spread to other models through reuse)."""
    if given is not None:
        return frozenset(given)
    return frozenset({"local"}) if len(store.rpc_keys(target_id)) > 1 else None


def _route_to_faster_buckets(staged, prepared) -> None:
    """Time every bucket of the staged range artifact and let a faster larger bucket take the
    calls of a slower smaller one (``deploy.dispatch``)."""
    from ..deploy.dispatch import bucket_seconds, faster_buckets

    backend_for(prepared.target).check_runnable(prepared.target, "time the artifact's buckets")
    plan = prepared.model.plan
    plan.faster = faster_buckets(plan, bucket_seconds(staged.so_path, prepared.model))
    staged.record_shape_plan(plan)


def _on_real_text(result) -> str:
    text = result.text_accuracy
    return (f", lowest sentence cosine {text['sentence_cosine_min']:.6f} on {text['sentences']} real "
            f"sentences" if text else "")


def _validate(staged, prepared, options: CompileOptions, inputs):
    """Compare the staged artifact with ONNX Runtime; keep it aside and raise if it does not match."""
    from ..deploy.validate import validate

    backend_for(prepared.target).check_runnable(prepared.target, "validate the artifact")
    max_rel, min_cos = reduced_precision_limits(options.precision, options.max_rel_err, options.min_cosine,
                                                quantizes_in_graph(prepared.model.onnx_model))
    result = validate(staged.so_path, prepared.model, usable_cores(), options.rtol, options.atol,
                      max_rel, min_cos, inputs,
                      sentence_cosine_limit(options.precision, options.min_sentence_cosine))
    staged.record_validation(result)
    if not result.passed:
        kept = staged.reject()
        previous = ("the artifact already there is untouched" if staged.target.exists()
                    else "nothing was written there")
        raise ValidationFailed(f"{staged.target} ({options.precision}) does not match ONNX Runtime fp32: "
                               f"max abs error {result.max_abs_err:.3g}, max rel error "
                               f"{result.max_rel_err:.3g}, min cosine {result.min_cosine:.6f}"
                               f"{_on_real_text(result)} ({result.tolerance()}); {previous}; "
                               f"the rejected build is kept at {kept}")
    return result
