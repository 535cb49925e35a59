"""The CUDA backend: dlight default schedules, device code compiled into the artifact, GPU arch."""

from __future__ import annotations

from .base import Backend


class CudaBackend(Backend):
    kind = "cuda"
    device_type = "cuda"
    tvm_backend = "cuda"
    intrinsics = "cuda"  # tensor-core schedule rules need them
    fuses_attention = False
    layout_free_weights = False
    asserts_in_kernels = False  # a GPU kernel cannot stop a call: takes clip their indices
    retimes_in_place = False
    threaded = False

    def default_schedule_pass(self, target):
        """dlight's GPU rules for every PrimFunc that no tuned schedule reached.

        Goes right after ``MetaScheduleApplyDatabase``: functions it scheduled carry
        ``tirx.is_scheduled`` and are left alone. Needs the CUDA target to be the current target.
        """
        from tvm.s_tir import dlight as dl

        return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                       dl.gpu.GeneralReduction(), dl.gpu.Fallback())

    def heuristic_schedules(self, mod, target) -> list:
        return []

    def codegen(self, target):
        from .cuda_code import codegen_fallback

        return codegen_fallback()

    def export_options(self, target) -> dict:
        from .cuda_code import pack_imports_compiled

        return {"fpack_imports": pack_imports_compiled(target)}

    def manifest_fields(self, target) -> dict:
        return {"mcpu": None, "required_features": [], "cuda_arch": str(target.attrs["arch"])}

    def check_runnable(self, target, what: str) -> None:
        from ..targets.gpu import check_device

        check_device(str(target.attrs["arch"]), what)

    def check_loadable(self, manifest: dict, so_path) -> None:
        from ..targets.gpu import check_device

        check_device(manifest["cuda_arch"], f"load {so_path}")


CUDA = CudaBackend()
