"""Scratch buffers of CPU kernels on the thread's stack.

TVM lowers a kernel's scratch buffer to a stack array only below 1 KB (``runtime::kMaxStackAlloca``);
from 1 KB, ``LowerTVMBuiltin`` turns it into a ``TVMBackendAllocWorkspace`` call and a free, run
every time the buffer's scope is entered. A buffer allocated inside a parallel loop (an attention
block's scores for two query rows: 2 rows × 128 keys × 4 bytes is exactly 1 KB) then costs two
calls per iteration. ``scratch_on_stack`` marks buffers of constant size up to ``MAX_BYTES``, and no
more than ``BUDGET_BYTES`` per function in all, with the annotation that makes ``LowerTVMBuiltin``
leave them to LLVM, which allocates them once in the function's entry; larger ones keep TVM's
workspace. ``PIPELINE`` is TVM's default TIR pipeline with that pass before its host finalization.
"""

from __future__ import annotations

import math

PIPELINE = "autotune_cpu"
MAX_BYTES = 16 * 1024  # one buffer: a few attention rows' scores, a register tile's spill
BUDGET_BYTES = 64 * 1024  # all marked buffers of one function: far below a worker thread's stack
_KEEP = "disable_lower_builtin"  # TVM's ``kDisableLowerTVMBuiltin``


def register_pipeline() -> str:
    """Register ``PIPELINE`` with TVM (idempotent); its name, for ``tvm.tirx.build``/``relax.build``."""
    import tvm

    def factory():
        lower, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("s_tir")
        return lower, lambda: tvm.transform.Sequential([scratch_on_stack(), finalize_host()]), finalize_device

    tvm.tirx.register_tir_pipeline(PIPELINE, factory)
    return PIPELINE


def scratch_on_stack():
    """A pass marking each lowered PrimFunc's small constant-size global buffers to stay on the stack."""
    from tvm.tirx.transform import prim_func_pass

    def mark(func, _mod, _ctx):
        return func.with_body(_Marker().visit(func.body))

    return prim_func_pass(mark, opt_level=0, name="autotune.ScratchOnStack")


class _Marker:
    """Rebuilds the statements that hold others (TVM 0.27's lowered TIR declares buffers flat, in a
    sequence) with each buffer that fits the budget marked; any other statement is kept as it is."""

    def __init__(self) -> None:
        self.budget = BUDGET_BYTES

    def visit(self, stmt):
        from tvm import tirx

        if isinstance(stmt, tirx.AllocBuffer):
            return self._alloc(stmt)
        if isinstance(stmt, tirx.SeqStmt):
            seq = [self.visit(s) for s in stmt.seq]
            return stmt if all(a.same_as(b) for a, b in zip(seq, stmt.seq)) else tirx.SeqStmt(seq, stmt.span)
        if isinstance(stmt, tirx.For):
            return self._with_body(stmt, lambda body: tirx.For(
                stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding, stmt.annotations,
                stmt.step, stmt.span))
        if isinstance(stmt, tirx.AttrStmt):
            return self._with_body(stmt, lambda body: tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body,
                                                                    stmt.span))
        if isinstance(stmt, tirx.While):
            return self._with_body(stmt, lambda body: tirx.While(stmt.condition, body, stmt.span))
        if isinstance(stmt, tirx.IfThenElse):
            then_case = self.visit(stmt.then_case)
            else_case = self.visit(stmt.else_case) if stmt.else_case is not None else None
            if then_case.same_as(stmt.then_case) and (else_case is None or else_case.same_as(stmt.else_case)):
                return stmt
            return tirx.IfThenElse(stmt.condition, then_case, else_case, stmt.span)
        return stmt

    def _with_body(self, stmt, rebuild):
        body = self.visit(stmt.body)
        return stmt if body.same_as(stmt.body) else rebuild(body)

    def _alloc(self, stmt):
        from tvm import tirx

        size = _constant_bytes(stmt.buffer)
        if size is None or size > MAX_BYTES or size > self.budget or stmt.buffer.scope() != "global":
            return stmt
        self.budget -= size
        return tirx.AllocBuffer(stmt.buffer, {**stmt.annotations, _KEEP: tirx.IntImm("bool", 1)}, stmt.span)


def _constant_bytes(buffer) -> int | None:
    from tvm import tirx

    if not all(isinstance(extent, tirx.IntImm) for extent in buffer.shape):
        return None
    return math.prod(int(extent) for extent in buffer.shape) * buffer.dtype.bits * buffer.dtype.lanes // 8
