"""bf16 dot products on AVX512-BF16 (``vdpbf16ps``): the kernel's compute and its tensor intrinsic
(``dot`` holds the schedule and search rules every dot-product kernel shares).

TVM 0.27 legalises bfloat16 arithmetic to fp32 on LLVM targets, and LLVM's
``llvm.x86.avx512bf16.dpbf16ps.512`` takes ``<32 x bfloat>`` operands that TIR cannot name. So here a
bf16 value is its raw bits in a ``uint16`` (rounded to nearest even from fp32), and the intrinsic's
implementation calls ``autotune_dpbf16ps``, a few lines of LLVM IR (``DPBF16PS_IR``) that broadcast
the pair and bit-cast integer vectors to ``<32 x bfloat>`` around the instruction (the broadcast is
in the IR so that a vectorised loop around the intrinsic falls back to a serial one, as TVM's
vectoriser does for any vector body, instead of failing on a broadcast of a vector). Every kernel
using the intrinsic links that IR in (``pragma_import_llvm``) and LLVM inlines it, so heuristic
builds, searched candidates and artifacts all get ``vdpbf16ps`` with no extra object files.

The kernel (``matmul_compute``): ``out[..., n] = sum_k x[..., k] * w[k, n]`` in fp32 from bf16
operands, the weight packed panel-major as ``[N / P, K / 2, P, 2]`` (``dot.panel_major``): one
instruction takes a pair of ``x`` (broadcast) and 16 columns × that pair of ``w`` (512 contiguous
bits), and adds 16 fp32 dot products of two.

Activations are rounded to bf16 by ``vcvtneps2bf16`` through a TIR op of ours (``ROUNDING``, lowered
per vector width), in the epilogue or the task that produces them (a LayerNorm's:
``layer_norm_and_bits``); a softmax whose probabilities are rounded takes a cheaper exponential
(``exponential``).
"""

from __future__ import annotations

import numpy as np

from .dot import LANES, DotProduct, has_block, panel_major, panel_major_columns, panel_major_element, tiled

BLOCK = "bf16_dot"
KERNEL = "bf16_matmul"
ACTIVATIONS_BLOCK = "bf16_activations_dot"  # attention's products: scheduled with their attention block
ACTIVATIONS_KERNEL = "bf16_activations_matmul"
BITS = "bf16_bits"  # the PrimFunc rounding an activation to bf16 bits
NORM_AND_BITS = "layer_norm_bf16_bits"  # the PrimFunc of a LayerNorm whose output is also rounded
ROUNDING = "autotune.bf16_round"  # the TIR op rounding fp32 to bf16 bits (``register_rounding``)
PACKED_PAIRS = "bf16_packed_pairs"  # the PrimFunc rounding and packing a product's right operand
INTRINSIC = "autotune_dot_16x2_bf16"
PAIR = 2  # bf16 products per fp32 accumulator per instruction
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
    """A ``[K, N]`` fp32 weight as the kernel reads it: bf16 bits, ``[N / P, K / 2, P, 2]``
    (``dot.panel_major``)."""
    return panel_major(bf16_bits(weight), PAIR)


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
    """TE: fp32 tensor ``x`` as bf16 bits, rounded to nearest even (``ROUNDING``: ``vcvtneps2bf16``).
    NaN inputs are not kept apart (a NaN activation makes the output meaningless either way)."""
    from tvm import te, tirx

    register_rounding()
    return te.compute(x.shape, lambda *index: tirx.call_intrin("uint16", ROUNDING, x(*index)), name="bf16_bits")


def layer_norm_and_bits(x, gamma, beta, axis, epsilon):
    """TE: LayerNorm of ``x`` (``topi.nn.layer_norm``, as Relax legalises ``nn.layer_norm``) and the
    same values rounded to bf16 bits (``rounded_bits``): one task, two outputs, where a projection
    reads the bits and a residual the fp32 values."""
    from tvm import topi

    normed = topi.nn.layer_norm(x, gamma, beta, axis=axis, epsilon=epsilon)
    return [normed, rounded_bits(normed)]


def register_rounding() -> None:
    """Register the TIR op ``ROUNDING`` with TVM, once per process: before a kernel using it is built or
    read back from JSON (``store.tvm_json``).

    It is pure and vectorizable; on LLVM targets each of its vectors lowers to ``vcvtneps2bf16`` per 16
    or 8 lanes (one instruction where the integer rounding takes six and a narrowing), any other width
    to that integer rounding (nearest even, as ``bf16_bits``). Only bf16 builds contain the op, and they
    require AVX512-BF16 (``frontend.precision``). The instruction reads denormal inputs as zero.
    """
    import tvm

    if ROUNDING in _REGISTERED:
        return
    tvm.ir.register_op_attr(ROUNDING, "TCallEffectKind", tvm.tirx.CallEffectKind.Pure.value)
    tvm.ir.register_op_attr(ROUNDING, "TVectorizable", True)
    tvm.ir.register_op_attr(ROUNDING, "TScriptPrinterName", ROUNDING)
    tvm.tirx.register_intrin_lowering(ROUNDING, "llvm", f=_lowered_rounding, level=99)
    _REGISTERED.add(ROUNDING)


_REGISTERED: set[str] = set()


def _lowered_rounding(call):
    """``ROUNDING`` on LLVM (``register_rounding``)."""
    return _rounded(call.args[0])


def _rounded(value):
    """fp32 ``value`` as bf16 bits: ``vcvtneps2bf16`` on each 16 (or 8) lanes, else integer rounding."""
    import tvm
    from tvm import tirx

    lanes = tvm.runtime.DataType(str(value.ty.dtype)).lanes
    if lanes % LANES == 0 and lanes > LANES:
        half = lanes // 2
        return tirx.vectorcombine(f"uint16x{lanes}", _rounded(tirx.vectorlow(f"float32x{half}", value)),
                                  _rounded(tirx.vectorhigh(f"float32x{half}", value)))
    if lanes in _CONVERSIONS:
        return tirx.call_llvm_pure_intrin(f"uint16x{lanes}", _CONVERSIONS[lanes], value)
    return _integer_rounding(value, lanes)


_CONVERSIONS = {LANES: "llvm.x86.avx512bf16.cvtneps2bf16.512", LANES // 2: "llvm.x86.avx512bf16.cvtneps2bf16.256"}


def _integer_rounding(value, lanes: int):
    """fp32 ``value`` (``lanes`` wide) as bf16 bits, nearest even, in integer arithmetic."""
    from tvm import tirx

    def typed(dtype: str) -> str:
        return dtype if lanes == 1 else f"{dtype}x{lanes}"

    def constant(number: int):
        scalar = tirx.const(number, "uint32")
        return scalar if lanes == 1 else tirx.Broadcast(scalar, lanes)

    bits = tirx.reinterpret(typed("uint32"), value)
    odd = tirx.bitwise_and(tirx.shift_right(bits, constant(16)), constant(1))
    return tirx.Cast(typed("uint16"), tirx.shift_right(bits + constant(0x7FFF) + odd, constant(16)))


# 2^f on [-1/2, 1/2] to 2.8e-6 relative, exact at 0 (a weighted least-squares fit on Chebyshev nodes),
# lowest degree first
EXP2_COEFFICIENTS = (1.0, 0.6931241933586842, 0.2402409861675589, 0.05590642492460194, 0.009582852865585323)


def exponential(x):
    """TE: ``exp(x)`` to 1e-5 relative (``x log2(e)`` rounds to fp32 first), for a softmax whose
    probabilities are then rounded to bf16 (half an ulp of bf16 is 2e-3 relative): ``2^n * p(f)`` with
    ``x log2(e) = n + f``, ``p`` of degree 4, ``2^n`` built in the exponent's bits; ``exp(0)`` is 1.
    About half the operations of ``topi.fast_exp`` (accurate to fp32), which the softmax of fp32 builds
    keeps. ``exp(-inf)`` is 0; NaN stays NaN (the clamps are selects that keep it, and a NaN polynomial
    makes the product NaN)."""
    from tvm import te, tirx

    def constant(value: float):
        return tirx.const(value, "float32")

    def exp(*index):
        scaled = x(*index) * constant(1.4426950408889634)
        scaled = tirx.Select(scaled < constant(-127.0), constant(-127.0), scaled)  # 2^-127 and below: 0
        scaled = tirx.Select(scaled > constant(128.0), constant(128.0), scaled)  # 2^128: inf
        whole = tirx.floor(scaled + constant(0.5))
        fraction = scaled - whole
        poly = constant(EXP2_COEFFICIENTS[-1])
        for coefficient in reversed(EXP2_COEFFICIENTS[:-1]):
            poly = poly * fraction + constant(coefficient)
        power = tirx.reinterpret("float32", tirx.shift_left(whole.astype("int32") + 127, 23))
        return poly * power

    return te.compute(x.shape, exp, name="T_fast_exp")


def matmul_compute(x_bits, weight):
    """TE: ``x_bits [..., K]`` (bf16 bits) times ``weight [N / P, K / 2, P, 2]`` (``packed_weight``), in
    fp32."""
    from tvm import te

    pair = te.reduce_axis((0, weight.shape[1]), name="pair")
    within = te.reduce_axis((0, PAIR), name="within")

    def dot(*index):
        *lead, column = index
        return te.sum(widened(x_bits[(*lead, pair * PAIR + within)])
                      * widened(panel_major_element(weight, pair, column, within)), axis=[pair, within])

    return te.compute((*x_bits.shape[:-1], panel_major_columns(weight)), dot, name=BLOCK)


def packed_pairs(y_bits):
    """TE: the right operand of a product of two activations, ``y_bits [..., K, N]`` (bf16 bits), as the
    instruction reads it: ``[..., K / 2, N, 2]``."""
    from tvm import te

    *lead, k, n = y_bits.shape
    return te.compute((*lead, k // PAIR, n, PAIR),
                      lambda *index: y_bits[(*index[:-3], index[-3] * PAIR + index[-1], index[-2])],
                      name="bf16_pairs")


def activations_compute(x_bits, y_packed):
    """TE: ``x_bits [..., M, K]`` times ``y_packed [..., K / 2, N, 2]`` (``packed_pairs``), the leading axes
    alike, in fp32: attention's two products."""
    from tvm import te

    *_, pairs, columns, _ = y_packed.shape
    pair = te.reduce_axis((0, pairs), name="pair")
    within = te.reduce_axis((0, PAIR), name="within")

    def dot(*index):
        *lead, row, column = index
        return te.sum(widened(x_bits[(*lead, row, pair * PAIR + within)])
                      * widened(y_packed[(*lead, pair, column, within)]), axis=[pair, within])

    return te.compute((*x_bits.shape[:-1], columns), dot, name=ACTIVATIONS_BLOCK)


def activations_packable(x_shape, y_shape) -> bool:
    """Whether a product of activations ``x [..., M, K]`` by ``y [..., K, N]`` (static shapes, the same
    leading axes) fits the kernel: whole pairs of K, whole vectors of N."""
    return len(x_shape) == len(y_shape) >= 3 and x_shape[:-2] == y_shape[:-2] \
        and x_shape[-1] == y_shape[-2] and packable(y_shape[-2], y_shape[-1])


def has_activations_block(mod) -> bool:
    """Whether a task computes a product of activations on the kernel (``activations_compute``)."""
    return has_block(mod, ACTIVATIONS_BLOCK)


def bf16_matmul(mod, target, parallel: bool):
    """The bf16 kernel's register-tile default schedule (``dot.tiled``), or None for other tasks."""
    return tiled(mod, target, parallel, DOT)


DOT = DotProduct(block=BLOCK, kernel=KERNEL, intrinsic=INTRINSIC, group=PAIR, feature=FEATURE,
                 operands=("uint16", "uint16"), accumulator="float32",
                 product=lambda a, b: widened(a) * widened(b), ir=DPBF16PS_IR, extern="autotune_dpbf16ps")
