"""The attention rule: one attention block (``frontend.attention``'s task), a few query rows at a time."""

from __future__ import annotations

from . import bf16
from .loops import (loop_extent, inline_single_use, is_reduction, lanes_innermost, largest_divisor, reduction_axes,
                    rows_outside_lanes, split_lanes_out, vector_lanes, vectorize_inner)
from .matmul import column_tile

ATTENTION_ROWS = 4  # query rows per attention step (MiniLM 1x128 on AVX-512: 0.88-0.90x the time of 2)
DOT_ACCUMULATORS = 16  # bf16 products: a tile of rows × keys of at most 16 vectors hides the
# instruction's latency behind independent accumulators and leaves registers for the operands


def _is_matmul_like(sch, block) -> bool:
    """A reduction whose operands are as wide as its output (not a row max or sum)."""
    stmt = sch.get(block)
    rank = len(stmt.writes[0].source.shape)
    return is_reduction(sch, block) and len(stmt.reads) >= 2 \
        and all(len(r.source.shape) >= rank for r in stmt.reads[:2])


def _writer_of(sch, blocks, buffer) -> str | None:
    """The name of the block among ``blocks`` that writes ``buffer``."""
    return next((sch.get(b).name_hint for b in blocks if sch.get(b).writes[0].source.same_as(buffer)), None)


def _register_tile(sch, block, lanes: int) -> None:
    """The (rows, cols, k) loops of a row block's matmul as a rows × 2-vector register tile."""
    rows, cols, k = sch.get_loops(block)[-3:]
    col_out, col_in = sch.split(cols, [None, column_tile(loop_extent(sch, cols), lanes)])
    sch.reorder(col_out, k, rows, col_in)
    sch.unroll(rows)
    sch.vectorize(col_in)
    sch.decompose_reduction(block, k)


def _dot_tile(sch, block, lanes: int) -> None:
    """The (rows, cols, pairs, pair) loops of a row block's bf16 product as a tile of ``vdpbf16ps``
    (``bf16.DOT``'s intrinsic) swept along the pairs: the rows × vectors of columns, at most
    ``DOT_ACCUMULATORS`` accumulators."""
    rows, cols, pairs, within = sch.get_loops(block)[-4:]
    vectors = largest_divisor(loop_extent(sch, cols) // lanes, max(1, DOT_ACCUMULATORS // loop_extent(sch, rows)))
    col_out, col_vectors, col_lanes = sch.split(cols, [None, vectors, lanes])
    sch.reorder(col_out, pairs, rows, col_vectors, col_lanes, within)
    init = sch.decompose_reduction(block, pairs)
    sch.vectorize(sch.get_loops(init)[-1])
    bf16.DOT.register()
    sch.tensorize(col_lanes, bf16.DOT.intrinsic)
    sch.unroll(rows)
    sch.unroll(col_vectors)


def attention(mod, target, parallel: bool):
    """One attention block (``attention.fuse_attention``): a few query rows at a time, end to end.

    For each (batch, head, block of ``ATTENTION_ROWS`` query rows), in parallel: the scaled query
    rows, their scores against every key (register tile), the mask, softmax with its max and sum in
    vector-wide partials (the rows of a block unrolled around them), and the product with V, all in
    buffers that stay in L1. The reshapes and transposes of Q and V are read in place; the
    output's layout change runs after.
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
    inline_single_use(sch, frozenset({query, probabilities}))  # once per row block, not per product
    lanes = vector_lanes(target)
    rows_reduced = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
                    if sch.get(b).name_hint not in (scores, output)]
    splits = split_lanes_out(sch, rows_reduced, lanes)
    partials = [sch.get(p).name_hint for p, _ in splits]
    totals = [sch.get(total).name_hint for _, total in splits]
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    last = names.index(output)
    loops = sch.get_loops(blocks[last])
    *batch, rows, cols = loops[:len(loops) - reduction_axes(sch, blocks[last])]
    row_out, row_in = sch.split(rows, [None, largest_divisor(loop_extent(sch, rows), ATTENTION_ROWS)])
    sch.reorder(*batch, row_out, row_in)
    row_block = sch.fuse(*batch, row_out)
    if parallel:
        sch.parallel(row_block)
    for block in reversed(blocks[:last]):
        sch.compute_at(block, row_block, preserve_unit_loops=True)
    for block, name in zip(blocks[:last + 1], names[:last + 1]):
        if name in (scores, output):
            (_dot_tile if reduction_axes(sch, block) == 2 else _register_tile)(sch, block, lanes)
        elif name in partials:
            lanes_innermost(sch, block)
        elif name in totals:
            rows_outside_lanes(sch, block, row_block)
        elif not is_reduction(sch, block):
            vectorize_inner(sch, block, lanes)
    for block in blocks[last + 1:]:  # the output's layout change
        loops = sch.get_loops(block)
        if parallel and len(loops) > 1:
            sch.parallel(sch.fuse(*loops[:-1]))
        vectorize_inner(sch, block, lanes)
    return sch
