"""The jobs a measurement worker may run: build a candidate, time a candidate.

Only the functions named in ``JOBS`` can be called through a worker; nothing else is executed.

Runner settings, chosen for CPUs of a shared machine whose speed drifts: each candidate runs
untimed for ``WARM_UP_S`` (``_warm_up``), then ``repeat`` timed repeats, each at least
``min_repeat_ms`` long (TVM raises the inner ``number`` for short kernels), and the *median* repeat
is the result. Long windows suffered from periodic stalls; the median of short repeats ranked
candidates as faithfully at a fifth of the cost. No cache flush: a kernel's finalists are timed
again inside the model at the end of a job, where its weights come from
memory as they do in production (``jobs.confirm``).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time


def ping() -> str:
    """Import what the jobs need, so the first real job is not charged for it."""
    import tvm  # noqa: F401
    import numpy  # noqa: F401

    return "ready"


def build(mod_json: str, target_json: str) -> str:
    """Compile one scheduled task and export it; returns the artifact path."""
    import tvm
    from tvm.support.tar import tar

    from ..backends import backend_for
    from ..schedules.bf16 import register_rounding

    register_rounding()  # before the task's TIR is read back: bf16 kernels contain the op
    target = tvm.target.Target(json.loads(target_json))
    backend = backend_for(target)
    mod = tvm.transform.Sequential(backend.candidate_passes())(tvm.ir.load_json(mod_json))
    with backend.codegen(target):
        runtime_mod = tvm.tirx.build(mod, target=target, pipeline=backend.tir_pipeline())
    path = os.path.join(tempfile.mkdtemp(prefix="autotune-build-"), "candidate." + tar.output_format)
    runtime_mod.export_library(path, fcompile=tar, **backend.export_options(target))
    return path


def run(artifact_path: str, args_info: list, device_type: str, number: int, repeat: int,
        min_repeat_ms: int) -> list[float]:
    """Time one built candidate on random inputs; returns ``[median seconds]``."""
    import tvm

    rt_mod = tvm.runtime.load_module(artifact_path)
    device = tvm.runtime.device(device_type, 0)
    args = [candidate_argument(info, device) for info in args_info]
    _warm_up(rt_mod[rt_mod.entry_name], args, device)
    evaluator = rt_mod.time_evaluator(rt_mod.entry_name, device, number=number, repeat=repeat,
                                      min_repeat_ms=min_repeat_ms)
    device.sync()
    return [float(statistics.median(evaluator(*args).results))]


WARM_UP_S = 0.05  # about as long as a whole measurement of a 1 ms kernel


def _warm_up(func, args: list, device) -> None:
    """Run ``func`` untimed for ``WARM_UP_S``: in a fresh worker, or after serial candidates, the
    thread pool's threads are parked, and a parallel kernel's first runs would be timed at about
    serial speed (docs/measurements.md)."""
    deadline = time.perf_counter() + WARM_UP_S
    while time.perf_counter() < deadline:
        func(*args)
        device.sync()


def candidate_argument(info: list, device):
    """A tensor for one ``["TENSOR", dtype, shape]`` argument: random floats, zero integers.

    Integers are indices in Transformer tasks (token ids for ``take``); random ones read out of
    bounds and crash the candidate, so they are zero, always in range.
    """
    import numpy as np
    import tvm

    _, dtype, shape = info
    if "int" in dtype or dtype == "bool":
        array = np.zeros(shape, dtype=dtype)
    else:
        array = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return tvm.runtime.tensor(array, device)


def profile(paths: list[str], inputs_path: str, rounds: int, inferences: int) -> list[dict]:
    """Per compiled model (called as ``measure.profile.save_calls`` wrote to ``inputs_path``), each kernel's time per inference in every round and its calls per
    inference, the models taking turns (``profile``)."""
    from .profile import load_calls, profile_in_turns

    timers = profile_in_turns(paths, load_calls(inputs_path), rounds, inferences)
    return [{name: {"per_round_s": seconds, "calls": timer.calls[name]}
             for name, seconds in timer.per_round.items()} for timer in timers]


JOBS = {"ping": ping, "build": build, "run": run, "profile": profile}
