"""The matmul rule: a register tile swept down each column panel one K block at a time.

A 4 × 3-, 4 × 4- or 6 × 2-vector register tile sweeps down a column panel one K block at a time, so the
weight block (K block × the tile's columns) stays in cache while every row block uses it; panels
(and batch) run in parallel, the epilogue is fused per panel (panels never straddle the heads an
epilogue splits the columns into), producers are inlined, and the next panel's weights are
prefetched a share per row block (``prefetch``).
"""

from __future__ import annotations

from ..targets.names import target_cores
from .loops import loop_extent, inline_producers, compute_blocks, largest_divisor, vector_lanes, vectorize_inner
from .prefetch import ANNOTATION as PREFETCH_ANNOTATION

ROWS = 6  # 6 rows × 2 vectors: 12 accumulators, 2 weight vectors, 1 broadcast (AVX2 has 16 registers)
VECTORS_PER_TILE = 2
WIDE_TILES = ((4, 3), (4, 4))  # rows × vectors: 7 loads per 12 FMAs or 8 per 16 instead of 8 per 12; the
# first whose width divides the output's columns (and whose registers the target has) sets the panel
# width; its rows where they divide the output's, else ROWS rows of that width where the registers
# hold them (a row remainder's predicate costs more than 4 rows gain over 6, not more than the width
# gains): so every bucket of a range artifact packs a weight the same way
K_BLOCK = 1536  # the largest divisor of K up to this: weights are pre-packed, so a panel's K block is
# contiguous, and a whole K of a Transformer's projections fits L2 beside its tile's panel
PANELS_PER_CORE = 4  # fewer column panels than this per core: batch (e.g. attention heads) runs in parallel too


def column_tile(extent: int, lanes: int, group: int | None = None) -> int:
    """Two vectors, else one, else the largest divisor that fits two vectors; with a column
    ``group``, two vectors or one only where panels of that width do not straddle groups."""
    for tile in (lanes * VECTORS_PER_TILE, lanes):
        if extent % tile == 0 and panels_fit_groups(tile, group):
            return tile
    return largest_divisor(extent, lanes * VECTORS_PER_TILE)


def panels_fit_groups(panel: int, group: int | None) -> bool:
    """Whether column panels of width ``panel`` each lie within one group of ``group`` columns or
    cover whole groups (always, where the epilogue keeps the columns as they are: ``None``; never
    where its mapping is unknown: 0)."""
    return group is None or (group > 0 and (panel % group == 0 or group % panel == 0))


def matmul(mod, target, parallel: bool):
    """A register tile swept down each column panel one K block at a time; epilogue per panel."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    infos = compute_blocks(sch)
    reductions = [i for i in infos if i.is_reduction() and not i.is_injective()]
    if len(reductions) != 1 or reductions[0].dom_kind()[-1:] != "R" or "R" in reductions[0].dom_kind()[:-1]:
        return None
    block = reductions[0].block_rv
    if len(sch.get_loops(block)) == 2:  # a matrix-vector product: its unit row loop was normalised away
        sch.add_unit_loop(sch.get_loops(block)[0])
    if len(sch.get(block).reads) != 2 or len(sch.get_loops(block)) < 3:
        return None
    inline_producers(sch, block)
    lanes = vector_lanes(target)
    *batch, rows, cols, reduction = sch.get_loops(block)
    group = epilogue_column_group(sch, block)
    row_tile, col_tile = _matmul_tile(loop_extent(sch, rows), loop_extent(sch, cols), lanes, group)
    if batch and loop_extent(sch, cols) // col_tile >= PANELS_PER_CORE * target_cores(target):
        rows, batch = sch.fuse(*batch, rows), []  # enough panels: a weight block serves every batch row
        row_tile, col_tile = _matmul_tile(loop_extent(sch, rows), loop_extent(sch, cols), lanes, group)
    col_out, col_in = sch.split(cols, [None, col_tile])
    row_out, row_in = sch.split(rows, [None, row_tile])
    k_extent = loop_extent(sch, reduction)
    k_block = largest_divisor(k_extent, K_BLOCK)
    k_out, k_in = sch.split(reduction, [None, k_block if k_block >= lanes else k_extent])
    sch.reorder(*batch, col_out, k_out, row_out, k_in, row_in, col_in)
    panel = sch.fuse(*batch, col_out) if batch else col_out
    if parallel:
        sch.parallel(panel)
    attach_epilogue(sch, block, panel, panels_fit_groups(col_tile, group), parallel, lanes)
    sch.unroll(row_in)
    _vectorize_columns(sch, col_in, lanes)
    sch.decompose_reduction(block, k_out)
    sch.annotate(row_out, PREFETCH_ANNOTATION, 1)  # the next panel's weights, a share per row block
    return sch


def attach_epilogue(sch, block, panel, per_panel: bool, parallel: bool, lanes: int) -> None:
    """``block``'s consumers computed per column ``panel`` (where ``per_panel``: its panels fit the
    epilogue's column groups), else each in its own nest after the matmul (in parallel where the
    matmul is), the inner axis vectorised."""
    for consumer in sch.get_consumers(block):
        if per_panel:
            sch.reverse_compute_at(consumer, panel)
        elif parallel:  # its own nest after the matmul, as an injective task gets
            sch.parallel(sch.fuse(*sch.get_loops(consumer)[:-1]))
        vectorize_inner(sch, consumer, lanes)


def _matmul_tile(rows: int, cols: int, lanes: int, group: int | None) -> tuple[int, int]:
    """(rows, columns) of the register tile: the panel width of the first of ``WIDE_TILES`` that
    divides the output and fits the epilogue's column ``group``, by its own rows where they divide
    the output's and the registers hold them, else by ROWS (or fewer) where those fit; else ROWS
    (or fewer) rows × ``column_tile``."""
    registers = _vector_registers(lanes)
    for wide_rows, wide_vectors in WIDE_TILES:
        wide_cols = wide_vectors * lanes
        if cols % wide_cols or not panels_fit_groups(wide_cols, group):
            continue
        if rows % wide_rows == 0 and _registers_needed(wide_rows, wide_vectors) <= registers:
            return wide_rows, wide_cols
        if _registers_needed(min(ROWS, rows), wide_vectors) <= registers:
            return min(ROWS, rows), wide_cols
    return min(ROWS, rows), column_tile(cols, lanes, group)


def sequence_rung_unit(target) -> int:
    """The multiple every sequence rung of a range artifact is on ``target``: rows at which each
    matmul picks one panel width whatever the rows, so every bucket packs a weight one way and the
    artifact stores it once (``frontend.buckets.ladder``).

    Where ``ROWS`` rows of every wide tile fit the vector registers (AVX-512), any rows do: 2, the
    finest step worth a bucket. Elsewhere (AVX2, other targets) the first wide tile's rows.
    """
    wide_rows = WIDE_TILES[0][0]
    if target.kind.name != "llvm":
        return wide_rows
    registers = _vector_registers(vector_lanes(target))
    return 2 if all(_registers_needed(ROWS, v) <= registers for _, v in WIDE_TILES) else wide_rows


def _vector_registers(lanes: int) -> int:
    return 32 if lanes >= 16 else 16  # AVX-512 has 32 vector registers, AVX2 16


def _registers_needed(rows: int, vectors: int) -> int:
    """Vector registers of a rows × vectors tile: its accumulators, a row of weights, a broadcast."""
    return rows * vectors + vectors + 1


def epilogue_column_group(sch, block) -> int | None:
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
    into registers), else one unrolled op per vector (LLVM lowers a vector op of another width
    poorly: docs/measurements.md)."""
    extent = loop_extent(sch, loop)
    if extent & (extent - 1) == 0 or extent % lanes:
        sch.vectorize(loop)
        return
    vectors, lane = sch.split(loop, [None, lanes])
    sch.unroll(vectors)
    sch.vectorize(lane)
