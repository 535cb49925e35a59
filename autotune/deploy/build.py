"""Build: the fused module with the database's chosen schedule for every task, or TVM's stock build."""

from __future__ import annotations

from ..backends import backend_for


def build_tuned(fused_mod, target, database):
    """A Relax executable of ``fused_mod`` with the database's best schedule for every task it has.

    Tasks without a record get a heuristic default schedule instead of the naive loop nest. On CPU,
    the weight layouts the schedules chose are computed here, once, from the constants, and the
    schedules that ask for it get their weight prefetches (``prefetch``).
    """
    import tvm
    from tvm import relax

    backend = backend_for(target)
    pipeline = backend.pipeline()
    with target, database, tvm.transform.PassContext(opt_level=3), backend.codegen(target):
        apply_and_lower = tvm.transform.Sequential([relax.transform.MetaScheduleApplyDatabase(),
                                                    backend.default_schedule_pass(target),
                                                    *backend.weight_packing_passes(),
                                                    *pipeline.dataflow_lower_passes(target),
                                                    *pipeline.finalize_passes(target)])
        return relax.build(fused_mod, target=target, relax_pipeline=apply_and_lower,
                           tir_pipeline=backend.tir_pipeline())


def build_untuned(relax_mod, target):
    """The stock TVM build of the imported model: the baseline users would get without tuning."""
    import tvm

    with target:
        return tvm.compile(relax_mod, target=target)
