#!/usr/bin/env python3
"""Where a translation generator's cached decoder step spends its time, per batch size.

For each batch: the step's wall time inside the greedy loop and its compiled function called alone
(``bench.generation.step_overhead``), and the step bucket's heaviest kernels timed in place
(``measure.profile``). Prints JSON.

    python scripts/generation_steps.py translator.json --batches 1 2 4 8 --src-len 32 --top 8
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def kernels_in_place(step_so: Path, batch: int, source: int, top: int) -> list[dict]:
    """The ``top`` heaviest kernels of the cached step's bucket for ``batch`` × ``source``."""
    from autotune.frontend.buckets import ShapePlan
    from autotune.frontend.inputs import manifest_inputs
    from autotune.measure.profile import profile_in_turns
    from autotune.runtime.loader import load

    manifest = load(step_so).manifest
    plan = ShapePlan.from_dict(manifest["shape_plan"])
    sizes = {d: next(r for r in rungs if r >= {"batch_size": batch}.get(d, source))
             for d, rungs in plan.ladders.items()}
    specs, inputs = manifest_inputs(manifest, sizes)
    bucket = next(b for b in plan.buckets() if b.dims == sizes)
    (timer,) = profile_in_turns([str(step_so)], {bucket.function: [inputs[s.name] for s in specs]}, 3, 3)
    rows = sorted(((statistics.median(v), k, timer.calls[k]) for k, v in timer.per_round.items()), reverse=True)
    return [{"kernel": k, "us": round(s * 1e6, 1), "calls": c} for s, k, c in rows[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("generator", type=Path, help="a generator manifest (compile --task seq2seq)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--src-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--top", type=int, default=8, help="kernels listed per batch")
    args = parser.parse_args()
    import numpy as np
    import tvm.relax  # noqa: F401  (the compiler, loaded before the runtime-only loader runs)

    import autotune
    from autotune.bench.generation import step_overhead

    translator = autotune.load(args.generator)
    step_so = args.generator.parent / translator.manifest["parts"]["next_step"]["file"]
    rng = np.random.default_rng(0)
    report = []
    for batch in args.batches:
        step = step_overhead(translator, args.src_len, args.new_tokens, rng, batch)
        report.append({"batch": batch, **step.as_dict(),
                       "kernels_in_place": kernels_in_place(step_so, batch, args.src_len, args.top)})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
