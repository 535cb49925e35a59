"""Loop-nest building blocks the heuristic rules share: vector width, inlining, vectorising the
inner axis, and row reductions split into vector-wide partial results."""

from __future__ import annotations


def vector_lanes(target) -> int:
    """fp32 lanes of the target's widest vector: 16 with AVX-512, 8 with AVX/AVX2, else 4.

    Not ``llvm_get_vector_width``: in TVM 0.27 it answers 512 for AVX2-only CPUs (haswell, znver3),
    and tiles sized for 16 lanes spill AVX2's 16 registers.
    """
    from tvm.target.codegen import target_has_features

    if target_has_features("avx512f", target):
        return 16
    return 8 if target_has_features("avx", target) else 4


def largest_divisor(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def loop_extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def compute_blocks(sch) -> list:
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    infos = normalize_prim_func(sch)
    return infos or []


def inline_producers(sch, keep) -> None:
    """Inline every injective block but ``keep`` and the outputs into its consumers."""
    for info in compute_blocks(sch):
        block = info.block_rv
        if sch.get(block).same_as(sch.get(keep)) or not info.is_injective() \
                or not sch.get_consumers(block):
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001 - a block that must stay (e.g. the output) stays
            continue


def vectorize_inner(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    inner = loops[-1]
    extent = loop_extent(sch, inner)
    if extent % lanes == 0 and extent > lanes:
        sch.vectorize(sch.split(inner, [None, lanes])[1])
    elif extent <= 4 * lanes:
        sch.vectorize(inner)


def inline_single_use(sch, keep: frozenset = frozenset()) -> None:
    """Inline every injective block with one consumer (a block read twice would be computed twice),
    except the blocks named in ``keep``."""
    inlined = True
    while inlined:
        inlined = False
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            if is_reduction(sch, block) or sch.get(block).name_hint in keep \
                    or len(sch.get_consumers(block)) != 1:
                continue
            try:
                sch.compute_inline(block)
            except Exception:  # noqa: BLE001 - a block that must stay stays
                continue
            inlined = True
            break


def split_lanes_out(sch, blocks, lanes: int) -> list[tuple]:
    """rfactor each row reduction among ``blocks`` into ``lanes`` partial results (vector registers,
    not a chain), the lanes last in the partials' buffer: (partials block, the block now summing
    them) for each reduction split."""
    splits = []
    for block in blocks:
        inner = sch.get_loops(block)[-1]
        if not is_reduction(sch, block) or loop_extent(sch, inner) % lanes or loop_extent(sch, inner) <= lanes:
            continue
        _, lane = sch.split(inner, [None, lanes])
        splits.append((sch.rfactor(lane, len(sch.get(block).writes[0].source.shape)), block))
    return splits


def reduction_axes(sch, block) -> int:
    from tvm.tirx import IterVar

    return sum(v.iter_type == IterVar.CommReduce for v in sch.get(block).iter_vars)


def is_reduction(sch, block) -> bool:
    return reduction_axes(sch, block) > 0


def lanes_innermost(sch, partial) -> None:
    """The rfactor block's lane loop innermost and unrolled (LLVM turns it into vector ops), after
    its row loops (where several rows share the block, as in attention) and its reduction."""
    _, lane, *inner = sch.get_loops(partial)  # rfactor puts the lane variable first
    reductions = reduction_axes(sch, partial)
    rows, reduction = inner[:-reductions], inner[-reductions:]
    reduction = sch.fuse(*reduction) if len(reduction) > 1 else reduction[0]
    sch.reorder(*rows, reduction, lane)
    init = sch.decompose_reduction(partial, reduction)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(lane)
    for row in rows:  # a row loop left to LLVM, innermost once it unrolls the rest, is vectorised
        sch.unroll(row)  # across the rows: a gather per lane


def rows_outside_lanes(sch, total, outer) -> None:
    """The loops of ``total`` (a row reduction over an rfactor block's lanes) below ``outer``: its rows
    outside the lane loop, so each row sums its lanes in turn (rows innermost, LLVM gathers one lane
    of every row into a vector)."""
    loops = sch.get_loops(total)
    below = loops[[sch.get(loop).same_as(sch.get(outer)) for loop in loops].index(True) + 1:]
    lane, *rows = below  # the lane reduction comes first, as rfactor leaves it
    if rows:
        sch.reorder(*rows, lane)
    for row in rows:
        sch.unroll(row)


def is_spatial(sch, block) -> bool:
    from tvm.tirx import IterVar

    return all(v.iter_type == IterVar.DataPar for v in sch.get(block).iter_vars)
