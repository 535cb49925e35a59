"""A model imported for a range of shapes: one static-shape entry function per bucket, one module.

``--shape input_ids=1..8x1..128`` gives each dynamic dim of the model a range; dims the ONNX file
names alike (``batch``, ``seq``) are one dim for every input that has them. Each ranged dim gets a
ladder of bucket values (``buckets.ladder``): a geometric one where padding cannot change the
outputs, checked here on ONNX Runtime by running the model unpadded and padded, and every value
otherwise. Every bucket is imported at its static shape and becomes an entry function of one
module; its weights are the same constants in every function (stored once in the artifact), so
the graph passes, the tasks, tuning and the build are those of static shapes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from ..common.text import one_line
from ..errors import AutotuneError
from .buckets import BUCKET_PREFIX, MAX_EXACT_VALUES, ROW_TILE, Bucket, DimRange, ShapePlan, ladder
from .inputs import random_inputs
from .specs import TensorSpec

logger = logging.getLogger(__name__)
PAD_CHECK_RTOL = 1e-3  # padded and unpadded outputs of a dim that is safe to pad differ by rounding only


def is_ranged(shapes: dict[str, tuple[DimRange, ...]]) -> bool:
    return any(not dim.fixed for dims in shapes.values() for dim in dims)


def resolve_dims(model: onnx.ModelProto, shapes: dict[str, tuple[DimRange, ...]], path: Path
                 ) -> tuple[dict[str, DimRange], dict[str, list[str | int]]]:
    """The ranged dims by the name the model gives them, and each input's dims (a name, or a size
    fixed by the model or by the user); one error naming the input and dim for a contradiction."""
    from .onnx_file import graph_inputs

    inputs = {inp.name: inp for inp in graph_inputs(model)}
    for name in shapes:
        if name not in inputs:
            raise AutotuneError(f"--shape names input {name!r}, which {path} does not have "
                                f"(inputs: {', '.join(inputs)})")
    ranges: dict[str, tuple[DimRange, str]] = {}
    per_input = {name: _input_dims(name, inp, shapes.get(name), ranges, path) for name, inp in inputs.items()}
    for name, dims in per_input.items():
        missing = [f"{i} ({d})" for i, d in enumerate(dims) if isinstance(d, str) and d not in ranges]
        if missing:
            raise AutotuneError(f"input {name!r} of {path} has dynamic dims {', '.join(missing)} that no "
                                f"--shape sets: give --shape {name}=" + "x".join("N" for _ in dims))
    fixed = {symbol: r.low for symbol, (r, _) in ranges.items() if r.fixed}
    dims = {symbol: r for symbol, (r, _) in ranges.items() if not r.fixed}
    return dims, {name: [fixed.get(d, d) if isinstance(d, str) else d for d in entry]
                  for name, entry in per_input.items()}


def _input_dims(name: str, inp: onnx.ValueInfoProto, given, ranges: dict, path: Path) -> list[str | int]:
    dims = inp.type.tensor_type.shape.dim
    if given is not None and len(given) != len(dims):
        raise AutotuneError(f"--shape {name} has {len(given)} dims, but input {name!r} of {path} has "
                            f"rank {len(dims)}")
    entry: list[str | int] = []
    for position, dim in enumerate(dims):
        want = given[position] if given is not None else None
        if dim.HasField("dim_value") and dim.dim_value > 0:
            if want is not None and (want.low, want.high) != (dim.dim_value, dim.dim_value):
                raise AutotuneError(f"--shape {name}: dim {position} of input {name!r} is fixed at "
                                    f"{dim.dim_value} by {path}, it cannot be {want}")
            entry.append(dim.dim_value)
            continue
        symbol = dim.dim_param or f"{name}.{position}"
        if want is not None:
            seen = ranges.setdefault(symbol, (want, name))
            if seen[0] != want:
                raise AutotuneError(f"--shape {name}: dim {position} ({symbol}) is {want}, but --shape "
                                    f"{seen[1]} gives {seen[0]} for the same dim of {path}")
        entry.append(symbol)
    return entry


def sizes_at(dims: dict[str, DimRange], where: str) -> dict[str, int]:
    """Each ranged dim at its ``"low"`` or ``"high"`` end."""
    return {d: getattr(r, where) for d, r in dims.items()}


def pad_safe_dims(path: Path, plan: ShapePlan, specs: list[TensorSpec]) -> dict[str, bool]:
    """Per ranged dim, whether padding it leaves the outputs of the unpadded positions unchanged:
    ONNX Runtime runs the model at every dim's low end, then with one dim padded (as
    ``ShapePlan.pad`` pads), and the padded outputs, cropped, must match."""
    from ..frontend.onnx_file import onnxruntime_session

    try:
        session = onnxruntime_session(path, 1)
    except Exception as err:
        raise AutotuneError(f"ONNX Runtime cannot load {path} to check where padding is safe: "
                            f"{one_line(err)}") from None
    base = sizes_at(plan.dims, "low")
    inputs = random_inputs([replace(s, shape=plan.shape_of(s.name, base)) for s in specs], seed=1)
    reference = session.run(None, inputs)
    safe = {}
    for dim, allowed in plan.dims.items():
        padded_sizes = {**base, dim: min(allowed.high, 2 * allowed.low + 3)}
        padded = plan.pad(inputs, Bucket("", padded_sizes))
        outputs = session.run(None, padded)
        safe[dim] = all(_same(ref, out[tuple(slice(0, n) for n in ref.shape)])
                        for ref, out in zip(reference, outputs))
    return safe


def _same(reference: np.ndarray, got: np.ndarray) -> bool:
    scale = float(np.abs(reference).max(initial=0.0))
    return bool(np.abs(reference.astype(np.float64) - got).max(initial=0.0) <= PAD_CHECK_RTOL * scale + 1e-5)


def ladders_for(dims: dict[str, DimRange], safe: dict[str, bool], plan: ShapePlan,
                rung_unit: int = ROW_TILE) -> dict[str, list[int]]:
    """Each ranged dim's bucket values (a sequence's multiples of ``rung_unit``: ``ladder``), or one
    error naming the input and dim where padding is not safe and the range holds too many values
    for a bucket each."""
    for dim, allowed in dims.items():
        count = allowed.high - allowed.low + 1
        if not safe[dim] and count > MAX_EXACT_VALUES:
            name, position = next((n, e.index(dim)) for n, e in plan.inputs.items() if dim in e)
            raise AutotuneError(
                f"input {name!r} dim {position} ({dim}): padding it changes the model's outputs (no "
                f"attention mask covers it and later positions are seen by earlier ones), so each value "
                f"needs its own kernels; the range {allowed} has {count} values, more than "
                f"{MAX_EXACT_VALUES}: narrow it")
    leading = {entry[0] for entry in plan.inputs.values() if entry and isinstance(entry[0], str)}
    return {dim: ladder(allowed, safe[dim], dim in leading, rung_unit) for dim, allowed in dims.items()}


def output_dims(shapes_by_bucket: list[tuple[Bucket, dict[str, tuple[int, ...]]]],
                declared: dict[str, list[str | int]] | None = None) -> dict[str, list[str | int]]:
    """Which ranged dim each output dim follows: the one the model names it by (``declared``,
    each output's dim names), else the one it equals in every bucket's static shape."""
    first_bucket, first = shapes_by_bucket[0]
    result = {}
    for name, shape in first.items():
        entry: list[str | int] = []
        for position, size in enumerate(shape):
            named = (declared or {}).get(name, [])
            own = named[position] if position < len(named) else None  # the model's own name or size
            seen = [shapes[name][position] for _, shapes in shapes_by_bucket]
            if own is not None and (own in first_bucket.dims or own == size):
                entry.append(own)
                continue
            if isinstance(own, str) and own and len(set(seen)) == 1:  # a dim of the model's not ranged here
                entry.append(size)  # (not one a ranged dim of a single rung happens to equal)
                continue
            followed = [d for d in first_bucket.dims
                        if all(s == b.dims[d] for s, (b, _) in zip(seen, shapes_by_bucket))]
            if len(set(seen)) == 1 and (not followed or len(shapes_by_bucket) == 1):
                entry.append(size)
            elif followed:
                entry.append(followed[0])
            else:
                raise AutotuneError(f"output {name!r} dim {position} grows with the input shape but as "
                                    "none of the inputs' dims does: it cannot be cropped after padding")
        result[name] = entry
    return result


class SharedConstants:
    """Makes every bucket's copy of a weight the one constant: the artifact stores it once."""

    def __init__(self):
        self.seen: dict[tuple, object] = {}

    def __call__(self, func):
        from tvm import relax

        seen = self.seen

        @relax.expr_functor.mutator
        class Share(relax.PyExprMutator):
            def visit_generic_const_(self, const):
                array = const.value.numpy()
                key = (array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).hexdigest())
                return seen.setdefault(key, const)

        return Share().visit_expr(func)


def load_ranged(path: Path, shapes: dict[str, tuple[DimRange, ...]], load_static, for_tuning: bool = False,
                tune_shapes: str | None = None, rung_unit: int = ROW_TILE):
    """The model imported for the ranges of ``shapes``: every bucket (``for_tuning``: those covering
    ``tune_shapes``, ``--tune-shapes``'s text, or ``default_tune_sizes``) an entry function of one
    module, with the plan that dispatches among them. ``load_static(path, shapes)`` imports the
    model at one static shape (``importer``'s); sequence rungs are multiples of ``rung_unit``."""
    import tvm

    from .onnx_file import check_model, read_model

    model = read_model(path)
    check_model(model, path)
    dims, per_input = resolve_dims(model, shapes, path)
    plan = ShapePlan(dims, {}, per_input, {})
    largest = load_static(path, _static(plan, sizes_at(dims, "high")))
    safe = pad_safe_dims(path, plan, largest.inputs)
    plan.ladders = ladders_for(dims, safe, plan, rung_unit)
    plan.exact = [dim for dim in dims if not safe[dim]]
    if for_tuning:
        wanted = _covering(plan, parse_tune_shapes(tune_shapes, plan) if tune_shapes else default_tune_sizes(plan))
    else:
        wanted = plan.buckets()
    share, functions, out_shapes = SharedConstants(), {}, []
    for done, bucket in enumerate(wanted, start=1):
        logger.info("importing %s: bucket %d of %d (%s)", path.name, done, len(wanted), bucket.dims)
        imported = largest if bucket.dims == sizes_at(dims, "high") else load_static(path, _static(plan, bucket.dims))
        _only_main(imported.relax_mod, path)
        main = imported.relax_mod["main"].with_attr("global_symbol", bucket.function)
        functions[tvm.ir.GlobalVar(bucket.function)] = share(main)
        out_shapes.append((bucket, {o.name: o.shape for o in imported.outputs}))
    plan.outputs = output_dims(out_shapes, {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]
                                            for o in model.graph.output})
    inputs = [replace(s, ranges=_ranges(plan, s.name)) for s in largest.inputs]
    outputs = [replace(s, ranges=_ranges(plan, s.name)) for s in largest.outputs]
    return replace(largest, inputs=inputs, outputs=outputs, relax_mod=tvm.IRModule(functions), plan=plan)


def _only_main(mod, path: Path) -> None:
    """A bucket is its import's ``main``: an import that also made kernels of its own (TVM's ONNX
    importer does for a few ops) cannot be one yet."""
    others = sorted(g.name_hint for g in mod.get_global_vars() if g.name_hint != "main")
    if others:
        raise AutotuneError(f"{path}: TVM's importer made functions {', '.join(others)} beside the model's "
                            "main function, which a range of shapes cannot share yet: compile one shape "
                            "(--shape with numbers only)")


def _static(plan: ShapePlan, sizes: dict[str, int]) -> dict[str, tuple[int, ...]]:
    return {name: plan.shape_of(name, sizes) for name in plan.inputs}


def _ranges(plan: ShapePlan, name: str) -> tuple[tuple[int, int], ...]:
    dims = plan.inputs.get(name, plan.outputs.get(name))
    return tuple((plan.dims[d].low, plan.dims[d].high) if isinstance(d, str) else (d, d) for d in dims)


def _covering(plan: ShapePlan, sizes: list[dict[str, int]]) -> list[Bucket]:
    """The buckets that serve ``sizes``, each once, in order."""
    found: dict[str, Bucket] = {}
    for each in sizes:
        bucket = plan.bucket_for(each)
        found.setdefault(bucket.function, bucket)
    return list(found.values())


def default_tune_sizes(plan: ShapePlan) -> list[dict[str, int]]:
    """Where a range job tunes unless told: each ranged dim at the rung nearest the geometric mean
    of its range and at its top, in every combination."""
    import itertools

    choices = {d: sorted({min(plan.ladders[d], key=lambda r: abs(np.log(r) - np.log((r0.low * r0.high) ** 0.5))),
                          r0.high}) for d, r0 in plan.dims.items()}
    return [dict(zip(choices, values)) for values in itertools.product(*choices.values())]


def parse_tune_shapes(text: str, plan: ShapePlan, flag: str = "--tune-shapes") -> list[dict[str, int]]:
    """``--tune-shapes 1x32,8x128`` (or ``flag``): shapes of the first input with ranged dims, or of
    the input named first (``decoder_input_ids=1x5,2x13``), as sizes by dim name (dims that input
    lacks at their top); one error naming the shape and dim outside the range."""
    name, _, shapes_text = text.rpartition("=")
    if name and name not in plan.inputs:
        raise AutotuneError(f"bad {flag} {text!r}: the model has no input {name!r} "
                            f"(inputs: {', '.join(plan.inputs)})")
    name = name or next(n for n, e in plan.inputs.items() if any(isinstance(d, str) for d in e))
    dims = plan.inputs[name]
    return [_sizes_of(shape_text, name, dims, plan, flag)
            for shape_text in filter(None, shapes_text.replace(" ", "").split(","))]


def _sizes_of(shape_text: str, name: str, dims: list[str | int], plan: ShapePlan, flag: str) -> dict[str, int]:
    try:
        values = [int(v) for v in shape_text.lower().split("x")]
    except ValueError:
        values = []
    if len(values) != len(dims):
        example = "x".join(str(plan.dims[d].high) if isinstance(d, str) else str(d) for d in dims)
        raise AutotuneError(f"bad {flag} {shape_text!r}: expected a shape of input {name!r}, "
                            f"{len(dims)} dims like {example}")
    sizes = {}
    for position, (dim, value) in enumerate(zip(dims, values)):
        allowed = plan.dims[dim] if isinstance(dim, str) else DimRange(dim, dim)
        if not allowed.low <= value <= allowed.high:
            raise AutotuneError(f"{flag} {shape_text}: dim {position} of {name!r} is {value}, outside {allowed}")
        if isinstance(dim, str):
            sizes[dim] = value
    return {**sizes_at(plan.dims, "high"), **sizes}


def calls_per_entry(model) -> dict[str, list[np.ndarray]]:
    """Arguments the model accepts for each entry function of its module (``main``, or each bucket
    of a range), in input order: what an inference of every kernel runs."""
    from ..common.relax import entry_functions

    def arguments(specs):
        arrays = random_inputs(specs)
        return [arrays[spec.name] for spec in specs]

    if model.plan is None:
        return {"main": arguments(model.inputs)}
    present = {gvar.name_hint for gvar, _ in entry_functions(model.relax_mod)}
    return {b.function: arguments([replace(s, shape=model.plan.shape_of(s.name, b.dims)) for s in model.inputs])
            for b in model.plan.buckets() if b.function in present}


def kernels_named_by_bucket():
    """A module pass prefixing every kernel with the bucket whose entry function calls it first
    (``bucket_1_128_fused_matmul_add``), so tasks, records and kernel profiles of a range say the
    shape they are for; a module without buckets is left as it is."""
    import tvm
    from tvm import relax, tirx

    from ..common.relax import entry_functions
    from .guards import GUARD_PREFIX

    @tvm.transform.module_pass(opt_level=0, name="autotune.KernelsNamedByBucket")
    def transform(mod, _ctx):
        entries = [(g, f) for g, f in entry_functions(mod) if g.name_hint.startswith(BUCKET_PREFIX)]
        if not entries:
            return mod
        builder = relax.BlockBuilder(mod)
        renamed: dict = {}
        for gvar, func in entries:
            for callee in _callees(func):
                if callee not in renamed and isinstance(mod[callee], tirx.PrimFunc) \
                        and not callee.name_hint.startswith(GUARD_PREFIX):  # guards stay out of tasks
                    name = f"{gvar.name_hint}_{callee.name_hint}"
                    renamed[callee] = builder.add_func(mod[callee].with_attr("global_symbol", name), name)

        @relax.expr_functor.mutator
        class Rename(relax.PyExprMutator):
            def visit_global_var_(self, var):
                return renamed.get(var, var)

        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                builder.update_func(gvar, Rename().visit_expr(func))
        new_names = set(renamed.values())
        # the symbol only made add_func keep each copy apart: workloads must not hash a name
        return tvm.IRModule({g: f.without_attr("global_symbol") if g in new_names else f
                             for g, f in builder.get().functions_items() if g not in renamed}, attrs=mod.attrs)

    return transform


def _callees(func) -> list:
    """The global functions ``func`` refers to, in order of first use."""
    import tvm
    from tvm import relax

    found: dict = {}
    relax.analysis.post_order_visit(func, lambda e: found.setdefault(e, None)
                                    if isinstance(e, tvm.ir.GlobalVar) else None)
    return list(found)
