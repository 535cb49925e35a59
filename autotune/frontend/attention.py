"""Graph pass: each attention block of a Transformer becomes one task.

An exported attention block is a dozen Relax operators: the per-head reshapes and transposes of
Q, K and V, the scores matmul, its scale and mask, softmax (with the exporter's NaN guard), the
probabilities × V matmul and the transposes back. TVM's operator fusion leaves five to seven kernels
of them, and the transposes copy every activation. ``fuse_attention`` groups the block into one
primitive function, which ``FuseTIR`` turns into one PrimFunc: the scores of a few query rows then
stay in L1 from the matmul through softmax to the product with V, and Q, V and the output are read
and written in the model's own layout (``heuristics._attention`` schedules it).

The block is matched by the shape of its data flow, not by one exporter's operator names: a
``softmax`` whose input comes from a ``matmul`` through single-use elementwise
ops (scale, mask), and whose output (through an optional ``where(isnan(p), c, p)`` guard) is the
left operand of a second ``matmul``. The reshapes, transposes and scalar scales of Q and V, and the
transposes of the output, are pulled in. K's stay outside, so K is transposed once per block rather
than once per query row: they join the projection that computes K instead (its matmul and bias
add), so the projection writes K already transposed per head and no transpose task is left.

With ``--precision bf16`` both products are ``vdpbf16ps`` kernels (``frontend.precision``): Q and the
probabilities are rounded to bf16 within the block (a rounding is followed like a layout op), as is
the output for the projection after it; K and V are rounded and packed in pairs
(``bf16.packed_pairs``) by the projections computing them, so V's projection joins its layout chain
as K's does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..common.relax import is_constant
from ..common.relax import op_name as _op
from ..schedules import bf16, int8

ELEMENTWISE = frozenset({"relax.add", "relax.subtract", "relax.multiply", "relax.divide"})
LAYOUT = frozenset({"relax.reshape", "relax.permute_dims"})
FUNCTION_NAME = "fused_attention"
KEY_FUNCTION_NAME = "fused_key_projection"
VALUE_FUNCTION_NAME = "fused_value_projection"


def _computes(value, op_name: str, kernel: str) -> bool:
    """Whether ``value`` calls the Relax operator ``op_name`` or the PrimFunc an earlier pass made of
    it (``FastMathTransform``'s ``fast_softmax``, ``tasks.isnan_as_bit_test``'s ``isnan``)."""
    return _op(value) == op_name or _calls(value, kernel)


def _calls(value, kernel: str) -> bool:
    """Whether ``value`` is a ``call_tir`` of a PrimFunc named ``kernel`` (or a numbered copy of it)."""
    from tvm import relax

    return _op(value) == "relax.call_tir" and isinstance(value.args[0], relax.GlobalVar) \
        and value.args[0].name_hint.startswith(kernel)


def _operands(value) -> list:
    """The operands of a call (a Relax operator's arguments, a ``call_tir``'s inputs)."""
    return list(value.args[1].fields) if _op(value) == "relax.call_tir" else list(value.args)


def _first_input(value):
    return _operands(value)[0]


def _is_product(value) -> bool:
    """Whether ``value`` multiplies two activations: a matmul, or bf16's kernel of one."""
    return _computes(value, "relax.matmul", bf16.ACTIVATIONS_KERNEL)


def _substitute(expr, mapping: dict):
    """``expr`` with the variables in ``mapping`` replaced (calls, tuples and variables)."""
    from tvm import relax

    if expr in mapping:
        return mapping[expr]
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_substitute(f, mapping) for f in expr.fields])
    if isinstance(expr, relax.Call):
        return relax.Call(expr.op, [_substitute(a, mapping) for a in expr.args], expr.attrs, expr.ty_args)
    return expr


def _leaves(expr) -> list:
    """The variables and tensor constants ``expr`` reads (through calls and tuples)."""
    from tvm import relax

    if isinstance(expr, relax.Var) or is_constant(expr):
        return [expr]
    if isinstance(expr, relax.Tuple):
        return [v for field in expr.fields for v in _leaves(field)]
    if isinstance(expr, relax.Call):
        return [v for arg in expr.args for v in _leaves(arg)]
    return []


def _vars_in(expr) -> list:
    from tvm import relax

    return [leaf for leaf in _leaves(expr) if isinstance(leaf, relax.Var)]


def _shape(var) -> tuple | None:
    """The shape of ``var``'s tensor as text per dim (a number, or a symbolic dim's name), so that
    static and symbolic shapes compare alike; None when unknown."""
    shape = getattr(var.ty, "shape", None)
    return tuple(str(d) for d in shape) if shape is not None else None


def _is_scalar_const(expr) -> bool:
    return is_constant(expr) and expr.value.numpy().size == 1


@dataclass
class _Block:
    """The bindings of a function, in order: who binds each variable, who uses it and how often."""

    bindings: list
    producer: dict
    users: dict
    uses: Counter

    @classmethod
    def of(cls, func) -> "_Block":
        from tvm import relax

        bindings = [b for blk in func.body.blocks for b in blk.bindings]
        users: dict = {}
        uses: Counter = Counter()
        for binding in bindings:
            for var in _vars_in(binding.value):
                uses[var] += 1
                users.setdefault(var, []).append(binding)
        result = func.body.body
        for var in _vars_in(result) if isinstance(result, (relax.Var, relax.Tuple)) else []:
            uses[var] += 1
        return cls(bindings, {b.var: b for b in bindings}, users, uses)

    def call(self, var, op_names) -> object | None:
        """The binding of ``var`` when it is a single-use call to one of ``op_names``."""
        binding = self.producer.get(var)
        if binding is None or self.uses[var] != 1 or _op(binding.value) not in op_names:
            return None
        return binding


def _scores_chain(block: _Block, var, group: list):
    """Walk from softmax's input back through elementwise ops to the scores matmul."""
    from tvm import relax

    while True:
        binding = block.call(var, ELEMENTWISE | {"relax.matmul", "relax.call_tir"})
        if binding is None or (_op(binding.value) == "relax.call_tir" and not _is_product(binding.value)):
            return None
        group.append(binding)
        if _is_product(binding.value):
            return binding
        same = [a for a in binding.value.args if isinstance(a, relax.Var) and _shape(a) == _shape(var)]
        if len(same) != 1:
            return None
        var = same[0]


def _operand_chain(block: _Block, var, group: list):
    """Pull in the single-use reshapes, transposes, scalar scales and roundings to bf16 that produce
    ``var``; the expression the chain starts from."""
    from tvm import relax

    while isinstance(var, relax.Var):
        binding = block.call(var, LAYOUT | {"relax.multiply", "relax.divide", "relax.call_tir"})
        if binding is None or (_op(binding.value) == "relax.call_tir"
                               and not _calls(binding.value, bf16.BITS)):
            return var
        args = binding.value.args
        if _op(binding.value) == "relax.call_tir":
            var = _first_input(binding.value)
        elif _op(binding.value) in LAYOUT:
            var = args[0]
        elif _is_scalar_const(args[1]):
            var = args[0]
        elif _op(binding.value) == "relax.multiply" and _is_scalar_const(args[0]):
            var = args[1]
        else:
            return var
        group.append(binding)
    return var


def _left_product(block: _Block, var, group: list):
    """The product whose left operand is ``var`` (its only use), through a rounding to bf16 (pulled
    into ``group``); None if ``var`` has another use."""
    users = block.users.get(var, [])
    if len(users) != 1 or block.uses[var] != 1:
        return None
    user = users[0]
    if _calls(user.value, bf16.BITS):
        product = _left_product(block, user.var, group)
        if product is not None:
            group.append(user)
        return product
    return user if _is_product(user.value) and _operands(user.value)[0].same_as(var) else None


def _probabilities_user(block: _Block, prob, group: list):
    """The product taking softmax's output, through an optional ``where(isnan(p), c, p)`` guard."""
    users = block.users.get(prob, [])
    if len(users) == 1:
        return _left_product(block, prob, group)
    guards = sorted(users, key=lambda u: not _computes(u.value, "relax.isnan", "isnan"))
    if len(users) != 2 or not _computes(guards[0].value, "relax.isnan", "isnan") \
            or _op(guards[1].value) != "relax.where":
        return None
    isnan, where = guards
    if block.uses[isnan.var] != 1 or not where.value.args[0].same_as(isnan.var) \
            or not where.value.args[2].same_as(prob) or block.uses[prob] != 2:
        return None
    product = _left_product(block, where.var, group)
    if product is not None:
        group.extend([isnan, where])
    return product


def _output_chain(block: _Block, var, group: list):
    """Pull in the single-use reshapes and transposes after the output, and its rounding to bf16 for
    the projection after it; the group's last binding."""
    last = block.producer[var]
    while block.uses[var] == 1:
        users = block.users.get(var, [])
        if len(users) != 1 or not (_op(users[0].value) in LAYOUT or _calls(users[0].value, bf16.BITS)):
            break
        last = users[0]
        group.append(last)
        var = last.var
    return last


def _packing(block: _Block, operand):
    """The single-use binding packing ``operand`` for bf16's kernel (``bf16.packed_pairs``), or None."""
    packing = block.call(operand, {"relax.call_tir"})
    return packing if packing is not None and _calls(packing.value, bf16.PACKED_PAIRS) else None


def _projection_group(block: _Block, operand) -> tuple[list, object] | None:
    """An operand's layout chain (and its packing for bf16's kernel) with the matmul (and bias add)
    computing it, and its last binding; None when the operand is not laid out by single-use ops after
    a single-use projection."""
    chain: list = []
    packing = _packing(block, operand)
    if packing is not None:
        chain.append(packing)
    projected = _operand_chain(block, _first_input(packing.value) if chain else operand, chain)
    if not any(_op(b.value) in LAYOUT for b in chain):
        return None
    bias = block.call(projected, {"relax.add"})
    operands = bias.value.args if bias is not None else [projected]
    products = [found for a in operands if (found := _product(block, a)) is not None]
    if len(products) != 1:
        return None
    return [*products[0], *([bias] if bias is not None else []), *chain], block.producer[operand]


def _product(block: _Block, var) -> list | None:
    """The single-use bindings computing a projection's product ``var``: its matmul (fp32, or bf16's
    kernel), or int8's kernel and the dequantization after it; None for anything else."""
    found = block.call(var, {"relax.matmul", "relax.call_tir"})
    if found is None:
        return None
    if _computes(found.value, "relax.matmul", bf16.KERNEL):
        return [found]
    if not _calls(found.value, int8.DEQUANTIZED):
        return None
    dot = block.call(_first_input(found.value), {"relax.call_tir"})
    return [dot, found] if dot is not None and _calls(dot.value, int8.KERNEL) else None


def _match(block: _Block, softmax) -> tuple[list, object, list] | None:
    """The bindings of the attention block around ``softmax``, its last binding and the projection
    groups (``_projection_group``) of its K and (where bf16's kernel packs it) V, each with its
    function's name; or None."""
    if len(_shape(softmax.var) or ()) < 3:
        return None
    group = [softmax]
    scores = _scores_chain(block, _first_input(softmax.value), group)
    output = _probabilities_user(block, softmax.var, group)
    if scores is None or output is None:
        return None
    group.append(output)
    _operand_chain(block, _operands(scores.value)[0], group)
    value = _operands(output.value)[1]
    _operand_chain(block, value, group)  # V laid out in place; packed for bf16 by its projection, once
    last = _output_chain(block, output.var, group)
    projections = [(_projection_group(block, _operands(scores.value)[1]), KEY_FUNCTION_NAME)]
    if _packing(block, value) is not None:
        projections.append((_projection_group(block, value), VALUE_FUNCTION_NAME))
    return group, last, [(*found, name) for found, name in projections if found is not None]


def _grouped_function(group: list, last, name: str):
    """A primitive Relax function ``name`` computing ``group`` (in binding order); its parameters."""
    from tvm import relax

    defined = {b.var for b in group}
    params: dict = {}  # FuseTIR takes no tensor constants inside: they become parameters too
    for binding in group:
        for leaf in _leaves(binding.value):
            if leaf not in defined and leaf not in params:
                param_name = leaf.name if isinstance(leaf, relax.Var) else f"param_{len(params)}"
                params[leaf] = relax.Var(param_name, leaf.ty)
    builder = relax.BlockBuilder()
    renamed = dict(params)
    with builder.function(name, list(params.values()), attrs={"Primitive": True}, private=True):
        with builder.dataflow():
            for binding in group:
                call = _substitute(binding.value, renamed)
                emitted = builder.emit_output(call) if binding.same_as(last) else builder.emit(call)
                renamed[binding.var] = emitted
        builder.emit_func_output(renamed[last.var])
    return builder.get()[name], list(params)


def _find_groups(func) -> list[tuple[list, object, str]]:
    """Every attention block of ``func`` and its key (and value) projection, each within one binding block:
    (bindings in binding order, last binding, function name)."""
    block = _Block.of(func)
    block_of = {b.var: i for i, blk in enumerate(func.body.blocks) for b in blk.bindings}
    position = {b.var: i for i, b in enumerate(block.bindings)}
    taken: set = set()
    groups = []

    def take(group: list, last, name: str) -> bool:
        if len({block_of[b.var] for b in group}) != 1 or taken & {b.var for b in group}:
            return False
        groups.append((sorted(group, key=lambda b: position[b.var]), last, name))
        taken.update(b.var for b in group)
        return True

    for binding in block.bindings:
        if not _computes(binding.value, "relax.nn.softmax", "fast_softmax"):
            continue
        found = _match(block, binding)
        if found and take(found[0], found[1], FUNCTION_NAME):
            for projection in found[2]:
                take(*projection)
    return groups


def _with_groups_called(builder, main, groups):
    """``main`` with each group's bindings replaced by one call of its primitive function, added to
    ``builder`` under the group's name."""
    from tvm import relax

    replace: dict = {}
    drop: set = set()
    for group, last, name in groups:
        func, args = _grouped_function(group, last, name)
        gvar = builder.add_func(func, name)
        replace[last.var] = relax.Call(gvar, args)
        drop |= {b.var for b in group if not b.same_as(last)}
    blocks = []
    for blk in main.body.blocks:
        kept = [relax.VarBinding(b.var, replace[b.var]) if b.var in replace else b
                for b in blk.bindings if b.var not in drop]
        blocks.append(relax.DataflowBlock(kept) if isinstance(blk, relax.DataflowBlock)
                      else relax.BindingBlock(kept))
    body = relax.SeqExpr(blocks, main.body.body)
    return relax.Function(main.params, body, main.ret_ty, main.is_pure, main.attrs)


def fuse_attention():
    """A module pass grouping every attention block of every entry function, and the projection
    computing its K, into one primitive function each."""
    import tvm
    from tvm import relax

    from ..common.relax import entry_functions

    @tvm.transform.module_pass(opt_level=0, name="autotune.FuseAttention")
    def transform(mod, _ctx):
        builder = relax.BlockBuilder(mod)
        changed = False
        for gvar, main in entry_functions(mod):
            groups = _find_groups(main)
            if groups:
                builder.update_func(gvar, _with_groups_called(builder, main, groups))
                changed = True
        return relax.transform.Normalize()(builder.get()) if changed else mod

    return transform
