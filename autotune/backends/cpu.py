"""The CPU backend (TVM's LLVM target): heuristic schedules, pre-packed weights, host features."""

from __future__ import annotations

from ..errors import AutotuneError
from .base import Backend


class CpuBackend(Backend):
    kind = "llvm"
    device_type = "cpu"
    tvm_backend = "cpu_generic"
    intrinsics = "x86"
    fuses_attention = True  # ``schedules.heuristics`` schedules the fused attention task
    layout_free_weights = True
    asserts_in_kernels = True
    retimes_in_place = True
    threaded = True

    def artifact_options(self, target) -> dict:
        """Link without the DWARF debug information TVM's LLVM codegen emits (about as many bytes as
        the code, nothing the runtime reads); the symbol table stays for profilers."""
        return {"options": ["-Wl,--strip-debug"]}

    def default_schedule_pass(self, target):
        from ..schedules.heuristics import schedule_unscheduled

        return schedule_unscheduled(target)

    def heuristic_schedules(self, mod, target) -> list:
        from ..schedules.heuristics import heuristic_schedules

        return heuristic_schedules(mod, target)

    def weight_packing_passes(self) -> list:
        """The prefetches the schedules ask for, then the layout changes of constant weights folded
        into the constants; the tuples of packed weights read where they are built and dropped."""
        from tvm import relax

        from ..schedules.prefetch import prefetch_pass
        from .packing import tuple_items_forwarded

        return [prefetch_pass(), relax.transform.SplitLayoutRewritePreproc(),
                relax.transform.FoldConstant(), tuple_items_forwarded(),
                relax.transform.DeadCodeElimination()]

    def tir_pipeline(self) -> str:
        """TVM's default, with small scratch buffers kept on the stack (``scratch``)."""
        from .scratch import register_pipeline

        return register_pipeline()

    def candidate_passes(self) -> list:
        from ..schedules.prefetch import prefetch_pass

        return [prefetch_pass(), *super().candidate_passes()]

    def search_space(self, mod, target):
        """The default rules; a dot-product task's rules also tile for its instruction's intrinsic
        (``schedules.dot.search_rules``), and its candidates are tensorized after sampling."""
        from tvm.s_tir import meta_schedule as ms

        from ..schedules import dot
        from ..schedules.heuristics import dot_product_of

        kind = dot_product_of(mod)
        if kind is None:
            return super().search_space(mod, target)
        kind.register()
        postprocs = [*self.search_postprocs(target), dot.no_vector_loop_around_intrinsic(kind),
                     ms.postproc.RewriteTensorize(vectorize_init_loop=True)]
        return ms.space_generator.PostOrderApply(sch_rules=dot.search_rules(kind), postprocs=postprocs)

    def search_postprocs(self, target) -> list:
        """MetaSchedule's CPU postprocessors, less ``RewriteLayout``.

        In TVM 0.27 ``RewriteLayout`` fails every candidate of a task with layout-free weights
        (``parallel_for_dynamic error ... args.size() == initial_indices_orig.size()``). Searched
        schedules read the weights as they are; the heuristic ones pre-pack them themselves, and
        compile keeps the faster record.
        """
        from tvm.s_tir import meta_schedule as ms

        return [p for p in super().search_postprocs(target) if not isinstance(p, ms.postproc.RewriteLayout)]

    def manifest_fields(self, target) -> dict:
        mcpu = target.attrs.get("mcpu")
        return {"mcpu": mcpu and str(mcpu), "required_features": required_features(target),
                "cuda_arch": None}

    def check_runnable(self, target, what: str) -> None:
        from ..targets.host import lacking_on_host

        missing = lacking_on_host(required_features(target))
        if missing:
            raise AutotuneError(
                f"cannot {what} on this host for target mcpu={target.attrs.get('mcpu')}: the CPU lacks "
                f"{', '.join(missing)} (use --target host, or measure on a matching machine via --rpc)")

    def check_loadable(self, manifest: dict, so_path) -> None:
        from ..targets.host import lacking_on_host

        missing = lacking_on_host(manifest.get("required_features", []))
        if missing:
            raise AutotuneError(f"{so_path} was compiled for mcpu={manifest.get('mcpu')}, which needs "
                                f"{', '.join(missing)}; this host's CPU lacks them")


def required_features(target) -> list[str]:
    """The checked ISA features that code for an LLVM ``target`` may use."""
    from tvm.target import codegen

    from ..targets.host import CHECKED_FEATURES

    with target:
        return [f for f in CHECKED_FEATURES if codegen.llvm_cpu_has_features(f, target)]


CPU = CpuBackend()
