"""int8 dot products on AVX512-VNNI (``vpdpbusd``): quantization, the kernel's compute and its tensor
intrinsic (``dot`` holds the schedule and search rules every dot-product kernel shares).

A projection ``y = x @ W`` by a constant fp32 weight becomes three steps:

1. ``quantized_rows``: each row of ``x`` (a token) gets an asymmetric u8 scale and zero point from
   its minimum and maximum (zero always representable), computed at run time (dynamic
   quantization), and ``q = clip(round(x / scale) + zero_point, 0, 255)`` as ``uint8``;
2. ``matmul_compute``: ``acc = q @ Wq`` in int32, ``Wq`` the weight quantized per output column
   (symmetric, [-127, 127]) and packed panel-major ``[N / P, K / 4, P, 4]`` (``dot.panel_major``):
   one ``vpdpbusd`` takes four u8 of a row (broadcast) and 16 columns × those four s8 of ``Wq`` (512
   contiguous bits), and adds 16 dot products of four into int32 lanes (exact: no saturation);
3. ``dequantized``: ``y = (acc - zero_point * column_sum(Wq)) * scale * weight_scale`` in fp32, the
   epilogue of the kernel (fused with the bias, GELU or residual after it).

``llvm.x86.avx512.vpdpbusd.512`` takes ``<16 x i32>`` operands, which TIR can name; the intrinsic's
implementation still goes through a few lines of LLVM IR (``VPDPBUSD_IR``) that broadcast the four
bytes, so that a vectorised loop around it falls back to a serial one, as for bf16.
"""

from __future__ import annotations

import numpy as np

from .dot import LANES, DotProduct, panel_major, panel_major_columns, panel_major_element, tiled

BLOCK = "int8_dot"
KERNEL = "int8_matmul"
DEQUANTIZED = "int8_dequantized"  # the kernel's epilogue (``frontend.attention`` follows it to the kernel)
INTRINSIC = "autotune_dot_16x4_u8s8"
PARTIALS = "int8_row_partials"  # the quantization task's first block: its rule recognises it by it
QUAD = 4  # u8 × s8 products per int32 accumulator per instruction
FEATURE = "avx512vnni"  # LLVM's name (/proc/cpuinfo: avx512_vnni)
LEVELS = 255  # u8 steps of an activation row
WEIGHT_LEVELS = 127  # s8 steps each side of zero of a weight column or table row (symmetric: -128 unused)
SMALLEST_SCALE = 1e-30  # an all-zero row: any scale gives q == zero point == 0

VPDPBUSD_IR = r"""
declare <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32>, <16 x i32>, <16 x i32>)
define linkonce_odr <16 x i32> @autotune_vpdpbusd(<16 x i32> %acc, i32 %quad, <16 x i32> %columns) alwaysinline {
  %one = insertelement <16 x i32> poison, i32 %quad, i64 0
  %quads = shufflevector <16 x i32> %one, <16 x i32> poison, <16 x i32> zeroinitializer
  %sum = call <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32> %acc, <16 x i32> %quads, <16 x i32> %columns)
  ret <16 x i32> %sum
}
"""


def packable(k: int, n: int) -> bool:
    """Whether a ``[k, n]`` weight fits the kernel: whole quads of rows, whole vectors of columns."""
    return k % QUAD == 0 and n % LANES == 0


def quantized_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``[K, N]`` fp32 weight as the kernel reads it: ``int8`` values packed ``[N / P, K / 4, P, 4]``, each
    column's fp32 scale ``[N]`` and ``column_sums`` of the int8 values."""
    values, scale = symmetric(weight, axis=0)
    return packed_values(values), scale, column_sums(values)


def column_sums(values: np.ndarray) -> np.ndarray:
    """The int32 sums ``[N]`` of an int8 weight ``[K, N]``'s columns: the term that takes an
    activation's zero point out of its products (exact in fp32 too: far below 2**24)."""
    return values.astype(np.int32).sum(axis=0, dtype=np.int32)


def packed_values(values: np.ndarray) -> np.ndarray:
    """An int8 ``[K, N]`` weight as the kernel reads it: ``[N / P, K / 4, P, 4]`` (``dot.panel_major``)."""
    return panel_major(values, QUAD)


def quantized_table(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An embedding table ``[V, D]`` as ``int8`` values and each row's fp32 scale ``[V]``."""
    return symmetric(table, axis=1)


def symmetric(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as int8 in [-127, 127] with one fp32 scale per slice along ``axis`` (reduced over
    it), each element within half a step of its value."""
    scale = np.abs(values).max(axis=axis) / WEIGHT_LEVELS
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    expanded = np.expand_dims(scale, axis)
    return np.clip(np.rint(values / expanded), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8), scale


def dequantized_rows(rows, scales):
    """TE: table rows read as int8 ``[..., D]`` with their scales ``[...]``, in fp32."""
    from tvm import te

    return te.compute(rows.shape, lambda *i: rows(*i).astype("float32") * scales(*i[:-1]), name="int8_rows")


def quantized_rows(x):
    """TE: fp32 ``x [..., K]`` quantized per row: ``[q, scale, zero_point]``, ``q`` the ``uint8``
    values ``[..., K]``, each row's scale and zero point fp32 ``[...]`` (the kernel's epilogue reads
    them as a broadcast, so operator fusion keeps it with the kernel).

    A row's two bounds (its minimum negated, so both are maxima, and its maximum) come from ``LANES``
    partial maxima each (``int8_row_partials``: lane ``l`` of every ``LANES``-wide chunk, a vector of
    running maxima) reduced once (``int8_row_bounds``).
    """
    from tvm import te, tirx

    *lead, k = x.shape
    lanes = LANES if int(k) % LANES == 0 else 1
    chunk = te.reduce_axis((0, int(k) // lanes), name="chunk")
    lane = te.reduce_axis((0, lanes), name="lane")

    def signed(index, which):  # which 0: the value negated (its maximum is the minimum's negation)
        return tirx.Select(which == 0, -x(*index), x(*index))

    partials = te.compute((*lead, 2, lanes), lambda *i: te.max(
        signed((*i[:-2], chunk * lanes + i[-1]), i[-2]), axis=chunk), name=PARTIALS)
    bounds = te.compute((*lead, 2), lambda *i: te.max(partials[(*i, lane)], axis=lane), name="int8_row_bounds")
    zero, levels = tirx.const(0.0, "float32"), tirx.const(LEVELS, "float32")

    def widened(row, which):  # zero is always representable: each bound is widened to it
        return tirx.max(bounds[(*row, which)], zero)

    def clipped(value):
        return tirx.min(tirx.max(value, zero), levels)

    scale = te.compute(lead, lambda *row: tirx.max((widened(row, 0) + widened(row, 1)) / levels,
                                                   tirx.const(SMALLEST_SCALE, "float32")), name="int8_row_scale")
    zero_point = te.compute(lead, lambda *row: clipped(tirx.nearbyint(widened(row, 0) / scale(*row))),
                            name="int8_row_zero_point")
    q = te.compute(x.shape, lambda *index: clipped(  # round, not nearbyint: TVM vectorises only round
        tirx.round(x(*index) / scale(*index[:-1])) + zero_point(*index[:-1])).astype("uint8"),
        name="int8_quantized")
    return [q, scale, zero_point]


def quantize_rows_schedule(mod, target, parallel: bool):
    """``quantized_rows``' schedule, or None for other tasks: the partial bounds as one vector of
    maxima per row and bound, rows in parallel; then bounds, scales and zero points (a few values a
    row); then the quantized values, rows in parallel, vectorised.

    The nests stay apart: scale and zero point are outputs, which ``compute_at`` cannot move, and
    ``reverse_compute_at`` cannot place under a row loop the bounds they read by a constant index.
    """
    from tvm import s_tir
    from tvm.s_tir.schedule import ScheduleError

    from .loops import vector_lanes, vectorize_inner

    sch = s_tir.Schedule(mod)
    try:
        partials = sch.get_sblock(PARTIALS)
    except ScheduleError:
        return None
    quantized = sch.get_sblock("int8_quantized")
    rank = len(sch.get_loops(partials)) - 3  # the row loops before (bound, lane, chunk)
    if parallel:  # before the reduction is split into init and update (which parallel rejects)
        for block in (partials, quantized):
            rows = sch.get_loops(block)[:rank]
            if rows:
                sch.parallel(sch.fuse(*rows) if len(rows) > 1 else rows[0])
    *_, which, lane, chunk = sch.get_loops(partials)
    sch.reorder(chunk, which, lane)
    init = sch.decompose_reduction(partials, chunk)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(which)
    sch.unroll(lane)  # LLVM makes the unrolled lanes one vector (vectorising a reduction's update fails)
    vectorize_inner(sch, quantized, vector_lanes(target))
    return sch


def matmul_compute(q, weight):
    """TE: ``q [..., K]`` (uint8) times ``weight [N / P, K / 4, P, 4]`` (int8, ``quantized_weight``) in
    int32."""
    from tvm import te

    quad = te.reduce_axis((0, weight.shape[1]), name="quad")
    within = te.reduce_axis((0, QUAD), name="within")

    def dot(*index):
        *lead, column = index
        return te.sum(q[(*lead, quad * QUAD + within)].astype("int32")
                      * panel_major_element(weight, quad, column, within).astype("int32"), axis=[quad, within])

    return te.compute((*q.shape[:-1], panel_major_columns(weight)), dot, name=BLOCK)


def zero_point_taken_out(acc, zero_point, column_sums):
    """TE: ``acc [..., N]`` of u8 values with one ``zero_point`` (a u8 scalar) times int8 weights,
    as the products of the values less the zero point (int32, exact)."""
    from tvm import te

    return te.compute(acc.shape, lambda *i: acc(*i) - zero_point().astype("int32") * column_sums[i[-1]],
                      name="int8_zero_point_taken_out")


def dequantized(acc, scale, zero_point, weight_scale, column_sums):
    """TE: the int32 products ``acc [..., N]`` back in fp32: the rows' zero points taken out through
    the weight's column sums, then both scales applied."""
    from tvm import te

    def value(*index):
        *row, column = index
        centred = acc(*index).astype("float32") - zero_point(*row) * column_sums[column].astype("float32")
        return centred * (scale(*row) * weight_scale[column])

    return te.compute(acc.shape, value, name=DEQUANTIZED)


def int8_matmul(mod, target, parallel: bool):
    """The int8 kernel's register-tile default schedule (``dot.tiled``), or None for other tasks."""
    return tiled(mod, target, parallel, DOT)


DOT = DotProduct(block=BLOCK, kernel=KERNEL, intrinsic=INTRINSIC, group=QUAD, feature=FEATURE,
                 operands=("uint8", "int8"), accumulator="int32",
                 product=lambda a, b: a.astype("int32") * b.astype("int32"), ir=VPDPBUSD_IR, extern="autotune_vpdpbusd")
