"""Heuristic default schedules: they fit the Transformer's tasks, compute what the naive nest does,
and a build with no tuning records at all uses them and still matches ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autotune.schedules.heuristics import default_schedule, heuristic_schedules
from autotune.jobs.prepare import prepare
from autotune.targets.host import lacking_on_host

from .conftest import TINY_SHAPES, copy_database


@pytest.fixture(scope="module")
def prepared(tiny_translation):
    return prepare(tiny_translation, TINY_SHAPES, "host")


@pytest.fixture(scope="module")
def prepared_unfused(tiny_translation):
    """One task per operator: softmax alone (in the fused module it is inside each attention task)."""
    return prepare(tiny_translation, TINY_SHAPES, "host", fusion="none")


def _run(mod, target, inputs: list[np.ndarray], output_shape, output_dtype) -> np.ndarray:
    import tvm

    func = tvm.tirx.build(mod, target=target)
    out = tvm.runtime.tensor(np.zeros(output_shape, dtype=output_dtype))
    func(*[tvm.runtime.tensor(a) for a in inputs], out)
    return out.numpy()


def _arguments(mod) -> list[tuple[list[int], str]]:
    from tvm.s_tir import meta_schedule as ms

    return [([int(d) for d in a.shape], str(a.dtype)) for a in ms.arg_info.ArgInfo.from_prim_func(mod["main"])]


@pytest.mark.parametrize("kind", ["matmul", "attention", "key_projection", "softmax", "layer_norm",
                                  "transpose"])
def test_heuristic_schedule_matches_naive_nest(prepared, prepared_unfused, kind):
    tasks = (prepared_unfused if kind in ("softmax", "transpose") else prepared).tasks
    task = next(t for t in tasks if kind in t.name and "take" not in t.name)
    schedules = heuristic_schedules(task.mod, task.target)
    assert schedules, f"no heuristic schedule for {task.name}"
    *ins, (shape, dtype) = _arguments(task.mod)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(s).astype(d) for s, d in ins]
    expected = _run(task.mod, task.target, inputs, shape, dtype)
    for sch in schedules:
        np.testing.assert_allclose(_run(sch.mod, task.target, inputs, shape, dtype), expected,
                                   rtol=1e-5, atol=1e-5)


def test_every_matmul_task_gets_a_tiled_schedule(prepared):
    matmuls = [t for t in prepared.tasks if "matmul" in t.name]
    assert matmuls
    for task in matmuls:
        sch = default_schedule(task.mod, task.target)
        assert sch is not None, task.name
        trace = str(sch.trace)
        assert "decompose_reduction" in trace and "vectorize" in trace, task.name  # tiled, not naive


def test_vector_lanes_follow_the_target_features():
    """AVX2 CPUs get 8 fp32 lanes (TVM's llvm_get_vector_width wrongly answers 512 bits for them)."""
    import tvm
    from autotune.schedules.loops import vector_lanes

    assert vector_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})) == 8
    assert vector_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})) == 8
    assert vector_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids"})) == 16


def test_compile_without_records_uses_heuristics_and_validates(tiny_translation, tmp_path):
    import autotune

    db = f"sqlite:///{tmp_path / 'empty.db'}"
    summary = autotune.compile(tiny_translation, tmp_path / "m.so", TINY_SHAPES, db=db)
    assert summary["tasks_tuned"] == 0 and summary["validation"]["passed"]
    manifest = json.loads((tmp_path / "m.so.json").read_text())
    assert manifest["record_ids"] == []


def test_tuning_records_heuristic_schedules(tuned):
    from autotune.store.engine import Store
    from autotune.store.schema import TuningRecordRow
    from sqlalchemy import func, select

    with Store(tuned["db"]).session() as session:
        counts = dict(session.execute(select(TuningRecordRow.provenance, func.count())
                                      .group_by(TuningRecordRow.provenance)).all())
    assert counts.get("heuristic", 0) > 0 and counts.get("default", 0) > 0, counts


@pytest.mark.parametrize("rows, parallel", [(128, True), (4, False)])
def test_a_layer_norms_default_runs_in_parallel_when_its_output_is_big(rows, parallel):
    """LayerNorm has few FLOPs per element: MiniLM's (128 × 384) is far below the matmul threshold,
    yet ran 23 µs serial and 13 µs parallel. The default goes by its output too; a tiny one stays
    serial."""
    import tvm
    from tvm import te, topi

    from autotune.targets.names import parse_target

    data = te.placeholder((1, rows, 384), name="data")
    gamma, beta = te.placeholder((384,), name="gamma"), te.placeholder((384,), name="beta")
    norm = topi.nn.layer_norm(data, gamma, beta, axis=[-1], epsilon=1e-12)
    mod = tvm.IRModule({"main": te.create_prim_func([data, gamma, beta, norm])})
    sch = default_schedule(mod, parse_target("host", num_cores=2))
    assert sch is not None
    assert ("sch.parallel(" in str(sch.trace)) == parallel


def test_a_single_rows_layer_norm_gets_the_row_rule_serial_and_exact():
    """A decoder step at batch 1 normalises one row [1, 1, 512], whose unit row loops TVM
    normalises away. The row rule had failed on it and left it to dlight's reduction rule, which
    ran the 512 outputs in parallel, each recomputing the row's sums into shared scalars: 347 µs
    instead of 0.25 µs (a sixth of a Marian decoder step), and a race on those sums."""
    import tvm
    from tvm import te, topi

    from autotune.targets.names import parse_target

    data = te.placeholder((1, 1, 512), name="data")
    gamma, beta = te.placeholder((512,), name="gamma"), te.placeholder((512,), name="beta")
    norm = topi.nn.layer_norm(data, gamma, beta, axis=[-1], epsilon=1e-5)
    mod = tvm.IRModule({"main": te.create_prim_func([data, gamma, beta, norm])})
    target = parse_target("host", num_cores=2)
    sch = default_schedule(mod, target)
    assert "sch.parallel(" not in str(sch.trace) and len(heuristic_schedules(mod, target)) == 2
    rng = np.random.default_rng(0)
    x, g, b = (rng.standard_normal(shape).astype("float32") for shape in ((1, 1, 512), (512,), (512,)))
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b
    np.testing.assert_allclose(_run(sch.mod, target, [x, g, b], (1, 1, 512), "float32"), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows, parallel", [(32, True), (1, False)])
def test_a_matmuls_default_runs_in_parallel_from_half_a_megaflop(rows, parallel):
    """On 2 cores, MiniLM's 32 × 384 × 384 projection (9.4 MFLOP) ran 85 µs serial and 44 µs in
    parallel (``scripts/cold_weights.py``), and parallel still won at 0.5 MFLOP; one decoder row
    (0.3 MFLOP) stays serial."""
    from autotune.targets.names import parse_target

    sch = default_schedule(_matmul_task(rows=rows), parse_target("host", num_cores=2))
    assert ("sch.parallel(" in str(sch.trace)) == parallel


def test_matmul_weights_are_prepacked_and_the_record_round_trips(prepared):
    """The heuristic matmul reads its weights pre-packed, and its record survives the database."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from autotune.store.tvm_json import record_json

    task = next(t for t in prepared.tasks if "matmul" in t.name
                and t.mod["main"].attrs.get("layout_free_buffers"))
    sch = default_schedule(task.mod, task.target)
    assert "transform_layout" in str(sch.trace)
    workload = ms.database.Workload(task.mod)
    record = ms.database.TuningRecord(sch.trace, workload, [1e-3], task.target,
                                      ms.arg_info.ArgInfo.from_entry_func(sch.mod))
    restored = ms.database.TuningRecord.from_json(json.loads(record_json(record)), workload)
    replayed = s_tir.Schedule(task.mod)
    restored.trace.apply_to_schedule(replayed, remove_postproc=False)
    tvm.ir.assert_structural_equal(replayed.mod, sch.mod)


def test_tasks_with_prepacked_weights_stay_searchable(tuned):
    """Layout-free weights must not make MetaSchedule's design spaces fail (TVM 0.27's RewriteLayout
    did, for every matmul), and the search must have measured candidates of its own."""
    from autotune.store.engine import Store
    from autotune.store.schema import TuningRecordRow
    from sqlalchemy import func, select

    assert tuned["summary"]["unsearchable_tasks"] == {}
    with Store(tuned["db"]).session() as session:
        searched = session.execute(select(func.count()).where(TuningRecordRow.provenance == "search")).scalar()
    assert searched > 0


def test_a_decoder_steps_matrix_vector_products_are_tiled_and_exact(tiny_translation):
    """One target token: the LM head is ``[1, 1, d] x [d, vocab]``, whose unit rows normalise away."""
    step = prepare(tiny_translation, {"input_ids": (1, 16), "decoder_input_ids": (1, 1)}, "host")
    rng = np.random.default_rng(0)
    for task in [t for t in step.tasks if "matmul" in t.name]:
        sch = default_schedule(task.mod, task.target)
        assert sch is not None and "vectorize" in str(sch.trace), task.name
        *ins, (shape, dtype) = _arguments(task.mod)
        inputs = [rng.standard_normal(s).astype(d) for s, d in ins]
        np.testing.assert_allclose(_run(sch.mod, task.target, inputs, shape, dtype),
                                   _run(task.mod, task.target, inputs, shape, dtype), rtol=1e-5, atol=1e-5)


def test_an_improved_rule_is_timed_again_in_an_old_database(tuned, tmp_path):
    """Heuristic records carry their schedule's hash: the next job re-times none of today's schedules,
    but re-times every one whose records came from an older rule (here: records without the hash),
    also for tasks the database already counts as tuned."""
    import autotune
    from sqlalchemy import update

    from autotune.store.engine import Store
    from autotune.store.metaschedule import SqlDatabase
    from autotune.store.schema import TuningRecordRow
    from autotune.search.fixed import unmeasured_defaults
    from autotune.targets.names import canonical

    prepared = prepare(tuned["model"], TINY_SHAPES, "host")
    db = copy_database(tuned["db"], tmp_path / "copy.db")
    store = Store(db)
    database = SqlDatabase(store, canonical(prepared.target))
    assert all(unmeasured_defaults(t, database) == [] for t in prepared.tasks)
    with store.session() as session:
        session.execute(update(TuningRecordRow).where(TuningRecordRow.provenance == "heuristic")
                        .values(source=None))
        session.commit()
    stale = [t for t in prepared.tasks if unmeasured_defaults(t, database)]
    assert stale and all(item.provenance == "heuristic" for t in stale for item in unmeasured_defaults(t, database))
    summary = autotune.tune(tuned["model"], TINY_SHAPES, "host", db, trials=200, confirm=False)
    assert summary["tasks_from_database"] == len(prepared.tasks)  # nothing left to search ...
    assert summary["trials_measured"] == sum(len(heuristic_schedules(t.mod, t.target)) for t in stale)
    assert all(unmeasured_defaults(t, database) == [] for t in prepared.tasks)  # ... but re-timed


def _matmul_task(head_width: int | None = None, columns: int = 384, rows: int = 128):
    """MiniLM's projection, ``A[rows, 384] @ W[384, columns] + bias``, with its output as it is
    (``head_width`` None) or split into heads of ``head_width`` and transposed, as the key
    projection's is."""
    import tvm
    from tvm import te

    a, w, bias = te.placeholder((rows, 384), name="A"), te.placeholder((384, columns), name="W"), \
        te.placeholder((columns,), name="bias")
    k = te.reduce_axis((0, 384), name="k")
    product = te.compute((rows, columns), lambda i, j: te.sum(a[i, k] * w[k, j], axis=k), name="matmul")
    out = te.compute((rows, columns), lambda i, j: product[i, j] + bias[j], name="add")
    if head_width:
        out = te.compute((columns // head_width, head_width, rows),
                         lambda h, d, s: product[s, h * head_width + d] + bias[h * head_width + d],
                         name="heads")
    func = te.create_prim_func([a, w, bias, out]).with_attr("layout_free_buffers", [1, 2])
    return tvm.IRModule({"main": func})


def _split_factors(sch) -> list[int]:
    return [int(i.inputs[-1]) for i in sch.trace.insts if i.kind.name == "Split"]


@pytest.mark.parametrize("head_width, columns, tile, fused", [
    (None, 384, (4, 24), True), (32, 384, (6, 16), True), (40, 320, (6, 8), True),
    (20, 320, (6, 16), False)])
def test_column_panels_never_straddle_the_heads_their_epilogue_writes(head_width, columns, tile, fused):
    """4 rows × 3 vectors loads 7 values per 12 FMAs, not 8 (MiniLM's matmuls ran 2–5 % faster in
    place, ``scripts/profile_kernels.py``), but TVM's region inference gives a panel straddling two
    heads a wrong bounding box, leaving part of the output uncomputed (24 columns over heads of 32
    wronged 27648 of 49152 elements). So panels lie within a head or cover whole ones, and where no
    vector tile does (heads of 20 on 8 lanes), the epilogue runs after the matmul, not per panel."""
    from autotune.targets.names import parse_target

    target = parse_target("avx2", num_cores=2)
    mod = _matmul_task(head_width, columns)
    sch = default_schedule(mod, target)
    assert set(tile) <= set(_split_factors(sch))
    epilogue = sch.get_sblock("heads" if head_width else "add")
    assert (len(sch.get_loops(epilogue)) > 3) == fused  # under the panel loop, or its own nest
    *ins, (shape, dtype) = _arguments(mod)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(s).astype(d) for s, d in ins]
    expected = _run(mod, target, inputs, shape, dtype)
    np.testing.assert_allclose(_run(sch.mod, target, inputs, shape, dtype), expected, rtol=1e-5, atol=1e-5)


def test_the_heuristic_matmul_prefetches_its_next_weight_panel_and_stays_exact():
    """The row-block loop is marked in the trace; ``insert_prefetches`` then reads ahead into the
    next pre-packed panel (``scripts/cold_weights.py``: cold weights cost ~10 % without it) and
    changes no result. A function without the mark is returned as it is."""
    import tvm

    from autotune.schedules.prefetch import ANNOTATION, insert_prefetches
    from autotune.targets.names import parse_target

    target = parse_target("avx2", num_cores=2)
    mod = _matmul_task()
    sch = default_schedule(mod, target)
    assert ANNOTATION in str(sch.trace)
    func = insert_prefetches(sch.mod["main"])
    assert func.script().count("llvm.prefetch") == 1 and ANNOTATION not in func.script()
    assert insert_prefetches(mod["main"]).same_as(mod["main"])
    *ins, (shape, dtype) = _arguments(mod)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(s).astype(d) for s, d in ins]
    np.testing.assert_array_equal(_run(tvm.IRModule({"main": func}), target, inputs, shape, dtype),
                                  _run(sch.mod, target, inputs, shape, dtype))


@pytest.mark.parametrize("columns, panel", [(512, 64), (384, 48)])
def test_a_weight_is_packed_one_way_at_every_row_count_on_avx512(columns, panel):
    """AVX-512's 32 registers hold 4 × 4 and 6 × 4 vector tiles: a width whose 4-row tile does not
    divide the rows keeps its panel width on 6 rows (Marian's encoder ran 27 % faster on 4 × 4
    than on 6 × 2 at 8 × 32 tokens, MiniLM 14 % on 6 × 3 at 1 × 77), so every bucket of a range
    artifact packs the weight the same way and stores it once."""
    from autotune.targets.names import parse_target

    target = parse_target("avx512", num_cores=2)
    for rows in (1, 7, 8, 77):
        assert panel in _split_factors(default_schedule(_matmul_task(None, columns, rows), target)), rows


@pytest.mark.skipif(bool(lacking_on_host(["avx512f"])), reason="this CPU has no AVX-512 to run the tile on")
def test_a_six_row_tile_of_four_vectors_is_exact_on_a_row_remainder():
    from autotune.targets.names import parse_target

    target = parse_target("avx512", num_cores=2)
    mod = _matmul_task(None, 512, 7)
    *ins, (shape, dtype) = _arguments(mod)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(s).astype(d) for s, d in ins]
    np.testing.assert_allclose(_run(default_schedule(mod, target).mod, target, inputs, shape, dtype),
                               _run(mod, target, inputs, shape, dtype), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scratch_bytes, on_stack", [(1024, True), (64 * 1024, False)])
def test_a_parallel_loops_scratch_buffer_stays_on_the_stack_up_to_its_limit(scratch_bytes, on_stack):
    """TVM gives a scratch buffer of 1 KB or more a workspace call and a free per parallel iteration;
    the CPU pipeline keeps those up to ``scratch.MAX_BYTES`` on the stack, and the results are the
    same bits."""
    import tvm
    from tvm import s_tir, te

    from autotune.backends import backend_for
    from autotune.backends.scratch import MAX_BYTES

    width = scratch_bytes // 4
    a = te.placeholder((8, width), name="a")
    doubled = te.compute((8, width), lambda i, j: a[i, j] * 2.0, name="doubled")
    reversed_ = te.compute((8, width), lambda i, j: doubled[i, width - 1 - j], name="reversed")
    sch = s_tir.Schedule(te.create_prim_func([a, reversed_]))
    row, _ = sch.get_loops(sch.get_sblock("reversed"))
    sch.parallel(row)
    sch.compute_at(sch.get_sblock("doubled"), row)
    target = tvm.target.Target("llvm")
    backend = backend_for(target)
    values = np.random.default_rng(0).standard_normal((8, width)).astype("float32")
    results = {}
    for pipeline in ("default", backend.tir_pipeline()):
        built = tvm.tirx.build(sch.mod, target=target, pipeline=pipeline)
        workspace_calls = built.inspect_source("ll").count("load ptr, ptr @__TVMBackendAllocWorkspace")
        out = tvm.runtime.tensor(np.zeros_like(values))
        built(tvm.runtime.tensor(values), out)
        results[pipeline] = (workspace_calls, out.numpy())
    (default_calls, expected), (calls, got) = results.values()
    assert default_calls == 1 and calls == (0 if on_stack else 1)
    assert on_stack == (scratch_bytes <= MAX_BYTES)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, 2 * values[:, ::-1])


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.skipif(
    bool(lacking_on_host(["avx512bf16"])), reason="this CPU lacks AVX512-BF16"))])
def test_attentions_row_reductions_stay_vectors_along_each_row(tiny_encoder, precision):
    """With several query rows per step, a row's max and sum of the softmax run along the row (a
    row loop left innermost to LLVM was vectorised across the rows, a gather per lane, which made
    four rows 1.4x slower than two), and the probabilities multiply by one reciprocal per row
    (``passes.softmax_by_reciprocal``) instead of dividing every score."""
    import tvm

    from autotune.backends import backend_for
    from autotune.frontend.attention import FUNCTION_NAME
    from autotune.schedules.attention import ATTENTION_ROWS, attention

    prepared = prepare(tiny_encoder, {"input_ids": (1, 32)}, "host", "full", precision)
    task = next(t for t in prepared.tasks if t.name.startswith(FUNCTION_NAME))
    schedule = attention(task.mod, prepared.target, True)
    heads = 2
    assert f"T.parallel(T.int64({heads * 32 // ATTENTION_ROWS}))" in schedule.mod.script()
    backend = backend_for(prepared.target)
    with backend.codegen(prepared.target):
        built = tvm.tirx.build(schedule.mod, target=prepared.target, pipeline=backend.tir_pipeline())
    code = built.inspect_source("asm")
    assert "gather" not in code and "vdivps" not in code
