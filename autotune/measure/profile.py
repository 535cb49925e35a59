"""Time every kernel of compiled models in place: inside the running model, not alone.

A kernel timed alone (as the search measures it) sees warm caches and no neighbours; inside the
model its weights come from memory and its inputs from the kernel before. Several builds of a
model take turns round by round (this machine's speed drifts), and each round yields every
kernel's time per inference. The instrument is native (``instrument``): a clock read before and
after each call, well under a microsecond, so even a model of 3-µs kernels sums to its plain time.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

import numpy as np

from ..common.turns import turn_order
from .instrument import kernel_timer, parse_totals


def task_name(kernel: str) -> str:
    """The task a kernel comes from: compile renames kernels whose weights it pre-packs."""
    return kernel.removesuffix("_prepacked")


def save_calls(path: str, calls: dict[str, list[np.ndarray]]) -> None:
    """Write the arguments of each entry function to call (``KernelTimer``) as an ``.npz``."""
    np.savez(path, **{f"{function}.{i}": a for function, args in calls.items() for i, a in enumerate(args)})


def load_calls(path: str) -> dict[str, list[np.ndarray]]:
    """The calls ``save_calls`` wrote."""
    calls: dict[str, list[np.ndarray]] = defaultdict(list)
    with np.load(path) as data:
        for key in sorted(data.files, key=lambda k: (k.rpartition(".")[0], int(k.rpartition(".")[2]))):
            calls[key.rpartition(".")[0]].append(data[key])
    return dict(calls)


class KernelTimer:
    """One compiled model's VM with an instrument that sums each kernel's time per inference.

    An inference calls each entry function of ``calls`` once with its arguments: ``main``, or
    every bucket of a range artifact.
    """

    def __init__(self, so_path: str, calls: dict[str, list[np.ndarray]]):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.vm = VirtualMachine(tvm.runtime.load_module(so_path), tvm.cpu())
        self.calls_args = [(function, [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args])
                           for function, args in calls.items()]
        self.per_round: dict[str, list[float]] = defaultdict(list)
        self.calls: dict[str, int] = {}
        self.wall: list[float] = []
        self.instrumented_wall: list[float] = []

    def round(self, inferences: int) -> None:
        """``inferences`` timed inferences run plainly (wall time), then as many instrumented."""
        for _ in range(inferences):
            started = time.perf_counter()
            self._infer()
            self.wall.append(time.perf_counter() - started)
        timer = kernel_timer()
        timer["take"]()  # whatever an earlier, interrupted round left
        self.vm.set_instrument(timer["instrument"]())
        for _ in range(inferences):
            started = time.perf_counter()
            self._infer()
            self.instrumented_wall.append(time.perf_counter() - started)
        self.vm.set_instrument(None)  # an instrument left set is called on every later inference
        totals: dict[str, list] = defaultdict(lambda: [0.0, 0])
        for name, (seconds, calls) in parse_totals(timer["take"]()).items():
            totals[task_name(name)][0] += seconds
            totals[task_name(name)][1] += calls
        for name, (seconds, calls) in totals.items():
            self.per_round[name].append(seconds / inferences)
            self.calls[name] = calls // inferences

    def _infer(self) -> None:
        for function, args in self.calls_args:
            self.vm[function](*args)

    def reset(self) -> None:
        self.per_round.clear()
        self.wall.clear()
        self.instrumented_wall.clear()


def profile_in_turns(paths: list[str], calls: dict[str, list[np.ndarray]], rounds: int, inferences: int
                     ) -> list[KernelTimer]:
    """Each model's timer after one warm-up round and ``rounds`` rounds, the order rotating; an
    inference makes ``calls`` (entry function → arguments)."""
    timers = [KernelTimer(path, calls) for path in paths]
    for timer in timers:
        timer.round(1)
        timer.reset()
    for index in range(rounds):
        for timer in turn_order(timers, index):
            timer.round(inferences)
    return timers


def summary(timer: KernelTimer) -> dict:
    """Wall p50 and each kernel's median time per inference and calls per inference."""
    kernels = {name: {"us": round(1e6 * statistics.median(v), 1), "calls": timer.calls[name]}
               for name, v in timer.per_round.items()}
    return {"wall_p50_ms": round(1e3 * statistics.median(timer.wall), 3),
            "kernel_sum_ms": round(sum(k["us"] for k in kernels.values()) / 1e3, 3),
            "kernels": kernels}
