"""``autotune run``: an artifact on your own inputs (or random ones), its outputs saved (tvmc's verb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _summary(name: str, array: np.ndarray) -> dict:
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    return {"output": name, "shape": list(array.shape), "dtype": str(array.dtype),
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "mean": float(finite.mean()) if finite.size else None,
            "non_finite": int(array.size - finite.size)}


def run_run(args) -> dict:
    from ..errors import AutotuneError
    from ..frontend.inputs import inputs_from_file, random_inputs
    from ..runtime.loader import load
    from .args import table

    model = load(args.artifact, expected_sha256=args.sha256, public_key=args.public_key)
    specs = model.manifest.input_specs()
    if args.inputs and args.random:
        raise AutotuneError("give --inputs X.npz or --random, not both")
    if not args.inputs and not args.random:
        raise AutotuneError("give the inputs: --inputs X.npz (one array per input name), or --random")
    inputs = inputs_from_file(args.inputs, specs) if args.inputs else random_inputs(specs, seed=args.seed)
    outputs = model(inputs)
    if args.outputs:
        Path(args.outputs).parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.outputs, **outputs)
    rows = [_summary(name, array) for name, array in outputs.items()]
    if not args.json:
        print(table(rows, ["output", "shape", "dtype", "min", "max", "mean", "non_finite"]))
        if args.outputs:
            print(f"wrote {args.outputs}")
    return {"artifact": args.artifact, "outputs": rows, "saved": args.outputs}


def add_run(sub) -> None:
    p = sub.add_parser("run", help="run an artifact on inputs from an .npz (or random ones), save its outputs")
    p.add_argument("artifact", help="compiled .so (with its manifest beside it)")
    p.add_argument("--inputs", metavar="X.npz", help="one array per input name")
    p.add_argument("--random", action="store_true", help="random inputs the model accepts instead")
    p.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    p.add_argument("--outputs", metavar="Y.npz", help="save the outputs here, one array per output name")
    p.add_argument("--sha256", help="refuse the artifact unless it has this hash")
    p.add_argument("--public-key", help="refuse the artifact unless it is signed by this Ed25519 key")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_run)
