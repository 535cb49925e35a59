"""Software prefetch of a matmul's next weight panel, spread over the row blocks of the current one.

Inside a model bigger than the last-level cache each layer's weights come from memory, so the first
row block of every column panel waits on them (``scripts/cold_weights.py`` times the heuristic
matmul with warm and with cold weights; docs/measurements.md). A heuristic schedule marks its
row-block loop with ``ANNOTATION``; ``insert_prefetches`` then puts, at the top of each row block,
prefetches of its share of the next panel's pre-packed weights, so they are in cache when that panel
starts. The annotation is part of the schedule's trace, so a replayed record gets the same prefetches
in the runner's build and in compile.
"""

from __future__ import annotations

from collections.abc import Iterator

ANNOTATION = "autotune.prefetch_next_panel"
CACHE_LINE = 64  # bytes
_PREPROC = "meta_schedule.layout_rewrite_preproc"


def insert_prefetches(func):
    """``func`` (a scheduled PrimFunc) with prefetches in every loop marked ``ANNOTATION`` whose
    blocks read a pre-packed weight buffer, one panel per iteration of the enclosing loop."""
    from tvm import s_tir

    realize = func.body
    if not isinstance(realize, s_tir.SBlockRealize) or not _has_annotation(realize.block.body):
        return func
    root = realize.block
    packed = [block.writes[0].source for block in _blocks(root.body) if _PREPROC in block.annotations]
    body = _rewrite(root.body, None, packed)
    block = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body, root.init,
                         root.alloc_buffers, root.match_buffers, root.annotations)
    return func.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, block))


def prefetch_pass():
    """A pass applying ``insert_prefetches`` to every PrimFunc."""
    from tvm.tirx.transform import prim_func_pass

    return prim_func_pass(lambda func, _mod, _ctx: insert_prefetches(func), opt_level=0,
                          name="autotune.InsertPrefetches")


def _children(stmt) -> list:
    from tvm import s_tir, tirx

    if isinstance(stmt, tirx.SeqStmt):
        return list(stmt.seq)
    if isinstance(stmt, tirx.For):
        return [stmt.body]
    if isinstance(stmt, s_tir.SBlockRealize):
        return [stmt.block.body]
    return []


def _blocks(stmt) -> Iterator:
    from tvm import s_tir

    if isinstance(stmt, s_tir.SBlockRealize):
        yield stmt.block
    for child in _children(stmt):
        yield from _blocks(child)


def _has_annotation(stmt) -> bool:
    from tvm import tirx

    if isinstance(stmt, tirx.For) and ANNOTATION in stmt.annotations:
        return True
    return any(_has_annotation(child) for child in _children(stmt))


def _rewrite(stmt, panel_loop, packed: list):
    """``stmt`` with prefetches in its marked loops; ``panel_loop`` is the outermost loop above."""
    from tvm import tirx

    if isinstance(stmt, tirx.SeqStmt):
        return tirx.SeqStmt([_rewrite(s, panel_loop, packed) for s in stmt.seq])
    if not isinstance(stmt, tirx.For):
        return stmt
    if ANNOTATION not in stmt.annotations or panel_loop is None:
        body = _rewrite(stmt.body, panel_loop if panel_loop is not None else stmt, packed)
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding,
                        stmt.annotations)
    reads = [r.source for block in _blocks(stmt.body) for r in block.reads]
    weights = [b for b in packed if any(b.same_as(r) for r in reads)
               and int(b.shape[0]) == int(panel_loop.extent)]
    if not weights:
        return stmt
    body = tirx.SeqStmt([_prefetch_loop(stmt, panel_loop, weights[0]), stmt.body])
    return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding,
                    {k: v for k, v in stmt.annotations.items() if k != ANNOTATION})


def _prefetch_loop(row_blocks, panel_loop, weights):
    """Prefetch row block ``r``'s share of panel ``p + 1`` of ``weights`` (the last panel: itself)."""
    import math

    import tvm
    from tvm import tirx

    dtype = str(row_blocks.loop_var.ty)

    def const(value: int):
        return tirx.IntImm(dtype, value)

    element_bytes = tvm.runtime.DataType(str(weights.dtype)).bits // 8
    panel_bytes = math.prod(int(d) for d in weights.shape[1:]) * element_bytes
    lines = max(1, math.ceil(math.ceil(panel_bytes / CACHE_LINE) / int(row_blocks.extent)))
    line = tirx.Var("prefetch_line", dtype)
    next_panel = tirx.min(panel_loop.loop_var + const(1), const(int(weights.shape[0]) - 1))
    start = tirx.address_of(tirx.BufferLoad(weights, [next_panel] + [const(0)] * (len(weights.shape) - 1)))
    offset = tirx.min((row_blocks.loop_var * const(lines) + line) * const(CACHE_LINE),
                      const(max(0, panel_bytes - CACHE_LINE)))
    read, keep_in_all_levels, data_cache = (tirx.IntImm("int32", v) for v in (0, 3, 1))
    prefetch = tirx.call_llvm_intrin("void", "llvm.prefetch.p0", tirx.handle_add_byte_offset(start, offset),
                                     read, keep_in_all_levels, data_cache)
    return tirx.For(line, const(0), const(lines), tirx.ForKind.SERIAL, tirx.Evaluate(prefetch))
