"""Rules for row reductions (softmax, LayerNorm) and injective tasks (reshape, transpose, elementwise)."""

from __future__ import annotations

from .loops import (compute_blocks, inline_producers, inline_single_use, is_spatial, loop_extent,
                    lanes_innermost, split_lanes_out, vector_lanes, vectorize_inner)

PARALLEL_MIN_ELEMENTS = 4096  # below this, one core finishes before a parallel region starts


def row_reduction(mod, target, parallel: bool):
    """Softmax-like rows: every block computed per row, reductions kept in ``lanes`` partials.

    Each row's max and sum run as ``lanes`` independent accumulators (rfactor) that LLVM keeps in
    one vector register, instead of one scalar chain bound by the add latency; single-use
    intermediates are inlined.
    """
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    inline_single_use(sch)
    infos = compute_blocks(sch)
    if not any(i.is_reduction() for i in infos) or not infos[-1].is_injective():
        return None
    lanes = vector_lanes(target)
    partials = [sch.get(p).name_hint for p, _ in split_lanes_out(sch, [i.block_rv for i in infos], lanes)]
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    anchor = _first_output(sch, blocks)  # the last block, unless the task has two outputs (LayerNorm's
    # fp32 values and their bf16 bits): an output block cannot be computed at another's rows
    if len(sch.get_loops(blocks[anchor])) == 1:  # one row: its unit row loops were normalised away
        sch.add_unit_loop(sch.get_loops(blocks[anchor])[0])
    rows = sch.fuse(*sch.get_loops(blocks[anchor])[:-1])
    if parallel:
        sch.parallel(rows)
    vectorize_inner(sch, blocks[anchor], lanes)
    for block in reversed(blocks[:anchor]):
        sch.compute_at(block, rows, preserve_unit_loops=False)
    for block in blocks[anchor + 1:]:
        sch.reverse_compute_at(block, rows, preserve_unit_loops=False)
        vectorize_inner(sch, block, lanes)
    for block in blocks[:anchor]:
        if sch.get(block).name_hint in partials:
            lanes_innermost(sch, block)
        elif is_spatial(sch, block) and len(sch.get_loops(block)) > 1:  # one value per row: no loop
            vectorize_inner(sch, block, lanes)
    return sch


def _first_output(sch, blocks) -> int:
    """The index of the first of ``blocks`` writing a buffer the task returns (not one of its own)."""
    own = list(sch.get(sch.get_sblock("root")).alloc_buffers)
    return next(i for i, block in enumerate(blocks)
                if not any(sch.get(block).writes[0].source.same_as(buffer) for buffer in own))


def reduction(mod, target, parallel: bool):
    """Softmax / LayerNorm-like: TVM's dlight CPU reduction rule (it always runs rows in parallel)."""
    from tvm.s_tir.dlight.cpu import Reduction

    if not parallel:
        return None
    return Reduction().apply(mod["main"], target, False)


def injective(mod, target, parallel: bool):
    """Elementwise, reshape, transpose: one loop nest, outer rows parallel, inner axis vectorised."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    infos = compute_blocks(sch)
    if not infos or not all(i.is_injective() for i in infos):
        return None
    last = infos[-1].block_rv
    inline_producers(sch, last)
    loops = sch.get_loops(last)
    if len(loops) < 2:
        return None
    total = 1
    for loop in loops:
        total *= loop_extent(sch, loop)
    if parallel:
        if total < PARALLEL_MIN_ELEMENTS:
            return None
        sch.parallel(sch.fuse(*loops[:-1]))
    vectorize_inner(sch, last, vector_lanes(target))
    return sch
