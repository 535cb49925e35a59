"""Heuristic default schedules for CPU tasks: what a task gets before (or without) any search.

The naive loop nest of a matmul is tens of times slower than a tiled one, so a build whose budget
did not reach a task would be far behind ONNX Runtime. Each rule returns ready schedules for the
tasks it recognises, serial and parallel variants where threads may not pay (a parallel region
costs microseconds); ``search.fixed.measure_defaults`` times them beside the naive nest, and
compile takes the fastest record per task.

* attention (``schedules.attention``; ``frontend.attention``'s task: two matmuls with softmax
  between): per block of a few query rows, in parallel, scores, mask, softmax and the product with
  V end to end in L1;
* dot-product matmuls (bf16 ``vdpbf16ps``, int8 ``vpdpbusd``: ``schedules.dot``, register tiles of
  the instruction down each column panel);
* matmul-like (``schedules.matmul``; one reduction block, epilogue after it): a register tile
  swept down a column panel one K block at a time, the next panel's weights prefetched;
* softmax- and LayerNorm-like (``schedules.rows``; row reductions feeding an injective block):
  rows in parallel, every block computed per row, each reduction split into vector-wide partial
  results; where that does not apply, TVM's dlight CPU rule;
* injective (``schedules.rows``; reshape, transpose, elementwise): producers inlined, rows in
  parallel, the inner axis vectorised.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from . import bf16, int8
from .attention import attention
from .dot import DotProduct, has_dot_block
from .matmul import matmul
from .rows import injective, reduction, row_reduction

DOT_PRODUCTS: tuple[DotProduct, ...] = (bf16.DOT, int8.DOT)
RULES: tuple[Callable, ...] = (attention, bf16.bf16_matmul, int8.int8_matmul, int8.quantize_rows_schedule, matmul,
                               row_reduction, reduction, injective)
# their weights come packed by the graph pass (``frontend.precision``): no layout rewrite
PACKED_BY_THE_GRAPH = frozenset({bf16.bf16_matmul, int8.int8_matmul})
# Unmeasured, a default runs in parallel from this much work, where a parallel region's start-up
# (microseconds) is small against the kernel (docs/measurements.md: where the threshold came from).
PARALLEL_MIN_FLOPS = 5e5
PARALLEL_MIN_OUTPUT = 32768  # output elements from which a default runs in parallel whatever its FLOPs


def dot_product_of(mod) -> DotProduct | None:
    """The dot-product kernel a task computes (``DOT_PRODUCTS``), or None."""
    return next((kind for kind in DOT_PRODUCTS if has_dot_block(mod, kind)), None)


def _prepack_weights(sch):
    """``sch`` reading its weights (the task's layout-free buffers) in the order its loops walk them.

    MetaSchedule's ``RewriteLayout`` adds the layout change as a preprocessing block; compile folds
    it into the constants (``deploy.build.build_tuned``), so the kernel streams contiguous weight panels.
    Tasks without layout-free buffers (e.g. CUDA's, or activations on both sides) are returned
    unchanged.
    """
    from tvm.s_tir import meta_schedule as ms

    if not has_layout_free_weights(sch.mod):
        return sch
    rewritten = sch.copy()
    return rewritten if ms.postproc.RewriteLayout().apply(rewritten) else sch


def has_layout_free_weights(mod) -> bool:
    """Whether a task marks buffers (its weights) whose layout a schedule may choose."""
    attrs = mod["main"].attrs
    return bool(attrs and attrs.get("layout_free_buffers"))


def weight_layouts(trace) -> tuple[str, ...]:
    """The layouts a schedule's ``trace`` packs its task's weights in (``_prepack_weights``): each
    layout change's buffer and index map; empty for a schedule reading them as they are."""
    return tuple(f"{inst.attrs[0]}:{inst.inputs[-1]}" for inst in trace.insts if inst.kind.name == "TransformLayout")


def _variants(mod, target) -> dict[bool, object]:
    """The first rule's schedules for ``mod``, keyed by whether they run in parallel."""
    for rule in RULES:
        found = {}
        for parallel in (False, True):
            try:
                sch = rule(mod, target, parallel)
            except Exception:  # noqa: BLE001 - a rule that does not fit this task gives nothing
                sch = None
            if sch is not None:
                found[parallel] = sch if _packed_by_the_graph(rule, mod) else _prepack_weights(sch)
        if found:
            return found
    return {}


def _packed_by_the_graph(rule, mod) -> bool:
    """Whether ``rule``'s schedule of ``mod`` reads operands the graph pass packed: a dot-product
    projection's weight, or K and V of an attention whose products are bf16's (``frontend.precision``).
    No layout rewrite then (nor could one follow: TVM 0.27 cannot copy a schedule once tensorized)."""
    return rule in PACKED_BY_THE_GRAPH or (rule is attention and bf16.has_activations_block(mod))


def heuristic_schedules(mod, target) -> list:
    """Heuristic schedules for a CPU task (serial and parallel variants); empty when none applies."""
    return list(_variants(mod, target).values())


def default_schedule(mod, target):
    """One heuristic schedule, chosen without measuring (parallel for many FLOPs or a big output), or
    None."""
    from tvm.s_tir.analysis import estimate_tir_flops

    variants = _variants(mod, target)
    if not variants:
        return None
    wants_parallel = float(estimate_tir_flops(mod)) >= PARALLEL_MIN_FLOPS \
        or _output_elements(mod) >= PARALLEL_MIN_OUTPUT
    return variants.get(wants_parallel) or next(iter(variants.values()))


def _output_elements(mod) -> int:
    """Elements of the task's last buffer parameter (its output)."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return math.prod(int(dim) for dim in ArgInfo.from_prim_func(mod["main"])[-1].shape)


def schedule_unscheduled(target):
    """A module pass giving every PrimFunc that nothing scheduled its ``default_schedule``."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="autotune.ScheduleUnscheduled")
    def apply(mod, _ctx):
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled")):
                continue
            sch = default_schedule(tvm.IRModule({"main": func}), target)
            if sch is not None:
                updates[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    return apply
