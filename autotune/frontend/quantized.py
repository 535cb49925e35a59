"""Models quantized before they reach us: their integer matmuls kept integer, on the VNNI kernel.

ONNX Runtime's ``quantize_dynamic`` writes each projection as ``DynamicQuantizeLinear`` (the
activation to u8 with a scale and zero point) and ``MatMulInteger`` by an int8 weight; TVM's importer
turns the latter into ``matmul(astype(a, i32) - astype(a_zero, i32), astype(W, i32) - astype(W_zero,
i32), out_dtype="int32")``, which legalises into a plain int32 loop nest. Where the weight is a
constant int8 tensor with zero points of zero (symmetric, as ``QInt8`` weights are) and the
activation is u8, ``integer_matmuls_to_vnni`` computes it with ``schedules.int8``'s ``vpdpbusd``
kernel instead: the weight stays int8 (packed panel-major, ``[N/P, K/4, P, 4]``), the activation's
zero point is taken out through the weight's column sums, and the result is the same int32 exactly.

A QDQ export (``QuantizeLinear``/``DequantizeLinear`` pairs, as ONNX Runtime's ``quantize_static``
writes) reaches TVM as an fp32 ``matmul`` of two ``dequantize`` calls: a u8 activation with one scale
and zero point, and a constant int8 weight with zero points of zero and a scale per output column
(or one). It becomes the same kernel, its int32 result scaled by the two scales' product.
"""

from __future__ import annotations

from ..common.relax import is_constant, op_name

QUANTIZING_OPS = frozenset({"DynamicQuantizeLinear", "QuantizeLinear", "MatMulInteger", "ConvInteger",
                            "QLinearMatMul", "QLinearConv"})


def quantizes_in_graph(model) -> bool:
    """Whether an ONNX model rounds values to integer steps in its own graph (a quantized export)."""
    return any(node.op_type in QUANTIZING_OPS for node in model.graph.node)


def integer_matmuls_to_vnni(target):
    """A pass computing each imported integer matmul (``MatMulInteger``, or a QDQ pair's matmul of two
    dequantizes) of u8 activations by a constant symmetric int8 weight with the ``vpdpbusd`` kernel;
    a no-op on targets without AVX512-VNNI."""
    import tvm
    from tvm import relax
    from tvm.target.codegen import target_has_features

    from ..common.relax import mutator_pass
    from ..schedules import int8

    if not (target.kind.name == "llvm" and target_has_features(int8.FEATURE, target)):
        return tvm.transform.Sequential([], name="autotune.IntegerMatmulsAsTheyAre")
    int8.DOT.register()
    matmul = tvm.ir.Op.get("relax.matmul")
    dequantize = tvm.ir.Op.get("relax.dequantize")

    @relax.expr_functor.mutator
    class IntegerMatmuls(relax.PyExprMutator):
        def __init__(self, mod=None):
            super().__init__(mod)
            self.weights: dict = {}  # weight constant -> (packed, column sums)

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not call.op.same_as(matmul):
                return call
            if str(call.attrs.out_dtype) == "int32":  # MatMulInteger
                acc = self._integer(_integer_operand(self, call.args[0], "uint8"),
                                    _integer_operand(self, call.args[1], "int8"))
                return call if acc is None else acc
            operands = [_bound(self, a) for a in call.args]
            if not all(isinstance(o, relax.Call) and o.op.same_as(dequantize) for o in operands):
                return call
            (x, x_scale, x_zero), (w, w_scale, w_zero) = (o.args for o in operands)
            per_column = w_scale.ty.ndim == 0 or int(operands[1].attrs.axis) in (1, -1)
            if _dtype(x) != "uint8" or x_scale.ty.ndim or x_zero.ty.ndim or _dtype(w) != "int8" \
                    or not per_column:
                return call
            acc = self._integer((x, x_zero), (_bound(self, w), w_zero))
            if acc is None:
                return call
            return relax.op.multiply(relax.op.astype(self.builder_.emit(acc), "float32"),
                                     relax.op.multiply(x_scale, w_scale))

        def _integer(self, activation, weight):
            """The int32 products of u8 ``activation`` and int8 ``weight`` (each ``(values, zero
            point or None)``) on the kernel; None where they do not fit it."""
            if activation is None or weight is None or not _symmetric_constant(weight):
                return None
            values, zero_point = activation
            constant = weight[0]
            shape = [int(d) for d in constant.value.shape]
            if not (len(shape) == 2 and int8.packable(*shape)):
                return None
            if constant not in self.weights:
                held = constant.value.numpy()
                self.weights[constant] = (relax.const(int8.packed_values(held)), relax.const(int8.column_sums(held)))
            packed, column_sums = self.weights[constant]
            acc = self.builder_.emit(self.builder_.call_te(int8.matmul_compute, values, packed,
                                                           primfunc_name_hint=int8.KERNEL))
            if zero_point is None:
                return acc
            return self.builder_.call_te(int8.zero_point_taken_out, acc, zero_point, column_sums,
                                         primfunc_name_hint="int8_zero_point_taken_out")

    return tvm.transform.Sequential([mutator_pass(IntegerMatmuls, "autotune.IntegerMatmulsToVNNI"),
                                     relax.transform.DeadCodeElimination()], name="autotune.IntegerMatmuls")


def _integer_operand(mutator, expr, dtype: str):
    """``(values, zero point or None)`` where ``expr`` is ``astype(values, i32)`` or
    ``astype(values, i32) - astype(zero point, i32)`` with ``values`` of ``dtype`` (the zero point a
    scalar of it); None otherwise."""
    from tvm import relax

    value = _bound(mutator, expr)
    zero_point = None
    if op_name(value) == "relax.subtract":
        left, right = (_bound(mutator, a) for a in value.args)
        if not (op_name(right) == "relax.astype" and _dtype(right.args[0]) == dtype and right.args[0].ty.ndim == 0):
            return None
        zero_point, value = right.args[0], left
    if not (op_name(value) == "relax.astype" and _dtype(value.args[0]) == dtype):
        return None
    values = value.args[0]
    if isinstance(values, relax.Var):  # a bound constant (the weight) reads as the constant itself
        bound = _bound(mutator, values)
        values = bound if is_constant(bound) else values
    return values, zero_point


def _symmetric_constant(operand) -> bool:
    """Whether an integer operand is a constant whose zero point is absent or all zeros."""
    values, zero_point = operand
    if not is_constant(values):
        return False
    return zero_point is None or (is_constant(zero_point) and not zero_point.value.numpy().any())


def _bound(mutator, expr):
    """The value a variable of the current function is bound to (itself when unbound)."""
    from tvm import relax

    while isinstance(expr, relax.Var):
        bound = mutator.lookup_binding(expr)
        if bound is None:
            return expr
        expr = bound
    return expr


def _dtype(expr) -> str:
    return str(getattr(expr.ty, "dtype", ""))
