"""Index guards: no caller-supplied index reaches a table read before it is checked.

TVM lowers ONNX ``Gather`` to ``take`` in fast mode, which reads ``table[index]`` unchecked: a token
id past the vocabulary reads other memory, a huge one kills the process. ``guard_indices`` inserts,
before any kernel that reads a table, a small serial kernel per indexing input (token, position,
token-type ids) that checks every value against the rows of the tables it indexes and stops the
call with ``input 'NAME' holds an index outside [-n, n-1] ...`` (ONNX's valid range: negative
indices count from the end). The check lives in the artifact, so every caller of the ``.so`` is
protected; ``autotune.load`` then names the offending value and where it is.

An index reaches a take through the importer's negative-index normalisation and value-preserving
ops (casts that widen, reshapes, transposes); an index computed from inputs in any other way is
checked at the take itself, against ``[0, n-1]``. Every such take also clips its indices, so no
read leaves its table even where a check could not stop the call (on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common.relax import is_constant
from ..common.relax import op_name as _op

GUARD_PREFIX = "autotune_index_guard"
KIND_OPAQUE = 8  # TVM's OpPatternKind.kOpaque: the guard is never fused into a kernel
# Ops whose output values are a subset of their input's (the first argument).
_VALUE_PRESERVING = frozenset({"relax.reshape", "relax.permute_dims", "relax.expand_dims",
                               "relax.squeeze", "relax.flatten", "relax.broadcast_to"})


@dataclass(frozen=True)
class IndexUse:
    """A take reading ``rows`` rows of a table with indices that come from ``source``.

    ``source`` is the function parameter the indices trace back to (values in ``[-rows, rows)``
    valid, as ONNX defines), or None when the model computes them (then ``[0, rows)``, after the
    importer's normalisation).
    """

    take: object
    source: object | None
    rows: int


def _is_int(expr) -> bool:
    dtype = str(getattr(expr.ty, "dtype", ""))
    return dtype.startswith("int") or dtype.startswith("uint")


def _widening_cast(call) -> bool:
    """An integer-to-integer cast that keeps every value."""
    import tvm

    source, target = call.args[0].ty.dtype, call.attrs.dtype
    return _is_int(call.args[0]) and str(target).startswith("int") \
        and tvm.DataType(str(target)).bits >= tvm.DataType(str(source)).bits


def _normalised(call, bindings: dict):
    """``x`` where ``call`` is the importer's ``where(x < 0, x + n, x)``, else None."""
    if _op(call) != "relax.where" or len(call.args) != 3:
        return None
    cond, shifted, value = (bindings.get(a, a) for a in call.args)
    if _op(cond) != "relax.less" or not cond.args[0].same_as(call.args[2]):
        return None
    if _op(shifted) != "relax.add" or not shifted.args[0].same_as(call.args[2]):
        return None
    return call.args[2]


def trace_source(indices, bindings: dict, params: set):
    """The parameter ``indices`` carries unchanged values of (through value-preserving ops), or None."""
    from tvm import relax

    expr = indices
    for _ in range(64):  # a chain longer than this is not an exporter's index plumbing
        if isinstance(expr, relax.Var) and expr in params:
            return expr
        value = bindings.get(expr) if isinstance(expr, relax.Var) else expr
        if value is None:
            return None
        op = _op(value)
        if op in _VALUE_PRESERVING or (op == "relax.astype" and _widening_cast(value)):
            expr = value.args[0]
        elif (root := _normalised(value, bindings)) is not None:
            expr = root
        else:
            return None
    return None


def index_uses(func) -> list[IndexUse]:
    """Every ``take`` of ``func`` whose indices are not constants, with where they come from."""
    import tvm

    bindings = {b.var: b.value for blk in func.body.blocks for b in blk.bindings}
    params = set(func.params)
    uses = []
    for value in bindings.values():
        if _op(value) != "relax.take" or is_constant(value.args[1]):
            continue
        shape = getattr(value.args[0].ty, "shape", None)
        axis = int(value.attrs.axis) if value.attrs.axis is not None else 0
        if shape is None or not _is_int(value.args[1]):
            continue
        rows = shape[axis]
        if not isinstance(rows, tvm.tirx.IntImm):
            continue
        uses.append(IndexUse(value, trace_source(value.args[1], bindings, params), int(rows)))
    return uses


def index_bounds(func) -> dict[str, int]:
    """Per parameter of ``func`` that indexes a table: the fewest rows among the tables it indexes."""
    bounds: dict[str, int] = {}
    for use in index_uses(func):
        if use.source is not None:
            name = use.source.name
            bounds[name] = min(bounds.get(name, use.rows), use.rows)
    return bounds


def guard_kernel(dtype: str, shape: tuple[int, ...], low: int, high: int, message: str):
    """A serial PrimFunc copying an index tensor after checking that every value lies in
    ``[low, high)``; a value outside stops the call with ``message`` (a ``RuntimeError``)."""
    import tvm

    rank = len(shape)
    extents = ", ".join(str(int(d)) for d in shape)
    loops = ", ".join(f"i{axis}" for axis in range(rank))
    axes = ", ".join(f"v{axis}" for axis in range(rank))
    source = "\n".join([
        "@T.prim_func(private=True)",
        f"def guard(src: T.Buffer(({extents},), {dtype!r}), dst: T.Buffer(({extents},), {dtype!r})):",
        f"    T.func_attr({{'tirx.noalias': True, 'op_pattern': {KIND_OPAQUE}, 'tirx.is_scheduled': True}})",
        "    with T.sblock('root'):",
        f"        for {loops} in T.grid({extents}):",
        "            with T.sblock('guard'):",
        f"                {axes} = T.axis.remap({'S' * rank!r}, [{loops}])",
        f"                T.reads(src[{axes}])",
        f"                T.writes(dst[{axes}])",
        f"                assert src[{axes}] >= T.{dtype}({low}) and src[{axes}] < T.{dtype}({high}), {message!r}",
        f"                dst[{axes}] = src[{axes}]", ""])
    return tvm.script.from_source(source, check_well_formed=False)


def _message(use: IndexUse, rows: int) -> str:
    if use.source is not None:
        return (f"input '{use.source.name}' holds an index outside [{-rows}, {rows - 1}], the "
                f"rows of the table it indexes")
    return f"an index the model computes from its inputs is outside [0, {rows - 1}], the rows of its table"


def _guarded_call(builder, expr, low: int, high: int, message: str, name: str):
    from tvm import relax

    kernel = guard_kernel(str(expr.ty.dtype), tuple(expr.ty.shape), low, high, message)
    gvar = builder.add_func(kernel, name)
    return relax.call_tir(gvar, [expr], expr.ty)


def guard_indices(target):
    """A pass that checks, in ``main``, every non-constant index before any table read, and makes
    every such take clip its indices as well (a second line of defence, at the cost of a clamp per
    index). On a GPU an assertion cannot stop a kernel: there the takes only clip (an out-of-range
    index reads a valid row), and ``autotune.load`` refuses such input before the call.
    """
    import tvm

    from ..backends import backend_for

    if not backend_for(target).asserts_in_kernels:
        return _takes_clipped()
    return tvm.transform.Sequential([_guard_kernels(), _takes_clipped()], name="autotune.GuardIndices")


def _guard_kernels():
    """A module pass inserting, in every entry function, the guard kernels of its indexing inputs
    and computed indices."""
    import tvm
    from tvm import relax

    from ..common.relax import entry_functions

    @tvm.transform.module_pass(opt_level=0, name="autotune.GuardKernels")
    def transform(mod, _ctx):
        builder = relax.BlockBuilder(mod)
        changed = False
        for gvar, main in entry_functions(mod):
            uses = index_uses(main)
            if not uses:
                continue
            entry = _input_guards(builder, main, uses)
            at_take = {use.take: _guarded_call(builder, use.take.args[1], 0, use.rows, _message(use, use.rows),
                                               f"{GUARD_PREFIX}_computed")
                       for use in uses if use.source is None}
            builder.update_func(gvar, _rewritten(main, entry, at_take))
            changed = True
        return relax.transform.Normalize()(builder.get()) if changed else mod

    return transform


def _input_guards(builder, main, uses: list[IndexUse]) -> list[tuple]:
    """``(parameter, guard call)`` per input of ``main`` that indexes a table, checked against the
    fewest rows among the tables it indexes."""
    by_name = {use.source.name: use for use in uses if use.source is not None}
    params = {p.name: p for p in main.params}
    return [(params[name], _guarded_call(builder, params[name], -rows, rows, _message(by_name[name], rows),
                                         f"{GUARD_PREFIX}_{name}"))
            for name, rows in sorted(index_bounds(main).items())]


def _rewritten(main, entry: list, at_take: dict):
    """``main`` with each guarded parameter replaced by its guard's output, computed first, and each
    computed index guarded just before its take."""
    from tvm import relax

    remap: dict = {}

    @relax.expr_functor.mutator
    class Substitute(relax.PyExprMutator):
        def visit_var_(self, var):
            return remap.get(var, var)

    mutator = Substitute()
    blocks = []
    for position, blk in enumerate(main.body.blocks):
        dataflow = isinstance(blk, relax.DataflowBlock)
        bindings = []
        if position == 0:
            for param, call in entry:
                var = (relax.DataflowVar if dataflow else relax.Var)(f"{param.name}_checked", param.ty)
                bindings.append(relax.VarBinding(var, call))
                remap[param] = var
        for binding in blk.bindings:
            value = binding.value
            if value in at_take:
                checked = (relax.DataflowVar if dataflow else relax.Var)("index_checked",
                                                                         value.args[1].ty)
                bindings.append(relax.VarBinding(checked, mutator.visit_expr(at_take[value])))
                value = relax.Call(value.op, [value.args[0], checked], value.attrs, value.ty_args)
            bindings.append(relax.VarBinding(binding.var, mutator.visit_expr(value)))
        blocks.append(relax.DataflowBlock(bindings) if dataflow else relax.BindingBlock(bindings))
    body = relax.SeqExpr(blocks, mutator.visit_expr(main.body.body))
    return relax.Function(main.params, body, main.ret_ty, main.is_pure, main.attrs)


def _takes_clipped():
    """A pass setting every non-constant ``take`` of every Relax function to clip its indices."""
    from tvm import relax

    from ..common.relax import mutator_pass

    @relax.expr_functor.mutator
    class Clip(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if _op(call) == "relax.take" and not is_constant(call.args[1]):
                return relax.op.take(call.args[0], call.args[1], call.attrs.axis, mode="clip")
            return call

    return mutator_pass(Clip, "autotune.TakesClipped")
