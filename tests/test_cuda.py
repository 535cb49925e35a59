"""CUDA without a GPU: named targets, design spaces, candidates and artifacts carrying device code.

Everything here builds for sm_90 on a host without a GPU (nvcc compiles the kernels); measuring and
loading need a GPU and are refused with a clear error. ``scripts/gpu_check.sh`` covers the GPU side.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tarfile

import pytest

import autotune
from autotune import AutotuneError
from autotune.backends.cuda_code import embedded_device_code
from autotune.targets.gpu import arch_runs_on
from autotune.targets.names import parse_target

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA toolkit)")

EM_CUDA = 190


def _has_gpu() -> bool:
    import tvm

    return tvm.cuda(0).exist


def _cuda_elf_archs(data: bytes) -> set[int]:
    """SM versions of the CUDA ELF images (cubins, also inside fatbins) found in ``data``."""
    archs = set()
    for match in re.finditer(rb"\x7fELF\x02\x01", data):
        start = match.start()
        if struct.unpack_from("<H", data, start + 0x12)[0] == EM_CUDA:
            archs.add((struct.unpack_from("<I", data, start + 0x30)[0] >> 8) & 0xFF)
    return archs


@pytest.fixture(scope="module")
def prepared(tiny_encoder):
    from autotune.jobs.prepare import prepare

    return prepare(tiny_encoder, {"input_ids": (1, 16)}, "cuda-sm90")


def test_named_cuda_targets_and_arch_rules():
    archs = {name: str(parse_target(name).attrs["arch"]) for name in ("cuda-sm80", "cuda-sm89", "cuda-sm90")}
    assert archs == {"cuda-sm80": "sm_80", "cuda-sm89": "sm_89", "cuda-sm90": "sm_90a"}
    assert arch_runs_on("sm_80", "8.6") and not arch_runs_on("sm_89", "8.6")
    assert arch_runs_on("sm_90a", "9.0") and not arch_runs_on("sm_90a", "10.0")


def test_cuda_without_gpu_is_a_clear_error():
    if _has_gpu():
        assert parse_target("cuda").kind.name == "cuda"
        pytest.skip("this host has a CUDA GPU")
    with pytest.raises(AutotuneError, match="this host has no CUDA GPU.*cuda-sm80, cuda-sm89 or cuda-sm90"):
        parse_target("cuda")


def test_design_spaces_generated_and_candidates_built_for_sm90(prepared):
    """Tasks of the tiny encoder, MetaSchedule's CUDA design spaces, candidates built with nvcc."""
    from tvm.s_tir import meta_schedule as ms

    from autotune.backends import backend_for
    from autotune.measure.config import MeasureConfig
    from autotune.measure.measurer import Measurer
    from autotune.search.tvm_setup import register_tensor_intrinsics

    assert prepared.tasks and all(t.target.kind.name == "cuda" for t in prepared.tasks)
    task = next(t for t in prepared.tasks if "matmul" in t.name)
    register_tensor_intrinsics(backend_for(task.target))
    context = ms.TuneContext(mod=task.mod, target=task.target, space_generator="post-order-apply",
                             search_strategy=ms.search_strategy.ReplayTrace(), task_name=task.name,
                             rand_state=0)
    spaces = context.generate_design_space()
    assert spaces, "no CUDA design space"
    kinds = {inst.kind.name for sch in spaces for inst in sch.trace.insts}
    assert "Bind" in kinds, kinds
    context.pre_tuning(max_trials=2, num_trials_per_iter=2, design_spaces=spaces,
                       database=ms.database.MemoryDatabase(), cost_model=None)
    candidates = [c.sch for c in context.generate_measure_candidates() or []]  # sampled, postprocessed
    assert candidates, "no candidate passed the CUDA postprocessors"
    with Measurer(MeasureConfig(build_workers=1)) as measurer:  # its builds go when it closes
        inputs = [ms.builder.BuilderInput(sch.mod, task.target) for sch in candidates]
        for result in measurer.builder.build(inputs):
            assert result.error_msg is None, result.error_msg
            with tarfile.open(result.artifact_path) as tar:
                packed = [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith("devc.c")]
            blob = bytes(int(v) for v in re.findall(rb"\d+", packed[0].split(b"{", 2)[-1]))
            assert embedded_device_code(blob)["fatbin"] == 1 and embedded_device_code(blob)["cuda_source"] == 0
            assert _cuda_elf_archs(blob) == {90}


def test_cuda_artifact_embeds_device_code_and_refuses_to_load_without_gpu(prepared, tiny_encoder,
                                                                         tmp_path):
    """Untuned tasks get dlight's GPU schedule; the .so carries a fatbin for sm_90, no CUDA source."""
    so_path = tmp_path / "encoder_sm90.so"
    summary = autotune.compile(tiny_encoder, so_path, {"input_ids": (1, 16)}, "cuda-sm90",
                               f"sqlite:///{tmp_path / 'empty.db'}", validate=False)
    assert summary["tasks_tuned"] == 0
    manifest = json.loads((tmp_path / "encoder_sm90.so.json").read_text())
    assert manifest["target_kind"] == "cuda" and manifest["cuda_arch"] == "sm_90a"
    data = so_path.read_bytes()
    assert b'extern "C" __global__' not in data and b"#include <cuda" not in data
    counts = embedded_device_code(so_path)
    assert counts["fatbin"] == 1 and counts["cuda_source"] == 0
    assert _cuda_elf_archs(data) == {90}
    if _has_gpu():
        pytest.skip("this host has a CUDA GPU: the refusal cannot be shown here")
    with pytest.raises(AutotuneError, match=r"cannot load .*encoder_sm90.so: it needs a CUDA GPU \(sm_90a\)"):
        autotune.load(so_path)
