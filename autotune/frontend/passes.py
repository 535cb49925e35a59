"""Graph-level passes: the imported Relax module made into the fused module tasks come from."""

from __future__ import annotations

from ..common.relax import is_constant, mutator_pass
from ..common.relax import op_name as _op

FUSION_PASSES = ("FuseOps", "FuseTIR")
BROADCASTING = frozenset({"relax.add", "relax.subtract", "relax.multiply", "relax.divide"})
MIN_SHRUNK_ELEMENTS = 1024  # smaller constants stay as they are: nothing to gain


def repeated_slice(array):
    """``array`` with every axis along which it repeats one slice cut to that slice (size 1), or
    None where no axis of it repeats."""
    import numpy as np

    shrunk = array
    for axis in range(array.ndim):
        first = shrunk.take([0], axis=axis)
        if shrunk.shape[axis] > 1 and np.array_equal(shrunk, np.broadcast_to(first, shrunk.shape), equal_nan=True):
            shrunk = first
    return None if shrunk is array else np.ascontiguousarray(shrunk)


def unbroadcast_constants():
    """A pass giving an elementwise add, subtract, multiply or divide the one slice a constant
    operand repeats, where broadcasting it against the other operand gives the same result.

    Exporters and ONNX simplifiers fold broadcasts into constants: e.g. the token-type embeddings
    of an encoder exported without a ``token_type_ids`` input become one ``[batch, seq, hidden]``
    constant per shape, all rows alike. The artifact then stores, and every call reads, a copy per
    row; a range artifact one per bucket. Invariant: the call's output shape is the other
    operand's, so only the constant's repeats go.
    """
    import numpy as np
    from tvm import relax

    @relax.expr_functor.mutator
    class Unbroadcast(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if _op(call) not in BROADCASTING or len(call.args) != 2:
                return call
            args, changed = list(call.args), False
            for position, (constant, other) in enumerate((args, args[::-1])):
                shrunk = _unbroadcast(constant, other)
                if shrunk is not None:
                    args[position], changed = relax.const(shrunk), True
            return relax.Call(call.op, args, call.attrs, call.ty_args) if changed else call

    def _unbroadcast(constant, other):
        """The slice ``constant`` repeats, where it broadcasts to ``other``'s shape; else None."""
        if not is_constant(constant):
            return None
        array = constant.value.numpy()
        if array.size < MIN_SHRUNK_ELEMENTS:
            return None
        shape = getattr(other.ty, "shape", None)
        try:
            other_shape = tuple(int(d) for d in shape)
            if np.broadcast_shapes(other_shape, array.shape) != other_shape:
                return None
        except (TypeError, ValueError):  # an unknown or symbolic shape, or shapes that do not broadcast
            return None
        return repeated_slice(array)

    return mutator_pass(Unbroadcast, "autotune.UnbroadcastConstants")


def _rewriting_pass(pattern, rewrite, name: str):
    """A function pass replacing every call that matches ``pattern`` by ``rewrite(call, matches)``."""
    from tvm import relax
    from tvm.relax.dpl import rewrite_call

    @relax.transform.function_pass(opt_level=0, name=name)
    def transform(func, _mod, _ctx):
        return rewrite_call(pattern, rewrite, func)
    return transform


def small_powers_as_products():
    """A pass writing ``x ** 2`` and ``x ** 3`` (in the tanh form of GELU) as products.

    TVM lowers ``power`` to a scalar ``powf`` call per element, which can make an FFN's GELU
    epilogue cost more than the matmul it follows.
    """
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    base, exponent = wildcard(), is_const()
    pattern = is_op("relax.power")(base, exponent)

    def rewrite(expr, matches):
        value = matches[exponent].value.numpy()
        if value.size != 1 or float(value) not in (2.0, 3.0):
            return expr
        x = matches[base]
        square = relax.op.multiply(x, x)
        return square if float(value) == 2.0 else relax.op.multiply(square, x)

    return _rewriting_pass(pattern, rewrite, "SmallPowersAsProducts")


def division_by_constants_as_products():
    """A pass writing ``x / c``, ``c`` a float32 constant, as ``x * (1 / c)`` (within an ulp).

    LLVM keeps a division by a constant whose reciprocal is inexact (GELU's ``x / sqrt(2)``), and a
    vector division costs several multiplications' time: in an FFN's GELU epilogue, one per element.
    """
    import numpy as np
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard

    numerator, divisor = wildcard(), is_const()
    pattern = is_op("relax.divide")(numerator, divisor)

    def rewrite(expr, matches):
        value = matches[divisor].value.numpy()
        if value.dtype != np.float32 or not np.all(np.isfinite(value) & (value != 0)):
            return expr
        reciprocal = (1.0 / value.astype(np.float64)).astype(np.float32)
        if not np.all(np.isfinite(reciprocal)):  # a subnormal divisor
            return expr
        return relax.op.multiply(matches[numerator], relax.const(reciprocal))

    return _rewriting_pass(pattern, rewrite, "DivisionByConstantsAsProducts")


def isnan_as_bit_test():
    """A pass computing float32 ``isnan`` as a bit test: exponent all ones, mantissa not zero.

    TVM's vectorizer leaves ``isnan`` scalar, and with it the exporters' softmax guard
    ``where(isnan(p), 0, p)`` over every attention score. Comparisons cannot stand in: TVM's
    simplifier folds ``x != x`` to false and ``not x <= inf`` to ``x > inf``.
    """
    import tvm
    from tvm import relax, te, tirx

    def bit_test(x):
        return te.compute(x.shape, lambda *i: tirx.reinterpret("int32", x(*i)) & 0x7FFFFFFF > 0x7F800000,
                          name="isnan")

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call):
            if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.isnan" \
                    and call.args[0].ty.dtype == "float32":
                return self.builder_.call_te(bit_test, call.args[0], primfunc_name_hint="isnan")
            return super().visit_call_(call)

    return mutator_pass(Rewriter, "autotune.IsnanAsBitTest")


def softmax_by_reciprocal(precision: str = "fp32"):
    """A pass computing a float32 softmax over the last axis as ``exp(x - max) * (1 / sum)``: one
    division per row instead of one per element (a vector division costs several multiplications'
    time, and attention divides every score). The exponential is in its fast form (``topi.fast_exp``,
    as ``FastMathTransform`` would), or with bf16 ``precision``, where the probabilities are rounded
    to bf16, ``bf16.exponential`` (1e-5 relative, half the operations). The result is a
    ``fast_softmax`` PrimFunc, the name ``FastMathTransform`` gives the softmax it rewrites, which
    ``attention`` matches."""
    import tvm
    from tvm import relax, te, topi

    from ..schedules import bf16

    exponential = bf16.exponential if precision == "bf16" else topi.fast_exp

    def softmax(x):
        *rows, length = x.shape
        key = te.reduce_axis((0, length), name="k")
        largest = te.compute(rows, lambda *r: te.max(x[(*r, key)], axis=key), name="T_softmax_maxelem")
        exp = exponential(te.compute(x.shape, lambda *i: x(*i) - largest(*i[:-1]), name="T_softmax_delta"))
        key = te.reduce_axis((0, length), name="k")
        total = te.compute(rows, lambda *r: te.sum(exp[(*r, key)], axis=key), name="T_softmax_expsum")
        return te.compute(x.shape, lambda *i: exp(*i) * (tvm.tirx.const(1.0, "float32") / total(*i[:-1])),
                          name="T_softmax_norm")

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if _op(call) == "relax.nn.softmax" and call.args[0].ty.dtype == "float32" \
                    and int(call.attrs.axis) in (-1, len(call.args[0].ty.shape) - 1):
                return self.builder_.call_te(softmax, call.args[0], primfunc_name_hint="fast_softmax")
            return call

    return mutator_pass(Rewriter, "autotune.SoftmaxByReciprocal")


def fuse(relax_mod, target, fusion: str = "full", precision: str = "fp32"):
    """Decompose for inference, legalize, fold constants and (``fusion="full"``) fuse operators.

    This is the module tasks come from; compile applies tuned schedules to this same module, so
    workload keys match by construction. ``fusion="none"`` keeps one task per operator; ``"full"``
    on CPU also makes each attention block one task (``attention.fuse_attention``).
    A constant operand that repeats one slice (a folded broadcast) is cut to that slice first
    (``unbroadcast_constants``). Every index a caller sends is checked before a table is read with
    it (``guards``). Integer matmuls of a model quantized before import run on the VNNI kernel where
    the target has it (``quantized``); ``precision`` (fp32, fp16, bf16, int8) is applied next
    (``precision``). Common
    subexpressions are computed once (exporters repeat the attention mask in every layer).
    Small integer powers become products (``small_powers_as_products``), divisions by constants
    multiplications (``division_by_constants_as_products``); softmax multiplies by one reciprocal per
    row (``softmax_by_reciprocal``). Erf, exp, tanh and
    softmax become their fast polynomial forms (TVM's ``FastMathTransform``,
    within 1e-6 of the exact ones), which vectorise: the exact ``erf`` is a scalar libm call per
    element and made GELU cost as much as its matmul. On CPU, tasks mark their constant arguments
    (weights) layout-free, so a schedule may choose the weights' layout (``artifact.build_tuned``
    packs them at compile time).
    """
    import tvm
    from tvm import relax

    from ..backends import backend_for
    from .attention import fuse_attention
    from .guards import guard_indices
    from .precision import precision_pass
    from .quantized import integer_matmuls_to_vnni

    backend = backend_for(target)
    pipeline = backend.pipeline()
    legalize = [p for p in pipeline.legalize_passes(target)  # CUDA's ends with dlight: tasks must
                if (fusion == "full" or p.info.name not in FUSION_PASSES)  # reach the search unscheduled
                and p.info.name != "ApplyDefaultSchedule"]
    passes = [unbroadcast_constants(), guard_indices(target), integer_matmuls_to_vnni(target),
              precision_pass(precision, target),
              relax.transform.DecomposeOpsForInference(),
              relax.transform.EliminateCommonSubexpr(),  # e.g. the attention mask, once, not per layer
              small_powers_as_products(), division_by_constants_as_products(), softmax_by_reciprocal(precision),
              relax.transform.FastMathTransform(), isnan_as_bit_test()]
    if fusion == "full" and backend.fuses_attention:
        passes.append(fuse_attention())
    passes += [*pipeline.library_dispatch_passes(target), *legalize]
    if backend.layout_free_weights:  # a schedule may choose the weights' layout, compile packs them
        passes.append(relax.transform.AttachAttrLayoutFreeBuffers())
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(passes)(relax_mod)
