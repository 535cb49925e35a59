"""Reduced-precision modes: the graph pass that lowers the model's arithmetic."""

from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "bf16")


def precision_pass(precision: str, target):
    """The pass that lowers the model's arithmetic to ``precision``; inputs and outputs stay fp32.

    fp16: TVM's ``ToMixedPrecision`` (matmuls in fp16 accumulating in fp32, the ops it deems safe
    in fp16, the rest in fp32). bf16: every projection (a matmul by a constant weight) becomes the
    ``vdpbf16ps`` kernel of ``schedules.bf16`` (``projections_to_bf16``); the rest stays fp32.
    """
    import tvm
    from tvm import relax

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16":
        return relax.transform.ToMixedPrecision(out_dtype="float32")
    if precision == "bf16":
        return projections_to_bf16(target)
    return tvm.transform.Sequential([], name="autotune.KeepFP32")


def check_precision_supported(precision: str, target) -> None:
    """Raise ``AutotuneError`` where ``target`` cannot compute ``precision`` natively (bf16 needs
    AVX512-BF16), naming the precision and the target."""
    from tvm.target.codegen import target_has_features

    from ..errors import AutotuneError
    from ..schedules import bf16

    if precision == "bf16" and not (target.kind.name == "llvm" and target_has_features(bf16.FEATURE, target)):
        raise AutotuneError(f"--precision bf16 needs a CPU target with AVX512-BF16 (vdpbf16ps); target "
                            f"{target.kind.name} mcpu={target.attrs.get('mcpu')} has none "
                            f"(use --target host on such a CPU, or --precision fp32)")


def projections_to_bf16(target):
    """A pass computing each ``matmul(x, W)`` by a constant fp32 ``W [K, N]`` in bf16: ``x`` rounded
    to bf16 bits once per tensor, ``W`` packed once per constant (shared by every shape bucket),
    fp32 accumulation (``schedules.bf16.matmul_compute``). Matmuls of two activations (attention's)
    and weights the kernel cannot tile stay fp32. Constant tables read by ``take`` (embeddings) are
    stored in bf16 and widened after the read: the artifact keeps every weight in half the bytes."""
    import tvm
    from tvm import relax

    from ..common.relax import mutator_pass
    from ..schedules import bf16

    check_precision_supported("bf16", target)
    bf16.register_intrinsic()  # records of these kernels replay tensorize with it (build, confirm)
    matmul, take = tvm.ir.Op.get("relax.matmul"), tvm.ir.Op.get("relax.take")

    @relax.expr_functor.mutator
    class ProjectionsToBF16(relax.PyExprMutator):
        def __init__(self, mod=None):
            super().__init__(mod)
            self.packed: dict = {}  # weight constant -> its packed [K/2, N, 2] bits
            self.tables: dict = {}  # table constant -> its bits (a tied constant may be both)
            self.bits: dict = {}

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op.same_as(take) and _fp32_constant(call.args[0]):
                return self._widened_rows(call)
            if not (call.op.same_as(matmul) and _projection(call, bf16.packable)):
                return call
            x, weight = call.args
            if x not in self.bits:
                self.bits[x] = self.builder_.emit(
                    self.builder_.call_te(bf16.rounded_bits, x, primfunc_name_hint="bf16_bits"))
            if weight not in self.packed:
                self.packed[weight] = relax.const(bf16.packed_weight(weight.value.numpy()))
            return self.builder_.call_te(bf16.matmul_compute, self.bits[x], self.packed[weight],
                                         primfunc_name_hint=bf16.KERNEL)

        def _widened_rows(self, call):
            """A table read (embeddings) from the table in bf16, widened to fp32 after the read."""
            table, indices = call.args
            if table not in self.tables:
                self.tables[table] = relax.const(bf16.bf16_bits(table.value.numpy()))
            rows = self.builder_.emit(relax.op.take(self.tables[table], indices, axis=call.attrs.axis,
                                                    mode=call.attrs.mode))
            return self.builder_.call_te(bf16.widened_tensor, rows, primfunc_name_hint="bf16_widened")

    return mutator_pass(ProjectionsToBF16, "autotune.ProjectionsToBF16")


def _fp32_constant(expr) -> bool:
    import tvm

    return isinstance(expr, tvm.ir.expr.GenericConst) and str(expr.ty.dtype) == "float32"


def _projection(call, packable) -> bool:
    """Whether ``call`` multiplies an fp32 activation by a constant fp32 2-D weight ``packable`` takes."""
    x, weight = call.args
    if not _fp32_constant(weight) or str(getattr(x.ty, "dtype", "")) != "float32":
        return False
    shape = [int(d) for d in weight.value.shape]
    return len(shape) == 2 and packable(*shape)
