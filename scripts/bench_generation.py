#!/usr/bin/env python3
"""Translation generation, end to end: tokens per second of a compiled generator against ONNX
Runtime running the same greedy (or beam) loop over the same ONNX files, systems taking turns.

Exports the Marian-sized model of ``export_models.py marian`` (random weights; the export extra)
unless ``--model DIR`` names a seq2seq folder, optionally tunes it (``--tune 20m``: one
``tune --task seq2seq`` job), compiles the generator (kept in ``--out``: a rerun with the same
flags reuses it), and prints JSON: per batch × source length the p50/p90/p95/p99 of a whole
``generate`` call, sentences/s and tokens/s of both systems, their ratio, whether they chose the
same tokens, and at batch 1 a cached step's share outside its kernels; plots beside it.

    python scripts/bench_generation.py --out /tmp/gen --tune 20m --batches 1 4 8 --src-lens 16 32 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def _autotune(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "autotune.cli", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the export, database, generator, plots")
    parser.add_argument("--model", type=Path, help="a seq2seq folder (default: export the Marian-sized model)")
    parser.add_argument("--tune", metavar="DURATION", help="tune for this long first (default: heuristic build)")
    parser.add_argument("--source", default="1..8x1..64", help="the compiled source range (rows x tokens)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--src-lens", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--beams", type=int, default=1)
    parser.add_argument("--count", type=int, default=10, help="generate calls per system and point")
    args = parser.parse_args()
    import autotune

    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.model
    if folder is None:
        from export_models import export_marian

        folder = args.out / "marian"
        if not (folder / "decoder_with_past_model.onnx").is_file():
            folder = export_marian(args.out)
    build = "tuned" if args.tune else "heuristic"
    db = f"sqlite:///{args.out / f'{build}.db'}"
    generator = args.out / build / "translator.json"
    shape = ["--shape", f"input_ids={args.source}", "--max-new-tokens", str(args.new_tokens), "--db", db]
    if args.tune and not generator.is_file():
        _autotune("tune", str(folder), "--task", "seq2seq", *shape, "--time-budget", args.tune, "-q")
    if not generator.is_file():
        _autotune("compile", str(folder), "--task", "seq2seq", *shape, "-o", str(generator), "-q")
    plots = args.out / "plots" / (build if args.beams == 1 else f"{build}_beams{args.beams}")
    result = autotune.bench_generate(generator, args.batches, args.src_lens, args.new_tokens, args.beams,
                                     count=args.count, model=folder, plot_dir=plots)
    print(json.dumps({"build": build, "generator": str(generator), **result.as_dict()}, indent=1))


if __name__ == "__main__":
    main()
