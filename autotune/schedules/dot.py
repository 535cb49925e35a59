"""Kernels built on one dot-product instruction (bf16 ``vdpbf16ps``, int8 ``vpdpbusd``): what they
share once their compute and tensor intrinsic exist.

Each such kernel is a reduction block named ``DotProduct.block`` computing ``out[..., n] = sum_k
x[..., k] * w[k, n]`` with the weight packed panel-major, ``[N / P, K / group, P, group]``
(``panel_major``): one instruction takes a group of ``x`` (broadcast) and 16 columns × that group of
``w`` (512 contiguous bits), and adds 16 dot products of ``group`` into 16 32-bit accumulators; a
panel of ``P`` columns is one contiguous stream down K, so a register tile sweeping it reads whole
cache lines in order (with ``[K / group, N, group]`` each step jumped a row of the whole weight: a
page apart at N = 1536). This module holds the layout, the default schedule (a register tile swept
down each column panel), the search's tiling rule around the intrinsic, and the postprocessor that
keeps vector loops off it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LANES = 16  # 32-bit accumulators per instruction (AVX-512)
ROWS = 8  # register tile: 8 rows × 2 vectors = 16 accumulators, 2 weight loads, 8 broadcasts
VECTORS_PER_TILE = 2


def panel_columns(n: int) -> int:
    """Columns per weight panel for ``n`` columns: a register tile's width where ``n`` holds whole
    panels of it, else one vector (``n`` is a multiple of ``LANES``)."""
    wide = LANES * VECTORS_PER_TILE
    return wide if n % wide == 0 else LANES


def panel_major(values: np.ndarray, group: int) -> np.ndarray:
    """A ``[K, N]`` weight (already in the kernel's element type) as the kernel reads it:
    ``[N / P, K / group, P, group]`` with ``P = panel_columns(N)``."""
    k, n = values.shape
    panel = panel_columns(n)
    return values.reshape(k // group, group, n // panel, panel).transpose(2, 0, 3, 1).copy()


def panel_major_columns(weight) -> int:
    """The ``N`` of a panel-major weight (a TE tensor or an array)."""
    panels, _, panel, _ = weight.shape
    return panels * panel


def panel_major_element(weight, step, column, within):
    """TE: element ``[step * group + within, column]`` of the ``[K, N]`` weight that ``weight`` packs."""
    panel = weight.shape[2]
    return weight[column // panel, step, column % panel, within]


@dataclass(frozen=True)
class DotProduct:
    """One instruction's kernel: how tasks, schedules and records recognise it, and its tensor
    intrinsic (``LANES`` accumulators += one broadcast group of ``x`` × ``LANES`` columns of ``w``)."""

    block: str  # the reduction block's name: the search and the heuristic recognise tasks by it
    kernel: str  # the PrimFunc's name hint (``frontend.attention`` matches projections by it)
    intrinsic: str  # the tensor intrinsic's registered name
    group: int  # products per accumulator per instruction
    feature: str  # the LLVM feature the instruction needs
    operands: tuple[str, str]  # the dtypes of ``x``'s and ``w``'s elements
    accumulator: str  # the accumulators' dtype
    product: Callable  # (x element, w element) -> their product in ``accumulator`` (TIR)
    ir: str  # LLVM IR defining ``extern``: (accumulators, the group's bits as i32, columns as i32 vector)
    extern: str

    def register(self) -> None:
        """Register the intrinsic with TVM (once per process): before a schedule tensorizes with it or
        a recorded trace that did is replayed."""
        if self.intrinsic not in _REGISTERED:
            _register(self)
            _REGISTERED.add(self.intrinsic)


_REGISTERED: set[str] = set()


def _register(kind: DotProduct) -> None:
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    group, (x_type, w_type), acc_type, product = kind.group, kind.operands, kind.accumulator, kind.product
    acc_vector, x_vector, w_vector = f"{acc_type}x{LANES}", f"{x_type}x{group}", f"{w_type}x{LANES * group}"
    ir, extern = kind.ir, kind.extern

    @T.prim_func(s_tir=True)
    def description(a: T.Buffer((group,), x_type, offset_factor=1),
                    b: T.Buffer((LANES, group), w_type, offset_factor=1),
                    c: T.Buffer((LANES,), acc_type, offset_factor=1)):
        with T.sblock("root"):
            T.reads(c[0:LANES], a[0:group], b[0:LANES, 0:group])
            T.writes(c[0:LANES])
            for i, k in T.grid(LANES, group):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + product(a[vk], b[vi, vk])

    @T.prim_func(s_tir=True)
    def implementation(a: T.Buffer((group,), x_type, offset_factor=1),
                       b: T.Buffer((LANES, group), w_type, offset_factor=1),
                       c: T.Buffer((LANES,), acc_type, offset_factor=1)):
        with T.sblock("root"):
            T.reads(c[0:LANES], a[0:group], b[0:LANES, 0:group])
            T.writes(c[0:LANES])
            with T.attr(0, "pragma_import_llvm", ir):
                c[T.ramp(0, 1, LANES)] = T.call_extern(
                    acc_vector, extern, c.vload([0], acc_vector),
                    T.reinterpret(a.vload([0], x_vector), dtype="int32"),
                    T.reinterpret(b.vload([0, 0], w_vector), dtype=f"int32x{LANES}"))

    TensorIntrin.register(kind.intrinsic, description, implementation, override=True)


def dot_block(sch, kind: DotProduct):
    """The schedule's dot-product block of ``kind``, or None (a task of another kernel)."""
    return _block_named(sch, kind.block)


def _block_named(sch, name: str):
    from tvm.s_tir.schedule import ScheduleError

    try:
        return sch.get_sblock(name)
    except ScheduleError:
        return None


def has_block(mod, name: str) -> bool:
    """Whether a task's module computes a block named ``name``."""
    from tvm import s_tir

    return _block_named(s_tir.Schedule(mod), name) is not None


def has_dot_block(mod, kind: DotProduct) -> bool:
    """Whether a task's module computes ``kind``'s dot-product block."""
    return has_block(mod, kind.block)


def tiled(mod, target, parallel: bool, kind: DotProduct):
    """A ``ROWS`` × ``VECTORS_PER_TILE`` register tile of ``kind``'s instruction swept down each
    column panel (every group of K in turn); panels in parallel, the epilogue per panel; None for
    other tasks.

    Leading axes (batch) run inside each panel, so a panel's weights serve every row; they are not
    fused into the rows (blockize cannot split a fused row's quotient and remainder). The tiles divide
    the output exactly (a predicated remainder cannot be tensorized): rows by the largest divisor up
    to ``ROWS``, columns by two vectors or one.
    """
    from tvm import s_tir
    from tvm.target.codegen import target_has_features

    from .loops import inline_producers, largest_divisor, loop_extent, vector_lanes
    from .matmul import attach_epilogue, epilogue_column_group, panels_fit_groups

    sch = s_tir.Schedule(mod)
    block = dot_block(sch, kind)
    if block is None or vector_lanes(target) != LANES or not target_has_features(kind.feature, target):
        return None
    kind.register()
    inline_producers(sch, block)  # the epilogue becomes one block, computed per panel
    *lead, rows, cols, groups, within = sch.get_loops(block)
    group = epilogue_column_group(sch, block)
    col_tile = next((LANES * v for v in (VECTORS_PER_TILE, 1)
                     if loop_extent(sch, cols) % (LANES * v) == 0 and panels_fit_groups(LANES * v, group)),
                    LANES)
    col_out, col_vectors, col_lanes = sch.split(cols, [None, col_tile // LANES, LANES])
    row_out, row_in = sch.split(rows, [None, largest_divisor(loop_extent(sch, rows), ROWS)])
    sch.reorder(col_out, *lead, row_out, groups, row_in, col_vectors, col_lanes, within)
    if parallel:
        sch.parallel(col_out)
    attach_epilogue(sch, block, col_out, panels_fit_groups(col_tile, group), parallel, LANES)
    init = sch.decompose_reduction(block, groups)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(col_lanes, kind.intrinsic)
    sch.unroll(row_in)
    sch.unroll(col_vectors)
    return sch


def search_rules(kind: DotProduct) -> list:
    """MetaSchedule's CPU rules with multi-level tiling for ``kind``'s intrinsic before the plain one:
    the search samples the tiles around the instruction (and may still pick a plain nest)."""
    from tvm.s_tir import meta_schedule as ms

    rules = list(ms.schedule_rule.ScheduleRule.create("llvm"))
    position = next(i for i, rule in enumerate(rules) if isinstance(rule, ms.schedule_rule.MultiLevelTiling))
    tiling = ms.schedule_rule.MultiLevelTilingWithIntrin(
        kind.intrinsic, structure="SSRSRS", tile_binds=None, max_innermost_factor=64, vector_load_lens=None,
        reuse_read=None, reuse_write=ms.schedule_rule.ReuseType(req="may", levels=[1, 2], scope="global"))
    return [*rules[:position], tiling, *rules[position:]]


def no_vector_loop_around_intrinsic(kind: DotProduct):
    """A MetaSchedule postprocessor, run after ``RewriteParallelVectorizeUnroll`` and before
    ``RewriteTensorize``: loops it vectorised around a block ``kind``'s intrinsic (or its vectorised
    init) will replace are unrolled instead (their bodies are vectors already; vectorising around
    them fails the build)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.postproc import PyPostproc
    from tvm.tirx import ForKind

    @derived_object
    class NoVectorLoopAroundIntrinsic(PyPostproc):
        def _initialize_with_tune_context(self, context) -> None:
            pass

        def apply(self, sch) -> bool:
            for block in _blocks_to_tensorize(sch, kind.intrinsic):
                for loop in sch.get_loops(block):
                    if sch.get(loop).kind == ForKind.VECTORIZED:
                        sch.unroll(loop)
            return True

        def clone(self):
            return NoVectorLoopAroundIntrinsic()

    return NoVectorLoopAroundIntrinsic()


def _blocks_to_tensorize(sch, intrinsic: str) -> list:
    """The blocks of ``sch`` that ``RewriteTensorize`` will replace: those the tiling rule annotated
    for ``intrinsic`` and, where ``RewriteReductionBlock`` split one, its init block."""
    found = []
    for global_var, _ in sch.mod.functions_items():
        blocks = _blocks_under(sch, sch.get_sblock("root", func_name=global_var.name_hint))
        names = {sch.get(b).name_hint for b in blocks
                 if sch.get(b).annotations.get("meta_schedule.auto_tensorize") == intrinsic}
        inits = {name.removesuffix("_update") + "_init" for name in names}
        found += [b for b in blocks if sch.get(b).name_hint in names | inits]
    return found


def _blocks_under(sch, block) -> list:
    children = list(sch.get_child_blocks(block))
    return children + [b for child in children for b in _blocks_under(sch, child)]
