"""Operator tasks: the fused module's PrimFuncs, how often the model calls each, their cost."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Task:
    """One operator task: a fused PrimFunc, how often the model calls it, and its cost."""

    name: str
    weight: int
    flops: float
    structural_hash: str
    mod: object = field(repr=False)
    target: object = field(repr=False)

    def as_dict(self) -> dict:
        return {"name": self.name, "weight": self.weight, "flops": self.flops,
                "workload_hash": self.structural_hash}


def extract_tasks(fused_mod, target) -> list[Task]:
    """The tunable tasks of a fused module, heaviest (weight × FLOPs) first (index guards excluded)."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    from .guards import GUARD_PREFIX

    tasks = []
    for extracted in ms.relax_integration.extract_tasks(fused_mod, target):
        if extracted.task_name.startswith(GUARD_PREFIX):  # fixed serial checks, nothing to tune
            continue
        mod = extracted.dispatched[0]
        tasks.append(Task(name=extracted.task_name, weight=int(extracted.weight),
                          flops=float(estimate_tir_flops(mod)),
                          structural_hash=str(tvm_ffi.structural_hash(mod)), mod=mod,
                          target=extracted.target))
    tasks.sort(key=lambda t: (-t.weight * t.flops, t.name))
    return tasks
