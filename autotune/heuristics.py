"""Heuristic default schedules for CPU tasks: what a task gets before (or without) any search.

The naive loop nest of a matmul is tens of times slower than a tiled one, so a build whose budget
did not reach a task would be far behind ONNX Runtime. Each rule here returns ready schedules for
the tasks it recognises, serial and parallel variants where threads may not pay (a parallel region
costs 5–18 µs on a small VM); ``measure_defaults`` times them beside the naive nest, and compile takes
the fastest record per task.

* attention (``attention.fuse_attention``'s task: two matmuls with softmax between): per block of
  a few query rows, in parallel, scores, mask, softmax and the product with V end to end in L1;
* matmul-like (one reduction block, epilogue after it): a 4 × 3- or 6 × 2-vector register tile
  swept down a column panel one K block at a time, so the weight block (K block × the tile's
  columns: with 24, 36 KiB at K 384 and 144 KiB at 1536, in L2) stays in cache while every row
  block uses it; panels (and batch) in parallel, the epilogue fused per panel (panels never
  straddle the heads an epilogue splits the columns into), producers inlined,
  the next panel's weights prefetched a share per row block (``prefetch``;
  ``scripts/bench_models.py`` times the heuristic-only build against ONNX Runtime);
* softmax- and LayerNorm-like (row reductions feeding an injective block): rows in parallel, every
  block computed per row, each reduction split into vector-wide partial results; where that does
  not apply, TVM's dlight CPU rule;
* injective (reshape, transpose, elementwise): producers inlined, rows in parallel, the inner axis
  vectorised.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .prefetch import ANNOTATION as PREFETCH_ANNOTATION
from .targets import target_cores

ROWS = 6  # 6 rows × 2 vectors: 12 accumulators, 2 weight vectors, 1 broadcast (AVX2 has 16 registers)
VECTORS_PER_TILE = 2
WIDE_TILE = (4, 3)  # rows × vectors, also 12 accumulators but 7 loads per 12 FMAs instead of 8; only
# where it divides the output (a row remainder's predicate costs more than the tile gains)
K_BLOCK = 1536  # the largest divisor of K up to this. Weights are pre-packed, so a panel's K block is
# contiguous; with whole K (384, 1536) MiniLM ran 2 % faster than with blocks of 128 (same-run bench)
PANELS_PER_CORE = 4  # fewer column panels than this per core: batch (e.g. attention heads) runs in parallel too
PARALLEL_MIN_ELEMENTS = 4096  # below this, one core finishes before a parallel region starts
ATTENTION_ROWS = 4  # query rows per attention step: 4 × 2-vector score tiles; 2 and 8 measured slower


def vector_lanes(target) -> int:
    """fp32 lanes of the target's widest vector: 16 with AVX-512, 8 with AVX/AVX2, else 4.

    Not ``llvm_get_vector_width``: in TVM 0.27 it answers 512 for AVX2-only CPUs (haswell, znver3),
    and tiles sized for 16 lanes spill AVX2's 16 registers.
    """
    from tvm.target.codegen import target_has_features

    if target_has_features("avx512f", target):
        return 16
    return 8 if target_has_features("avx", target) else 4


def _largest_divisor(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def _column_tile(extent: int, lanes: int, group: int | None = None) -> int:
    """Two vectors, else one, else the largest divisor that fits two vectors; with a column
    ``group``, two vectors or one only where panels of that width do not straddle groups."""
    for tile in (lanes * VECTORS_PER_TILE, lanes):
        if extent % tile == 0 and _panels_fit_groups(tile, group):
            return tile
    return _largest_divisor(extent, lanes * VECTORS_PER_TILE)


def _panels_fit_groups(panel: int, group: int | None) -> bool:
    """Whether column panels of width ``panel`` each lie within one group of ``group`` columns or
    cover whole groups (always, where the epilogue keeps the columns as they are: ``None``; never
    where its mapping is unknown: 0)."""
    return group is None or (group > 0 and (panel % group == 0 or group % panel == 0))


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
    """A register tile swept down each column panel one K block at a time; epilogue per panel."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    infos = _compute_blocks(sch)
    reductions = [i for i in infos if i.is_reduction() and not i.is_injective()]
    if len(reductions) != 1 or reductions[0].dom_kind()[-1:] != "R" or "R" in reductions[0].dom_kind()[:-1]:
        return None
    block = reductions[0].block_rv
    if len(sch.get_loops(block)) == 2:  # a matrix-vector product: its unit row loop was normalised away
        sch.add_unit_loop(sch.get_loops(block)[0])
    if len(sch.get(block).reads) != 2 or len(sch.get_loops(block)) < 3:
        return None
    _inline_producers(sch, block)
    lanes = vector_lanes(target)
    *batch, rows, cols, reduction = sch.get_loops(block)
    group = _epilogue_column_group(sch, block)
    row_tile, col_tile = _matmul_tile(_extent(sch, rows), _extent(sch, cols), lanes, group)
    if batch and _extent(sch, cols) // col_tile >= PANELS_PER_CORE * target_cores(target):
        rows, batch = sch.fuse(*batch, rows), []  # enough panels: a weight block serves every batch row
        row_tile, col_tile = _matmul_tile(_extent(sch, rows), _extent(sch, cols), lanes, group)
    col_out, col_in = sch.split(cols, [None, col_tile])
    row_out, row_in = sch.split(rows, [None, row_tile])
    k_extent = _extent(sch, reduction)
    k_block = _largest_divisor(k_extent, K_BLOCK)
    k_out, k_in = sch.split(reduction, [None, k_block if k_block >= lanes else k_extent])
    sch.reorder(*batch, col_out, k_out, row_out, k_in, row_in, col_in)
    panel = sch.fuse(*batch, col_out) if batch else col_out
    if parallel:
        sch.parallel(panel)
    for consumer in sch.get_consumers(block):
        if _panels_fit_groups(col_tile, group):
            sch.reverse_compute_at(consumer, panel)
        elif parallel:  # its own nest after the matmul, as an injective task gets
            sch.parallel(sch.fuse(*sch.get_loops(consumer)[:-1]))
        _vectorize_inner(sch, consumer, lanes)
    sch.unroll(row_in)
    _vectorize_columns(sch, col_in, lanes)
    sch.decompose_reduction(block, k_out)
    sch.annotate(row_out, PREFETCH_ANNOTATION, 1)  # the next panel's weights, a share per row block
    return sch


def _matmul_tile(rows: int, cols: int, lanes: int, group: int | None) -> tuple[int, int]:
    """(rows, columns) of the register tile: ``WIDE_TILE`` where it divides the output and its
    panels fit the epilogue's column ``group``, else ROWS (or fewer) rows × ``_column_tile``."""
    wide_rows, wide_vectors = WIDE_TILE
    wide_cols = wide_vectors * lanes
    if rows % wide_rows == 0 and cols % wide_cols == 0 and _panels_fit_groups(wide_cols, group):
        return wide_rows, wide_cols
    return min(ROWS, rows), _column_tile(cols, lanes, group)


def _epilogue_column_group(sch, block) -> int | None:
    """The width of the column runs that ``block``'s epilogue maps onto an axis of its own output
    (a head's width, where the columns split into heads), ``None`` where it keeps the layout.

    Column panels must not straddle such runs: TVM 0.27's region inference then gives the panel's
    epilogue a wrong bounding box and part of the output is never computed. A read whose column
    index is not linear in the epilogue's axes gives 0: no panel fits.
    """
    output = sch.get(block).writes[0].source
    groups = []
    for consumer in map(sch.get, sch.get_consumers(block)):
        if [int(d) for d in consumer.writes[0].source.shape] != [int(d) for d in output.shape]:
            groups += [run for read in consumer.reads if read.source.same_as(output)
                       for run in _column_runs(consumer, read)]
    return min(groups) if groups else None


def _column_runs(consumer, read) -> list[int]:
    """The strides (> 1) of ``consumer``'s axes in the column index of ``read``; [0] if not linear."""
    from tvm import sym

    analyzer = sym.Analyzer()
    for iter_var in consumer.iter_vars:
        analyzer.bind(iter_var.var, iter_var.dom)
    column = analyzer.simplify(read.region[-1].min)
    strides = sym.detect_linear_equation(column, [v.var for v in consumer.iter_vars])
    return [int(c) for c in list(strides)[:-1] if int(c) > 1] if strides else [0]


def _vectorize_columns(sch, loop, lanes: int) -> None:
    """A tile's columns as vectors: one vector op if their count is a power of two (LLVM splits it
    into registers), else one unrolled op per vector (LLVM ran a 24-wide vector op ~10× slower)."""
    extent = _extent(sch, loop)
    if extent & (extent - 1) == 0 or extent % lanes:
        sch.vectorize(loop)
        return
    vectors, lane = sch.split(loop, [None, lanes])
    sch.unroll(vectors)
    sch.vectorize(lane)


def _inline_single_use(sch, keep: frozenset = frozenset()) -> None:
    """Inline every injective block with one consumer (a block read twice would be computed twice),
    except the blocks named in ``keep``."""
    inlined = True
    while inlined:
        inlined = False
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            if _is_reduction(sch, block) or sch.get(block).name_hint in keep \
                    or len(sch.get_consumers(block)) != 1:
                continue
            try:
                sch.compute_inline(block)
            except Exception:  # noqa: BLE001 - a block that must stay stays
                continue
            inlined = True
            break


def _split_lanes_out(sch, blocks, lanes: int) -> list:
    """rfactor each row reduction among ``blocks`` into ``lanes`` partial results (vector registers,
    not a chain), the lanes last in the partials' buffer."""
    partials = []
    for block in blocks:
        inner = sch.get_loops(block)[-1]
        if not _is_reduction(sch, block) or _extent(sch, inner) % lanes or _extent(sch, inner) <= lanes:
            continue
        _, lane = sch.split(inner, [None, lanes])
        partials.append(sch.rfactor(lane, len(sch.get(block).writes[0].source.shape)))
    return partials


def _reduction_axes(sch, block) -> int:
    from tvm.tirx import IterVar

    return sum(v.iter_type == IterVar.CommReduce for v in sch.get(block).iter_vars)


def _is_reduction(sch, block) -> bool:
    return _reduction_axes(sch, block) > 0


def _row_reduction(mod, target, parallel: bool):
    """Softmax-like rows: every block computed per row, reductions kept in ``lanes`` partials.

    Each row's max and sum run as ``lanes`` independent accumulators (rfactor) that LLVM keeps in
    one vector register, instead of one scalar chain bound by the add latency; single-use
    intermediates are inlined.
    """
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    _inline_single_use(sch)
    infos = _compute_blocks(sch)
    if not any(i.is_reduction() for i in infos) or not infos[-1].is_injective():
        return None
    lanes = vector_lanes(target)
    partials = [sch.get(b).name_hint for b in _split_lanes_out(sch, [i.block_rv for i in infos], lanes)]
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    rows = sch.fuse(*sch.get_loops(blocks[-1])[:-1])
    if parallel:
        sch.parallel(rows)
    _vectorize_inner(sch, blocks[-1], lanes)
    for block in reversed(blocks[:-1]):
        sch.compute_at(block, rows, preserve_unit_loops=False)
    for block in blocks[:-1]:
        if sch.get(block).name_hint in partials:
            _lanes_innermost(sch, block)
        elif _is_spatial(sch, block) and len(sch.get_loops(block)) > 1:  # one value per row: no loop
            _vectorize_inner(sch, block, lanes)
    return sch


def _lanes_innermost(sch, partial) -> None:
    """The rfactor block's lane loop innermost and unrolled (LLVM turns it into vector ops), after
    its row loops (where several rows share the block, as in attention) and its reduction."""
    _, lane, *inner = sch.get_loops(partial)  # rfactor puts the lane variable first
    reductions = _reduction_axes(sch, partial)
    rows, reduction = inner[:-reductions], inner[-reductions:]
    reduction = sch.fuse(*reduction) if len(reduction) > 1 else reduction[0]
    sch.reorder(*rows, reduction, lane)
    init = sch.decompose_reduction(partial, reduction)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(lane)


def _is_spatial(sch, block) -> bool:
    from tvm.tirx import IterVar

    return all(v.iter_type == IterVar.DataPar for v in sch.get(block).iter_vars)


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
    _vectorize_inner(sch, last, vector_lanes(target))
    return sch


def _is_matmul_like(sch, block) -> bool:
    """A reduction whose operands are as wide as its output (not a row max or sum)."""
    stmt = sch.get(block)
    rank = len(stmt.writes[0].source.shape)
    return _is_reduction(sch, block) and len(stmt.reads) >= 2 \
        and all(len(r.source.shape) >= rank for r in stmt.reads[:2])


def _writer_of(sch, blocks, buffer) -> str | None:
    """The name of the block among ``blocks`` that writes ``buffer``."""
    return next((sch.get(b).name_hint for b in blocks if sch.get(b).writes[0].source.same_as(buffer)), None)


def _register_tile(sch, block, lanes: int) -> None:
    """The (rows, cols, k) loops of a row block's matmul as a rows × 2-vector register tile."""
    rows, cols, k = sch.get_loops(block)[-3:]
    col_out, col_in = sch.split(cols, [None, _column_tile(_extent(sch, cols), lanes)])
    sch.reorder(col_out, k, rows, col_in)
    sch.unroll(rows)
    sch.vectorize(col_in)
    sch.decompose_reduction(block, k)


def _attention(mod, target, parallel: bool):
    """One attention block (``attention.fuse_attention``): a few query rows at a time, end to end.

    For each (batch, head, block of ``ATTENTION_ROWS`` query rows), in parallel: the scaled query
    rows, their scores against every key (register tile), the mask, softmax with its max and sum
    in vector-wide partials, and the product with V, all in buffers that stay in L1. The
    reshapes and transposes of Q and V are read in place; the output's layout change runs after.
    """
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    matmuls = [b for b in blocks if _is_matmul_like(sch, b)]
    if len(matmuls) != 2 or len(sch.get_loops(matmuls[1])) < 3:
        return None
    scores, output = (sch.get(b).name_hint for b in matmuls)
    query = _writer_of(sch, blocks, sch.get(matmuls[0]).reads[0].source)
    probabilities = _writer_of(sch, blocks, sch.get(matmuls[1]).reads[0].source)
    _inline_single_use(sch, frozenset({query, probabilities}))  # once per row block, not per product
    lanes = vector_lanes(target)
    rows_reduced = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
                    if sch.get(b).name_hint not in (scores, output)]
    partials = [sch.get(p).name_hint for p in _split_lanes_out(sch, rows_reduced, lanes)]
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    last = names.index(output)
    *batch, rows, cols, reduction = sch.get_loops(blocks[last])
    row_out, row_in = sch.split(rows, [None, _largest_divisor(_extent(sch, rows), ATTENTION_ROWS)])
    sch.reorder(*batch, row_out, row_in, cols, reduction)
    row_block = sch.fuse(*batch, row_out)
    if parallel:
        sch.parallel(row_block)
    for block in reversed(blocks[:last]):
        sch.compute_at(block, row_block, preserve_unit_loops=True)
    for block, name in zip(blocks[:last + 1], names[:last + 1]):
        if name in (scores, output):
            _register_tile(sch, block, lanes)
        elif name in partials:
            _lanes_innermost(sch, block)
        elif not _is_reduction(sch, block):
            _vectorize_inner(sch, block, lanes)
    for block in blocks[last + 1:]:  # the output's layout change
        loops = sch.get_loops(block)
        if parallel and len(loops) > 1:
            sch.parallel(sch.fuse(*loops[:-1]))
        _vectorize_inner(sch, block, lanes)
    return sch


RULES: tuple[Callable, ...] = (_attention, _matmul, _row_reduction, _reduction, _injective)
PARALLEL_MIN_FLOPS = 5e5  # matmuls from 0.5 MFLOP ran faster in parallel on 2 cores (Zen 4,
# scripts/cold_weights.py: 16 × 128 × 128 4.6 µs vs 5.4 serial, 32 × 384 × 384 44 vs 85)
PARALLEL_MIN_OUTPUT = 32768  # output elements from which a default runs in parallel whatever its FLOPs:
# MiniLM's LayerNorm (128 × 384, 0.4 MFLOP) took 23 µs serial and 13 µs parallel alone


def _prepack_weights(sch):
    """``sch`` reading its weights (the task's layout-free buffers) in the order its loops walk them.

    MetaSchedule's ``RewriteLayout`` adds the layout change as a preprocessing block; compile folds
    it into the constants (``artifact.build_tuned``), so the kernel streams contiguous weight panels.
    Tasks without layout-free buffers (e.g. CUDA's, or activations on both sides) are returned
    unchanged.
    """
    from tvm.s_tir import meta_schedule as ms

    attrs = sch.mod["main"].attrs
    if not attrs or not attrs.get("layout_free_buffers"):
        return sch
    rewritten = sch.copy()
    return rewritten if ms.postproc.RewriteLayout().apply(rewritten) else sch


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
                found[parallel] = _prepack_weights(sch)
        if found:
            return found
    return {}


def heuristic_schedules(mod, target) -> list:
    """Heuristic schedules for a CPU task (serial and parallel variants); empty when none applies."""
    return list(_variants(mod, target).values())


def default_schedule(mod, target):
    """One heuristic schedule, chosen without measuring (parallel for many FLOPs or a big output), or
    None."""
    from tvm.s_tir.analysis import estimate_tir_flops

    variants = _variants(mod, target)
    if not variants:
        return None
    wants_parallel = float(estimate_tir_flops(mod)) >= PARALLEL_MIN_FLOPS \
        or _output_elements(mod) >= PARALLEL_MIN_OUTPUT
    return variants.get(wants_parallel) or next(iter(variants.values()))


def _output_elements(mod) -> int:
    """Elements of the task's last buffer parameter (its output)."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return math.prod(int(dim) for dim in ArgInfo.from_prim_func(mod["main"])[-1].shape)


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
