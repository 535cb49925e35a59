"""bf16 dot products on AVX512-BF16 (``vdpbf16ps``): the kernel's compute, its tensor intrinsic and
its default schedule.

TVM 0.27 legalises bfloat16 arithmetic to fp32 on LLVM targets, and LLVM's
``llvm.x86.avx512bf16.dpbf16ps.512`` takes ``<32 x bfloat>`` operands that TIR cannot name. So here a
bf16 value is its raw bits in a ``uint16`` (rounded to nearest even from fp32), and the intrinsic's
implementation calls ``autotune_dpbf16ps``, a few lines of LLVM IR (``DPBF16PS_IR``) that broadcast
the pair and bit-cast integer vectors to ``<32 x bfloat>`` around the instruction (the broadcast is
in the IR so that a vectorised loop around the intrinsic falls back to a serial one, as TVM's
vectoriser does for any vector body, instead of failing on a broadcast of a vector). Every kernel using the intrinsic links that
IR in (``pragma_import_llvm``) and LLVM inlines it, so heuristic builds, searched candidates and
artifacts all get ``vdpbf16ps`` with no extra object files.

The kernel (``matmul_compute``): ``out[..., n] = sum_k x[..., k] * w[k, n]`` in fp32 from bf16
operands, the weight packed as ``[K / 2, N, 2]``: one instruction takes a pair of ``x`` (broadcast) and
16 columns × that pair of ``w`` (512 contiguous bits), and adds 16 fp32 dot products of two.
"""

from __future__ import annotations

import numpy as np

BLOCK = "bf16_dot"  # the reduction block's name: the search and the heuristic recognise tasks by it
KERNEL = "bf16_matmul"  # the PrimFunc's name hint (``frontend.attention`` matches projections by it)
INTRINSIC = "autotune_dot_16x2_bf16"
LANES = 16  # fp32 accumulators per instruction
PAIR = 2  # bf16 products per accumulator per instruction
ROWS = 8  # register tile: 8 rows × 2 vectors = 16 accumulators, 2 weight loads, 8 broadcasts
VECTORS_PER_TILE = 2
FEATURE = "avx512bf16"  # LLVM's name (/proc/cpuinfo: avx512_bf16)

DPBF16PS_IR = r"""
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
define linkonce_odr <16 x float> @autotune_dpbf16ps(<16 x float> %acc, i32 %pair, <16 x i32> %columns) alwaysinline {
  %one = insertelement <16 x i32> poison, i32 %pair, i64 0
  %pairs = shufflevector <16 x i32> %one, <16 x i32> poison, <16 x i32> zeroinitializer
  %a = bitcast <16 x i32> %pairs to <32 x bfloat>
  %b = bitcast <16 x i32> %columns to <32 x bfloat>
  %sum = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %a, <32 x bfloat> %b)
  ret <16 x float> %sum
}
"""


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """fp32 ``values`` rounded to nearest even bf16, as the ``uint16`` of its bits (NaN stays NaN)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    nan = np.isnan(values)
    return np.where(nan, np.uint32(0x7FC0), rounded).astype(np.uint16)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """The fp32 values of bf16 ``bits``."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def packed_weight(weight: np.ndarray) -> np.ndarray:
    """A ``[K, N]`` fp32 weight as the kernel reads it: bf16 bits, ``[K / 2, N, 2]``."""
    k, n = weight.shape
    return bf16_bits(weight).reshape(k // 2, PAIR, n).transpose(0, 2, 1).copy()


def packable(k: int, n: int) -> bool:
    """Whether a ``[k, n]`` weight fits the kernel: whole pairs of rows, whole vectors of columns."""
    return k % PAIR == 0 and n % LANES == 0


def widened(bits):
    """The fp32 value of a ``uint16`` bf16 ``bits`` expression (the intrinsic's pattern)."""
    from tvm import tirx

    return tirx.reinterpret("float32", tirx.shift_left(bits.astype("uint32"), tirx.const(16, "uint32")))


def widened_tensor(bits):
    """TE: bf16 ``bits`` as fp32 (exact)."""
    from tvm import te

    return te.compute(bits.shape, lambda *index: widened(bits(*index)), name="bf16_widened")


def rounded_bits(x):
    """TE: fp32 tensor ``x`` as bf16 bits, rounded to nearest even (the kernel's left operand).
    NaN inputs are not kept apart (a NaN activation makes the output meaningless either way)."""
    from tvm import te, tirx

    def bits(*index):
        value = tirx.reinterpret("uint32", x(*index))
        odd = tirx.bitwise_and(tirx.shift_right(value, tirx.const(16, "uint32")), tirx.const(1, "uint32"))
        return tirx.shift_right(value + tirx.const(0x7FFF, "uint32") + odd,
                                tirx.const(16, "uint32")).astype("uint16")

    return te.compute(x.shape, bits, name="bf16_bits")


def matmul_compute(x_bits, weight):
    """TE: ``x_bits [..., K]`` (bf16 bits) times ``weight [K / 2, N, 2]`` (``packed_weight``), in fp32."""
    from tvm import te

    pairs, columns, _ = weight.shape
    pair = te.reduce_axis((0, pairs), name="pair")
    within = te.reduce_axis((0, PAIR), name="within")

    def dot(*index):
        *lead, column = index
        return te.sum(widened(x_bits[(*lead, pair * PAIR + within)]) * widened(weight[pair, column, within]),
                      axis=[pair, within])

    return te.compute((*x_bits.shape[:-1], columns), dot, name=BLOCK)


_registered = False


def register_intrinsic() -> None:
    """Register ``INTRINSIC`` with TVM (once per process): before a schedule tensorizes with it or a
    recorded trace that did is replayed."""
    global _registered
    if _registered:
        return
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def description(a: T.Buffer((PAIR,), "uint16", offset_factor=1),
                    b: T.Buffer((LANES, PAIR), "uint16", offset_factor=1),
                    c: T.Buffer((LANES,), "float32", offset_factor=1)):
        with T.sblock("root"):
            T.reads(c[0:LANES], a[0:PAIR], b[0:LANES, 0:PAIR])
            T.writes(c[0:LANES])
            for i, k in T.grid(LANES, PAIR):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + widened(a[vk]) * widened(b[vi, vk])

    @T.prim_func(s_tir=True)
    def implementation(a: T.Buffer((PAIR,), "uint16", offset_factor=1),
                       b: T.Buffer((LANES, PAIR), "uint16", offset_factor=1),
                       c: T.Buffer((LANES,), "float32", offset_factor=1)):
        with T.sblock("root"):
            T.reads(c[0:LANES], a[0:PAIR], b[0:LANES, 0:PAIR])
            T.writes(c[0:LANES])
            with T.attr(0, "pragma_import_llvm", DPBF16PS_IR):
                c[T.ramp(0, 1, LANES)] = T.call_extern(
                    "float32x16", "autotune_dpbf16ps", c.vload([0], "float32x16"),
                    T.reinterpret(a.vload([0], "uint16x2"), dtype="int32"),
                    T.reinterpret(b.vload([0, 0], "uint16x32"), dtype="int32x16"))

    TensorIntrin.register(INTRINSIC, description, implementation, override=True)
    _registered = True


def dot_block(sch):
    """The schedule's bf16 dot-product block (``matmul_compute``), or None (a task of another kernel)."""
    from tvm.s_tir.schedule import ScheduleError

    try:
        return sch.get_sblock(BLOCK)
    except ScheduleError:
        return None


def has_dot_block(mod) -> bool:
    """Whether a task's module computes a bf16 dot-product block."""
    from tvm import s_tir

    return dot_block(s_tir.Schedule(mod)) is not None


def bf16_matmul(mod, target, parallel: bool):
    """A ``ROWS`` × ``VECTORS_PER_TILE`` register tile of ``vdpbf16ps`` swept down each column
    panel (every pair of K in turn); panels in parallel, the epilogue per panel; None for other tasks.

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
    block = dot_block(sch)
    if block is None or vector_lanes(target) != LANES or not target_has_features(FEATURE, target):
        return None
    register_intrinsic()
    inline_producers(sch, block)  # the epilogue becomes one block, computed per panel
    *lead, rows, cols, pairs, within = sch.get_loops(block)
    group = epilogue_column_group(sch, block)
    col_tile = next((LANES * v for v in (VECTORS_PER_TILE, 1)
                     if loop_extent(sch, cols) % (LANES * v) == 0 and panels_fit_groups(LANES * v, group)),
                    LANES)
    col_out, col_vectors, col_lanes = sch.split(cols, [None, col_tile // LANES, LANES])
    row_out, row_in = sch.split(rows, [None, largest_divisor(loop_extent(sch, rows), ROWS)])
    sch.reorder(col_out, *lead, row_out, pairs, row_in, col_vectors, col_lanes, within)
    if parallel:
        sch.parallel(col_out)
    attach_epilogue(sch, block, col_out, panels_fit_groups(col_tile, group), parallel, LANES)
    init = sch.decompose_reduction(block, pairs)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(col_lanes, INTRINSIC)
    sch.unroll(row_in)
    sch.unroll(col_vectors)
    return sch


def search_rules() -> list:
    """MetaSchedule's CPU rules with multi-level tiling for ``INTRINSIC`` before the plain one: the
    search samples the tiles around the instruction (and may still pick a plain fp32 nest)."""
    from tvm.s_tir import meta_schedule as ms

    rules = list(ms.schedule_rule.ScheduleRule.create("llvm"))
    position = next(i for i, rule in enumerate(rules) if isinstance(rule, ms.schedule_rule.MultiLevelTiling))
    tiling = ms.schedule_rule.MultiLevelTilingWithIntrin(
        INTRINSIC, structure="SSRSRS", tile_binds=None, max_innermost_factor=64, vector_load_lens=None,
        reuse_read=None, reuse_write=ms.schedule_rule.ReuseType(req="may", levels=[1, 2], scope="global"))
    return [*rules[:position], tiling, *rules[position:]]


def no_vector_loop_around_intrinsic():
    """A MetaSchedule postprocessor, run after ``RewriteParallelVectorizeUnroll`` and before
    ``RewriteTensorize``: loops it vectorised around a block the intrinsic (or its vectorised init)
    will replace are unrolled instead (their bodies are vectors already; vectorising around them
    fails the build)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.postproc import PyPostproc
    from tvm.tirx import ForKind

    @derived_object
    class NoVectorLoopAroundIntrinsic(PyPostproc):
        def _initialize_with_tune_context(self, context) -> None:
            pass

        def apply(self, sch) -> bool:
            for block in _blocks_to_tensorize(sch):
                for loop in sch.get_loops(block):
                    if sch.get(loop).kind == ForKind.VECTORIZED:
                        sch.unroll(loop)
            return True

        def clone(self):
            return NoVectorLoopAroundIntrinsic()

    return NoVectorLoopAroundIntrinsic()


def _blocks_to_tensorize(sch) -> list:
    """The blocks of ``sch`` that ``RewriteTensorize`` will replace: those the tiling rule annotated
    for ``INTRINSIC`` and, where ``RewriteReductionBlock`` split one, its init block."""
    found = []
    for global_var, _ in sch.mod.functions_items():
        blocks = _blocks_under(sch, sch.get_sblock("root", func_name=global_var.name_hint))
        names = {sch.get(b).name_hint for b in blocks
                 if sch.get(b).annotations.get("meta_schedule.auto_tensorize") == INTRINSIC}
        inits = {name.removesuffix("_update") + "_init" for name in names}
        found += [b for b in blocks if sch.get(b).name_hint in names | inits]
    return found


def _blocks_under(sch, block) -> list:
    children = list(sch.get_child_blocks(block))
    return children + [b for child in children for b in _blocks_under(sch, child)]
