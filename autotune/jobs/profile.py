"""``profile``: where a compiled model's time goes, and how far each kernel is from this host's roofs.

Every kernel is timed in place, inside the running model (``measure.profile``), and set against the
two roofs measured on this host (``bench.peaks``): the compute peak of the artifact's precision (the
fp32 FMA's, or bf16's ``vdpbf16ps``) and the memory bandwidth. Its
FLOPs and bytes are what its TIR says (each buffer it reads or writes once: weights, activations
in and out). A kernel's floor is the time it would take at the nearer roof, ``max(FLOPs ÷ peak,
bytes ÷ bandwidth)``; its headroom is its time minus that floor, the most an expert could win on it.
VM builtins (shape checks, allocations) have no roof: all their time is overhead. What timing
every call costs is measured too (``instrument_us_per_call``: the instrumented inference against
the plain one, per call).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..bench.peaks import Peaks, host_peaks
from ..common.results import Result
from ..targets.host import usable_cores

ROUNDS = 10
INFERENCES = 5
RUNTIME = "vm.builtin."  # kernels of TVM's VM itself


@dataclass
class KernelProfile(Result):
    """One kernel per inference: its time, work, rates, share of the roofs, and headroom."""

    kernel: str
    calls: int
    us: float
    share_of_latency: float  # of the instrumented inference
    bound: str  # compute, memory, or runtime (a VM builtin)
    mflop: float
    kbytes: float
    gflops: float
    gbs: float
    share_of_compute_peak: float
    share_of_bandwidth: float
    floor_us: float
    headroom_us: float
    headroom_share: float  # of the instrumented inference
    below_the_roof: bool = False  # faster than the roofs allow: a peak was measured too low


@dataclass
class ProfileResult(Result):
    """A compiled model's kernels, most headroom first (the VM's builtins after them), against this
    host's peaks."""

    artifact: str
    wall_p50_ms: float  # plain inferences, no instrument
    instrumented_p50_ms: float  # inferences with every call timed: the kernels' shares are of this
    kernel_sum_ms: float
    calls: int  # kernel and builtin calls per inference
    instrument_us_per_call: float  # what timing each call adds to an inference, measured
    peaks: Peaks
    kernels: list[KernelProfile] = field(default_factory=list)


def buffer_bytes(func) -> int:
    """The bytes of every buffer a PrimFunc takes (its inputs, weights and outputs)."""
    import tvm

    return sum(math.prod(int(d) for d in param.shape) * tvm.DataType(str(param.dtype)).bits // 8
               for param in func.params if hasattr(param, "shape"))


def kernel_work(fused) -> dict[str, tuple[float, float]]:
    """Per PrimFunc of a fused module: (FLOPs, bytes of its buffers)."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    return {gvar.name_hint: (float(estimate_tir_flops(tvm.IRModule({"main": func}))), float(buffer_bytes(func)))
            for gvar, func in fused.functions_items() if isinstance(func, tvm.tirx.PrimFunc)}


def _fused_module(manifest):
    """The fused module the artifact was built from, made again from its manifest."""
    import tvm

    from .prepare import prepare

    shapes = {spec["name"]: spec.get("range") or tuple(spec["shape"]) for spec in manifest.inputs}
    return prepare(manifest.model["path"], shapes, tvm.target.Target(manifest.target), manifest.fusion,
                   manifest.precision).fused


def _row(name: str, calls: int, seconds: float, latency_s: float, work: tuple[float, float] | None,
         peaks: Peaks, precision: str) -> KernelProfile:
    us = seconds * 1e6
    if work is None:  # the VM's own work: nothing to compute, all of it overhead
        return KernelProfile(name, calls, us, seconds / latency_s, "runtime", 0.0, 0.0, 0.0, 0.0,
                             0.0, 0.0, 0.0, us, seconds / latency_s)
    flops, bytes_ = (value * calls for value in work)
    floor_s = peaks.floor_s(flops, bytes_, precision)
    compute_peak = peaks.compute_peak(precision)
    gflops, gbs = flops / seconds / 1e9, bytes_ / seconds / 1e9
    bound = "compute" if flops / max(bytes_, 1.0) >= compute_peak / peaks.bandwidth_gbs else "memory"
    headroom_s = max(seconds - floor_s, 0.0)
    return KernelProfile(name, calls, us, seconds / latency_s, bound, flops / 1e6, bytes_ / 1e3, gflops, gbs,
                         gflops / compute_peak, gbs / peaks.bandwidth_gbs, floor_s * 1e6, headroom_s * 1e6,
                         headroom_s / latency_s, seconds < floor_s)


def profile(so_path: str | Path, rounds: int = ROUNDS, inferences: int = INFERENCES,
            threads: int | None = None, remeasure_peaks: bool = False) -> ProfileResult:
    """Profile the artifact at ``so_path`` (see the module docstring)."""
    import tvm.relax  # noqa: F401  (the compiler, for the TIR; loaded before the runtime-only loader)

    from ..frontend.inputs import manifest_calls
    from ..measure.profile import profile_in_turns
    from ..runtime.loader import load

    manifest = load(so_path).manifest
    threads = threads or int(manifest.target.get("num-cores", 0)) or usable_cores()
    peaks = host_peaks(threads, remeasure_peaks)
    (timer,) = profile_in_turns([str(so_path)], manifest_calls(manifest), rounds, inferences)
    latency_s = statistics.median(timer.wall)
    # shares are of the instrumented inference: the kernels' times were taken inside it
    instrumented_s = statistics.median(timer.instrumented_wall)
    work = kernel_work(_fused_module(manifest))
    kernels = [_row(name, timer.calls[name], statistics.median(per_round), instrumented_s,
                    None if name.startswith(RUNTIME) else work.get(name, (0.0, 0.0)), peaks, manifest.precision)
               for name, per_round in timer.per_round.items()]
    kernels.sort(key=lambda k: (k.bound == "runtime", -k.headroom_us))  # the VM's own rows last
    calls = sum(k.calls for k in kernels)
    instrument_s = (instrumented_s - latency_s) / max(calls, 1)
    return ProfileResult(str(so_path), latency_s * 1e3, instrumented_s * 1e3, sum(k.us for k in kernels) / 1e3,
                         calls, max(instrument_s, 0.0) * 1e6, peaks, kernels)
