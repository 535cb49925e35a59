#!/usr/bin/env python3
"""What ``autotune.load``'s call adds to the model's own run, and print JSON.

A service calls ``model(inputs)``: the loader checks the inputs, hands them to the VM and the
outputs back as numpy arrays. This script times, in turns on the same inputs, that call and the
VM's entry function alone on arguments prepared once, and reports the medians and their
difference: the Python each call costs. Run it on a quiet machine; the difference is a fraction of a
millisecond against a model's milliseconds.

    python scripts/call_overhead.py minilm.so --rounds 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from autotune.errors import AutotuneError


def overhead(path: Path, rounds: int) -> dict:
    """Median seconds of a call through the loader and of the VM alone, the two taking turns."""
    from autotune.frontend.inputs import manifest_inputs
    from autotune.runtime import load

    model = load(path)
    _, inputs = manifest_inputs(model.manifest, None)
    function, arguments, _ = model._arguments(inputs)
    entry = model._vm()[function]
    runs = {"call": lambda: model(inputs), "vm_alone": lambda: entry(*arguments)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    median_ms = {name: statistics.median(samples) * 1e3 for name, samples in times.items()}
    return {"artifact": str(path), "rounds": rounds, "call_p50_ms": median_ms["call"],
            "vm_alone_p50_ms": median_ms["vm_alone"], "overhead_ms": median_ms["call"] - median_ms["vm_alone"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--rounds", type=int, default=300, help="calls of each kind, in turns")
    args = parser.parse_args()
    try:
        print(json.dumps(overhead(args.artifact, args.rounds), indent=2))
    except AutotuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
