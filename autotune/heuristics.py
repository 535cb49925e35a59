"""Heuristic default schedules for CPU tasks: what a task gets before (or without) any search.

The naive loop nest of a matmul is tens of times slower than a tiled one, so a build whose budget
did not reach a task would be far behind ONNX Runtime. Each rule here returns ready schedules for
the tasks it recognises, serial and parallel variants where threads may not pay (a parallel region
costs 5–18 µs on a small VM); ``measure_defaults`` times them beside the naive nest, and compile takes
the fastest record per task.

* matmul-like (one reduction block, epilogue after it): register-blocked tiles (4 rows × 2 vectors)
  with a local accumulator, the epilogue fused per tile, producers inlined;
* softmax / LayerNorm-like (reductions feeding an injective block): TVM's dlight CPU rule
  (rows in parallel, every block computed per row, inner axes vectorised);
* injective (reshape, transpose, elementwise): producers inlined, rows in parallel, the inner axis
  vectorised.
"""

from __future__ import annotations

from collections.abc import Callable

ROWS = 4
VECTORS_PER_TILE = 2
PARALLEL_MIN_ELEMENTS = 4096  # below this, one core finishes before a parallel region starts


def _lanes(target) -> int:
    from tvm.target.codegen import llvm_get_vector_width

    with target:
        bits = llvm_get_vector_width(target)
    return max(bits // 32, 4) if bits > 0 else 4


def _largest_divisor(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def _column_tile(extent: int, lanes: int) -> int:
    """Two vectors, else one, else the largest divisor that fits two vectors."""
    for tile in (lanes * VECTORS_PER_TILE, lanes):
        if extent % tile == 0:
            return tile
    return _largest_divisor(extent, lanes * VECTORS_PER_TILE)


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def _compute_blocks(sch) -> list:
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    infos = normalize_prim_func(sch)
    return infos or []


def _inline_producers(sch, keep) -> None:
    """Inline every injective block but ``keep`` and the outputs into its consumers."""
    for info in _compute_blocks(sch):
        block = info.block_rv
        if sch.get(block).same_as(sch.get(keep)) or not info.is_injective() \
                or not sch.get_consumers(block):
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001 - a block that must stay (e.g. the output) stays
            continue


def _vectorize_inner(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    inner = loops[-1]
    extent = _extent(sch, inner)
    if extent % lanes == 0 and extent > lanes:
        sch.vectorize(sch.split(inner, [None, lanes])[1])
    elif extent <= 4 * lanes:
        sch.vectorize(inner)


def _matmul(mod, target, parallel: bool):
    """Register-blocked matmul with its epilogue fused per tile."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    infos = _compute_blocks(sch)
    reductions = [i for i in infos if i.is_reduction() and not i.is_injective()]
    if len(reductions) != 1 or reductions[0].dom_kind()[-1:] != "R" or "R" in reductions[0].dom_kind()[:-1]:
        return None
    block = reductions[0].block_rv
    if len(sch.get(block).reads) != 2 or len(sch.get_loops(block)) < 3:
        return None
    _inline_producers(sch, block)
    lanes = _lanes(target)
    *batch, rows, cols, reduction = sch.get_loops(block)
    row_extent, col_extent = _extent(sch, rows), _extent(sch, cols)
    rows = sch.fuse(*batch, rows) if batch else rows
    row_out, row_in = sch.split(rows, [None, _largest_divisor(row_extent, ROWS)])
    col_out, col_in = sch.split(cols, [None, _column_tile(col_extent, lanes)])
    sch.reorder(col_out, row_out, reduction, row_in, col_in)
    tile = sch.fuse(col_out, row_out)  # a weight panel stays in cache while every row block uses it
    if parallel:
        sch.parallel(tile)
    epilogue = sch.get_consumers(block)
    accumulator = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(accumulator, tile)
    _vectorize_inner(sch, accumulator, lanes)
    sch.unroll(row_in)
    sch.vectorize(col_in)
    for consumer in epilogue:
        sch.reverse_compute_at(consumer, tile)
        _vectorize_inner(sch, consumer, lanes)
    sch.decompose_reduction(block, reduction)
    return sch


def _reduction(mod, target, parallel: bool):
    """Softmax / LayerNorm-like: TVM's dlight CPU reduction rule (it always runs rows in parallel)."""
    from tvm.s_tir.dlight.cpu import Reduction

    if not parallel:
        return None
    return Reduction().apply(mod["main"], target, False)


def _injective(mod, target, parallel: bool):
    """Elementwise, reshape, transpose: one loop nest, outer rows parallel, inner axis vectorised."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    infos = _compute_blocks(sch)
    if not infos or not all(i.is_injective() for i in infos):
        return None
    last = infos[-1].block_rv
    _inline_producers(sch, last)
    loops = sch.get_loops(last)
    if len(loops) < 2:
        return None
    total = 1
    for loop in loops:
        total *= _extent(sch, loop)
    if parallel:
        if total < PARALLEL_MIN_ELEMENTS:
            return None
        sch.parallel(sch.fuse(*loops[:-1]))
    _vectorize_inner(sch, last, _lanes(target))
    return sch


RULES: tuple[Callable, ...] = (_matmul, _reduction, _injective)
PARALLEL_MIN_FLOPS = 1e7  # unmeasured choice: below this a parallel matmul costs more than it gives


def _variants(mod, target) -> dict[bool, object]:
    """The first rule's schedules for ``mod``, keyed by whether they run in parallel."""
    if target.kind.name != "llvm":
        return {}
    for rule in RULES:
        found = {}
        for parallel in (False, True):
            try:
                sch = rule(mod, target, parallel)
            except Exception:  # noqa: BLE001 - a rule that does not fit this task gives nothing
                sch = None
            if sch is not None:
                found[parallel] = sch
        if found:
            return found
    return {}


def heuristic_schedules(mod, target) -> list:
    """Heuristic schedules for a CPU task (serial and parallel variants); empty when none applies."""
    return list(_variants(mod, target).values())


def default_schedule(mod, target):
    """One heuristic schedule, chosen without measuring (parallel for big tasks), or None."""
    from tvm.s_tir.analysis import estimate_tir_flops

    variants = _variants(mod, target)
    if not variants:
        return None
    wants_parallel = float(estimate_tir_flops(mod)) >= PARALLEL_MIN_FLOPS
    return variants.get(wants_parallel) or next(iter(variants.values()))


def schedule_unscheduled(target):
    """A module pass giving every PrimFunc that nothing scheduled a default schedule.

    CPU: its ``default_schedule``; CUDA: dlight's GPU rules (``cuda.default_schedule_pass``).
    """
    import tvm

    if target.kind.name == "cuda":
        from .cuda import default_schedule_pass

        return default_schedule_pass()

    @tvm.transform.module_pass(opt_level=0, name="autotune.ScheduleUnscheduled")
    def apply(mod, _ctx):
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled")):
                continue
            sch = default_schedule(tvm.IRModule({"main": func}), target)
            if sch is not None:
                updates[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    return apply
