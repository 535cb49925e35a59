"""Hand schedule for dense layers (``x @ W + b`` and friends) on CPUs with 256-bit vectors.

A register-blocked GEMM: rows in blocks of 4, columns in blocks of 16 (two 8-lane vectors), the
reduction outermost inside the block with the 4×16 accumulator tile in a local buffer (registers),
the elementwise epilogue (bias, residual, scale) applied per tile while it is hot, and the tiles
spread across cores.
"""

from autotune import manual

ROWS, COLS = 4, 16


def _largest_divisor(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


@manual.schedule("dense-4x16", match="fused_matmul*_add*")
def dense(sch) -> None:
    """Register-blocked matmul with a local accumulator and the epilogue fused per tile."""
    block = sch.get_sblock("matmul")
    epilogue = sch.get_consumers(block)
    *batch, rows, cols, reduction = sch.get_loops(block)
    row_extent, col_extent = int(sch.get(rows).extent), int(sch.get(cols).extent)
    rows = sch.fuse(*batch, rows) if batch else rows
    row_out, row_in = sch.split(rows, [None, _largest_divisor(row_extent, ROWS)])
    col_out, col_in = sch.split(cols, [None, _largest_divisor(col_extent, COLS)])
    sch.reorder(row_out, col_out, reduction, row_in, col_in)
    tile = sch.fuse(row_out, col_out)
    sch.parallel(tile)
    accumulator = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(accumulator, tile)
    sch.vectorize(sch.get_loops(accumulator)[-1])
    sch.unroll(row_in)
    sch.vectorize(col_in)
    for consumer in epilogue:
        sch.reverse_compute_at(consumer, tile)
        sch.vectorize(sch.get_loops(consumer)[-1])
    sch.decompose_reduction(block, reduction)
