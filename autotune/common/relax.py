"""Relax helpers shared by the graph passes and the build."""

from __future__ import annotations


def mutator_pass(mutator_class, name: str):
    """A module pass running a ``relax.PyExprMutator`` class over every Relax function."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=name)
    def transform(mod, _ctx):
        mutator = mutator_class(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gvar, mutator.visit_expr(func))
        return mutator.builder_.get()
    return transform


def entry_functions(mod) -> list:
    """``(global var, function)`` of every Relax function a caller can call (it has a
    ``global_symbol``): ``main``, or one function per shape bucket of a range artifact."""
    from tvm import relax

    return [(gvar, func) for gvar, func in mod.functions_items()
            if isinstance(func, relax.Function) and func.attrs is not None and "global_symbol" in func.attrs]


def op_name(expr) -> str | None:
    """The operator name of a call to a Relax operator (``relax.matmul``), else None."""
    import tvm
    from tvm import relax

    return expr.op.name if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) else None


def is_constant(expr) -> bool:
    """Whether a Relax expression is a constant tensor."""
    import tvm

    return isinstance(expr, tvm.ir.expr.GenericConst)
