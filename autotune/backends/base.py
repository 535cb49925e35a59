"""The ``Backend`` interface: what differs per target kind."""

from __future__ import annotations

import contextlib
import importlib
from abc import ABC, abstractmethod



class Backend(ABC):
    """What differs per target kind. Stateless: one instance per kind, from ``backend_for``."""

    kind: str  # TVM's target kind
    device_type: str  # TVM's device name for its runtime
    tvm_backend: str  # the package under ``tvm.relax.backend`` holding the Relax pipeline
    intrinsics: str  # the module under ``tvm.s_tir.tensor_intrin`` its schedule rules need
    fuses_attention: bool  # each attention block becomes one task (its default schedule exists)
    layout_free_weights: bool  # schedules choose the weights' layout; compile packs the constants
    asserts_in_kernels: bool  # a kernel can stop a call (index guards); else takes clip
    retimes_in_place: bool  # finalists are re-timed inside the model (else alone)
    threaded: bool  # code runs on a pool of host threads (``num-cores``), a graph-level knob

    def pipeline(self):
        """TVM's Relax pipeline module for this backend (its pass lists by stage)."""
        return importlib.import_module(f"tvm.relax.backend.{self.tvm_backend}.pipeline")

    def device(self):
        """The TVM device code of this backend runs on (the first one)."""
        import tvm

        return tvm.runtime.device(self.device_type, 0)

    @abstractmethod
    def default_schedule_pass(self, target):
        """A module pass scheduling every PrimFunc that no tuned record scheduled."""

    @abstractmethod
    def heuristic_schedules(self, mod, target) -> list:
        """Fixed schedules worth measuring for a task before the search (may be empty)."""

    def weight_packing_passes(self) -> list:
        """Passes of the build that pack constant weights into the layouts the schedules chose."""
        return []

    def candidate_passes(self) -> list:
        """Passes applied to a scheduled task before it is built for measuring."""
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        return [RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)]

    def search_space(self, mod, target):
        """MetaSchedule's design-space generator for the task ``mod``: the target's default rules."""
        from tvm.s_tir import meta_schedule as ms

        return ms.space_generator.PostOrderApply(postprocs=self.search_postprocs(target))

    def search_postprocs(self, target) -> list:
        """MetaSchedule's postprocessors for candidates of this backend."""
        from tvm.s_tir import meta_schedule as ms

        return ms.postproc.Postproc.create(self.kind)

    def codegen(self, target):
        """A context to generate code for ``target`` in."""
        return contextlib.nullcontext()

    def tir_pipeline(self) -> str:
        """The name of the TIR pipeline kernels are lowered with (``tvm.tirx.build``'s ``pipeline``)."""
        return "default"

    def export_options(self, target) -> dict:
        """Extra ``export_library`` keywords."""
        return {}

    def artifact_options(self, target) -> dict:
        """Extra ``export_library`` keywords for a deployed artifact (not a measured candidate)."""
        return {}

    @abstractmethod
    def manifest_fields(self, target) -> dict:
        """What the manifest records about the code's requirements on the host."""

    @abstractmethod
    def check_runnable(self, target, what: str) -> None:
        """Raise ``AutotuneError`` (``cannot {what} …``) unless this host can run ``target``'s code."""

    @abstractmethod
    def check_loadable(self, manifest: dict, so_path) -> None:
        """Raise ``AutotuneError`` unless this host can run the artifact a manifest describes."""
