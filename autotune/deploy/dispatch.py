"""Which bucket of a range artifact serves which shapes: the fastest covering bucket, measured.

A call goes to the smallest bucket covering its shape, unless a larger bucket that also covers
it ran faster here (a heuristic schedule can suit 128 rows better than 112): then that bucket
takes the smaller one's calls (``ShapePlan.faster``). Every bucket is timed once on the staged
artifact, the buckets taking turns round by round.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from ..common.turns import turn_order
from ..frontend.buckets import ShapePlan
from ..frontend.importer import ImportedModel

ROUNDS = 5  # timed calls of each bucket, after one warm-up call
FASTER_BY = 0.05  # a larger bucket takes over only where it is this much faster: not on noise


def bucket_seconds(so_path: Path, model: ImportedModel) -> dict[str, float]:
    """Each bucket's median time per call on inputs the model accepts, at the bucket's shape."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from ..frontend.ranged import calls_per_entry

    vm = VirtualMachine(tvm.runtime.load_module(str(so_path)), tvm.cpu())
    calls = {name: [tvm.runtime.tensor(a) for a in args] for name, args in calls_per_entry(model).items()}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for turn in range(ROUNDS + 1):
        for name in turn_order(list(calls), turn):
            started = time.perf_counter()
            vm[name](*calls[name])
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(times[1:]) for name, times in seconds.items()}


def faster_buckets(plan: ShapePlan, seconds: dict[str, float]) -> dict[str, dict[str, int]]:
    """Per bucket that a larger covering bucket beats by ``FASTER_BY``, the fastest such bucket."""
    faster = {}
    for bucket in plan.buckets():
        best = min(plan.covering(bucket), key=lambda b: seconds[b.function])
        if seconds[best.function] < (1 - FASTER_BY) * seconds[bucket.function]:
            faster[bucket.function] = best.dims
    return faster
