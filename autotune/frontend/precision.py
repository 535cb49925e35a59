"""Reduced-precision modes: the graph pass that lowers the model's arithmetic."""

from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "bf16")


def precision_pass(precision: str):
    """The pass that lowers the model's arithmetic to ``precision``; inputs and outputs stay fp32.

    fp16: TVM's ``ToMixedPrecision`` (matmuls in fp16 accumulating in fp32, the ops it deems safe
    in fp16, the rest in fp32). bf16 (TVM has no pass for it): every fp32 matmul reads bf16
    operands and accumulates in fp32. Weights are constants, so the casts of weights fold away.
    """
    import tvm
    from tvm import relax

    from ..common.relax import mutator_pass

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16":
        return relax.transform.ToMixedPrecision(out_dtype="float32")
    if precision == "fp32":
        return tvm.transform.Sequential([], name="autotune.KeepFP32")
    matmul = tvm.ir.Op.get("relax.matmul")

    @relax.expr_functor.mutator
    class MatmulToBF16(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op.same_as(matmul) and all(str(getattr(a.ty, "dtype", "")) == "float32"
                                               for a in call.args):
                return relax.op.matmul(*(relax.op.astype(a, "bfloat16") for a in call.args),
                                       out_dtype="float32")
            return call

    return tvm.transform.Sequential([mutator_pass(MatmulToBF16, "autotune.MatmulToBF16"),
                                     relax.transform.FoldConstant()])
