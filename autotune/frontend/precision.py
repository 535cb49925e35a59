"""Reduced-precision modes: the graph pass that lowers the model's arithmetic."""

from __future__ import annotations

from ..common.relax import is_constant

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# The CPU feature each native precision needs: (LLVM's name, what the user reads).
NATIVE_FEATURES = {"bf16": ("avx512bf16", "AVX512-BF16 (vdpbf16ps)"),
                   "int8": ("avx512vnni", "AVX512-VNNI (vpdpbusd)")}


def precision_pass(precision: str, target):
    """The pass that lowers the model's arithmetic to ``precision``; inputs and outputs stay fp32.

    fp16: TVM's ``ToMixedPrecision`` (matmuls in fp16 accumulating in fp32, the ops it deems safe
    in fp16, the rest in fp32). bf16 and int8: every projection (a matmul by a constant weight)
    becomes the ``vdpbf16ps`` kernel of ``schedules.bf16`` or the ``vpdpbusd`` kernel of
    ``schedules.int8`` (``projections_to``), and with bf16 attention's products too; the rest stays
    fp32.
    """
    import tvm
    from tvm import relax

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16":
        return relax.transform.ToMixedPrecision(out_dtype="float32")
    if precision in NATIVE_FEATURES:
        return projections_to(precision, target)
    return tvm.transform.Sequential([], name="autotune.KeepFP32")


def check_precision_supported(precision: str, target) -> None:
    """Raise ``AutotuneError`` where ``target`` cannot compute ``precision`` natively (bf16 needs
    AVX512-BF16, int8 AVX512-VNNI), naming the precision and the target."""
    from tvm.target.codegen import target_has_features

    from ..errors import AutotuneError

    if precision not in NATIVE_FEATURES:
        return
    feature, instruction = NATIVE_FEATURES[precision]
    if not (target.kind.name == "llvm" and target_has_features(feature, target)):
        raise AutotuneError(f"--precision {precision} needs a CPU target with {instruction}; target "
                            f"{target.kind.name} mcpu={target.attrs.get('mcpu')} has none "
                            f"(use --target host on such a CPU, or --precision fp32)")


def projections_to(precision: str, target):
    """A pass computing each ``matmul(x, W)`` by a constant fp32 ``W [K, N]`` with ``precision``'s
    dot-product kernel, ``W`` converted and packed once per constant (shared by every shape bucket),
    ``x`` converted once per tensor:

    * bf16: ``x`` rounded to bf16 bits, ``W`` packed panel-major ``[N/P, K/2, P, 2]``, fp32
      accumulation (``schedules.bf16.matmul_compute``);
    * int8: ``x`` quantized per row to u8 at run time, ``W`` per column to s8 packed panel-major
      ``[N/P, K/4, P, 4]``, int32 accumulation, dequantized in the kernel's epilogue (``schedules.int8``).

    With bf16, a product of two activations (attention's scores and its product with V) of static
    shapes the kernel tiles is computed on it too: both operands rounded, the right one packed in
    pairs (``bf16.packed_pairs``). With int8 such products stay fp32, as do weights the kernel
    cannot tile. A LayerNorm whose output bf16 rounds computes the rounding in its own task
    (``bf16.layer_norm_and_bits``: the fp32 values for the residual, the bits for the projections).
    Constant tables read by ``take`` (embeddings) are stored in int8 with a scale per row (int8) or
    in bf16 (a few bit operations, no bf16 instruction) and widened after the read: the artifact
    keeps every weight in half the bytes (bf16) or a quarter (int8).
    """
    import tvm
    from tvm import relax

    from ..common.relax import mutator_pass
    from ..schedules import bf16, int8

    check_precision_supported(precision, target)
    kernel = bf16 if precision == "bf16" else int8
    kernel.DOT.register()  # records of these kernels replay tensorize with it (build, confirm)
    matmul, take = tvm.ir.Op.get("relax.matmul"), tvm.ir.Op.get("relax.take")

    @relax.expr_functor.mutator
    class Projections(relax.PyExprMutator):
        def __init__(self, mod=None):
            super().__init__(mod)
            self.weights: dict = {}  # weight constant -> its packed form (constants)
            self.tables: dict = {}  # table constant -> its stored form (a tied constant may be both)
            self.activations: dict = {}  # activation -> its converted form (bound variables)
            # LayerNorms whose output bf16 rounds: computed with the rounding, one task for both
            self.normed_and_rounded = _rounded_layer_norms(mod, kernel.packable) if precision == "bf16" else set()

        def visit_var_binding_(self, binding):
            if binding.var not in self.normed_and_rounded:
                super().visit_var_binding_(binding)
                return
            call = self.visit_expr(binding.value)
            both = self.builder_.emit(self.builder_.call_te(
                bf16.layer_norm_and_bits, *call.args, axis=call.attrs.axes, epsilon=call.attrs.epsilon,
                primfunc_name_hint=bf16.NORM_AND_BITS))
            normed = self.builder_.emit(relax.TupleGetItem(both, 0), binding.var.name)
            self.set_var_remap(binding.var, normed)
            self.activations[normed] = self.builder_.emit(relax.TupleGetItem(both, 1))

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op.same_as(take) and _fp32_constant(call.args[0]):
                return self._widened_rows(call)
            if precision == "bf16" and call.op.same_as(matmul) and _activations_product(call):
                return self._bf16_activations(*call.args)
            if not (call.op.same_as(matmul) and _projection(call, kernel.packable)):
                return call
            x, weight = call.args
            if precision == "bf16":
                return self._bf16(x, weight)
            return self._int8(x, weight)

        def _bf16_bits(self, x):
            if x not in self.activations:
                self.activations[x] = self.builder_.emit(
                    self.builder_.call_te(bf16.rounded_bits, x, primfunc_name_hint=bf16.BITS))
            return self.activations[x]

        def _bf16_activations(self, x, y):
            packed = self.builder_.emit(self.builder_.call_te(
                lambda y: bf16.packed_pairs(bf16.rounded_bits(y)), y, primfunc_name_hint=bf16.PACKED_PAIRS))
            return self.builder_.call_te(bf16.activations_compute, self._bf16_bits(x), packed,
                                         primfunc_name_hint=bf16.ACTIVATIONS_KERNEL)

        def _bf16(self, x, weight):
            if weight not in self.weights:
                self.weights[weight] = relax.const(bf16.packed_weight(weight.value.numpy()))
            return self.builder_.call_te(bf16.matmul_compute, self._bf16_bits(x), self.weights[weight],
                                         primfunc_name_hint=bf16.KERNEL)

        def _int8(self, x, weight):
            if x not in self.activations:
                rows = self.builder_.emit(
                    self.builder_.call_te(int8.quantized_rows, x, primfunc_name_hint="int8_quantized"))
                self.activations[x] = tuple(self.builder_.emit(relax.TupleGetItem(rows, i)) for i in range(3))
            if weight not in self.weights:
                self.weights[weight] = tuple(map(relax.const, int8.quantized_weight(weight.value.numpy())))
            quantized, scale, zero_point = self.activations[x]
            packed, weight_scale, column_sums = self.weights[weight]
            acc = self.builder_.emit(self.builder_.call_te(int8.matmul_compute, quantized, packed,
                                                           primfunc_name_hint=int8.KERNEL))
            return self.builder_.call_te(int8.dequantized, acc, scale, zero_point, weight_scale, column_sums,
                                         primfunc_name_hint=int8.DEQUANTIZED)

        def _widened_rows(self, call):
            """A table read (embeddings) from the table in fewer bytes, widened to fp32 after the read:
            int8 with a scale per row (int8, rows read whole: ``axis`` 0), else bf16."""
            table, indices = call.args
            axis, mode = call.attrs.axis, call.attrs.mode
            if precision == "int8" and int(axis) == 0:
                if table not in self.tables:
                    self.tables[table] = tuple(map(relax.const, int8.quantized_table(table.value.numpy())))
                values, scales = self.tables[table]
                rows = self.builder_.emit(relax.op.take(values, indices, axis=axis, mode=mode))
                row_scales = self.builder_.emit(relax.op.take(scales, indices, axis=0, mode=mode))
                return self.builder_.call_te(int8.dequantized_rows, rows, row_scales, primfunc_name_hint="int8_rows")
            if table not in self.tables:
                self.tables[table] = relax.const(bf16.bf16_bits(table.value.numpy()))
            rows = self.builder_.emit(relax.op.take(self.tables[table], indices, axis=axis, mode=mode))
            return self.builder_.call_te(bf16.widened_tensor, rows, primfunc_name_hint="bf16_widened")

    return mutator_pass(Projections, f"autotune.ProjectionsTo{precision.upper()}")


def _rounded_layer_norms(mod, packable) -> set:
    """The variables of ``mod``'s dataflow blocks bound to a LayerNorm whose output a bf16 projection
    reads (and so rounds to bf16)."""
    from tvm import relax

    from ..common.relax import op_name

    norms, rounded = set(), set()
    for func in mod.functions.values():
        if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
            continue
        for block in func.body.blocks:
            for binding in block.bindings:
                value = binding.value
                if op_name(value) == "relax.nn.layer_norm" and isinstance(binding.var, relax.DataflowVar):
                    norms.add(binding.var)
                elif op_name(value) == "relax.matmul" and (_projection(value, packable) or _activations_product(value)):
                    rounded.add(value.args[0])
    return norms & rounded


def _fp32_constant(expr) -> bool:
    return is_constant(expr) and str(expr.ty.dtype) == "float32"


def _static_shape(expr) -> tuple[int, ...] | None:
    from tvm import tirx

    shape = getattr(expr.ty, "shape", None)
    if shape is None or not all(isinstance(d, tirx.IntImm) for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _activations_product(call) -> bool:
    """Whether ``call`` multiplies two fp32 activations of static shapes that bf16's kernel tiles
    (attention's scores and its product with V)."""
    from ..schedules import bf16

    x, y = call.args
    if is_constant(x) or is_constant(y) or any(str(getattr(a.ty, "dtype", "")) != "float32" for a in (x, y)):
        return False
    x_shape, y_shape = _static_shape(x), _static_shape(y)
    return x_shape is not None and y_shape is not None and bf16.activations_packable(x_shape, y_shape)


def _projection(call, packable) -> bool:
    """Whether ``call`` multiplies an fp32 activation by a constant fp32 2-D weight ``packable`` takes."""
    x, weight = call.args
    if not _fp32_constant(weight) or str(getattr(x.ty, "dtype", "")) != "float32":
        return False
    shape = [int(d) for d in weight.value.shape]
    return len(shape) == 2 and packable(*shape)
