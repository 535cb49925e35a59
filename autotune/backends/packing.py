"""Relax passes of weight packing."""

from __future__ import annotations

from ..common.relax import mutator_pass


def tuple_items_forwarded():
    """A pass reading ``t[i]`` straight from the tuple ``t`` was built from, where it is in scope.

    Packing the weights (``SplitLayoutRewritePreproc`` + ``FoldConstant``) leaves a tuple of
    constants and an item read per packed weight before each kernel; the VM would build that tuple
    and read it back on every inference (4 builtin calls per kernel). Run ``DeadCodeElimination``
    after it to drop the tuples.
    """
    from tvm import relax

    @relax.expr_functor.mutator
    class Forwarder(relax.PyExprMutator):
        def visit_tuple_getitem_(self, op):
            op = super().visit_tuple_getitem_(op)
            source = op.tuple_value
            if isinstance(source, relax.Var):
                source = self.lookup_binding(source)
            return source.fields[op.index] if isinstance(source, relax.Tuple) else op

    return mutator_pass(Forwarder, "autotune.TupleItemsForwarded")
