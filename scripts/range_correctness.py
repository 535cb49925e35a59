#!/usr/bin/env python3
"""A range artifact against ONNX Runtime on unpadded inputs at odd shapes (JSON).

For each ``batch x seq`` of ``--shapes`` (``batch x seq x seq`` for a model of two sequences, e.g.
a translation model's source and target, in the order its inputs name them), random ids within each input's table and an attention
mask whose rows end in padding of different lengths (a batch of sentences of several lengths);
ONNX Runtime runs the ONNX file on exactly those inputs, the artifact pads them to its bucket.
Prints each shape's max relative error (to the reference's largest magnitude) and whether every
element is within ``rtol`` 1e-4 (``atol`` 1e-5):

    python scripts/range_correctness.py minilm_range.so tuning_logs/models/all-MiniLM-L6-v2.onnx \\
        --shapes 1x1,1x7,1x77,2x9,3x50,5x128,8x128
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import autotune
from autotune.frontend.inputs import padded_mask
from autotune.frontend.onnx_file import onnxruntime_session

RTOL, ATOL = 1e-4, 1e-5


def feeds_at(model, values: list[int], rng) -> dict[str, np.ndarray]:
    """Inputs for every input of the artifact with its ranged dims at ``values`` (in the order the
    inputs name the dims)."""
    plan = model.plan
    dims = list(dict.fromkeys(d for entry in plan.inputs.values() for d in entry if isinstance(d, str)))
    sizes = dict(zip(dims, values))
    feeds = {}
    for spec in model.inputs:
        shape = plan.shape_of(spec["name"], sizes)
        if "mask" in spec["name"]:
            feeds[spec["name"]] = padded_mask(shape, spec["dtype"])
        else:
            high = spec["index_range"][1] if "index_range" in spec else 1
            feeds[spec["name"]] = rng.integers(0, high + 1, shape).astype(spec["dtype"])
    return feeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("model")
    parser.add_argument("--shapes", default="1x1,1x7,1x77,2x9,3x50,5x128,8x128")
    args = parser.parse_args()
    model = autotune.load(args.artifact)
    session = onnxruntime_session(args.model, 2)
    rng = np.random.default_rng(0)
    rows = []
    for text in args.shapes.split(","):
        feeds = feeds_at(model, [int(v) for v in text.split("x")], rng)
        ours = model(feeds)
        names = list(ours)
        reference = dict(zip(names, session.run(names, feeds)))
        rel = max(float(np.abs(ours[n] - reference[n]).max() / np.abs(reference[n]).max()) for n in names)
        close = all(np.allclose(ours[n], reference[n], rtol=RTOL, atol=ATOL) for n in names)
        rows.append({"shape": text, "max_rel_err": rel, "allclose": close})
    print(json.dumps({"artifact": args.artifact, "rtol": RTOL, "atol": ATOL, "shapes": rows,
                      "all_within": all(r["allclose"] and r["max_rel_err"] <= RTOL for r in rows)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
