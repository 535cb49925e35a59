#!/usr/bin/env python3
"""Tokens of a compiled translation generator against transformers' own ``generate``.

Exports a small Marian-style model (random weights, ``export_models.marian_model``) in Optimum's
layout, compiles it with ``autotune compile --task seq2seq``, then generates on random source
batches of mixed lengths (ids up to the vocabulary's last) greedy and with beams, and prints JSON:
sentences compared and how many were token for token the same as transformers' ``generate``;
where greedy parted, the position and the gap between the two tokens' logits (ONNX Runtime's,
given the common prefix), flagged ``near_tie`` within ``runtime.generation.NEAR_TIE``.
Needs the export extra (torch, transformers).

    python scripts/generation_correctness.py --out /tmp/gen-check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from autotune.frontend.seq2seq import OnnxRuntimeSteps, read_seq2seq
from autotune.runtime.generation import divergences

sys.path.insert(0, str(Path(__file__).parent))
from export_models import MARIAN_EOS, MARIAN_PAD, export_marian, marian_model  # noqa: E402


def _sentence(row: list[int]) -> list[int]:
    return row[: row.index(MARIAN_EOS, 1) + 1] if MARIAN_EOS in row[1:] else row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the export and the generator")
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()
    import torch

    import autotune

    model = marian_model(vocab=1000, d_model=128, layers=2, heads=4, ffn=256)
    folder = export_marian(args.out, 16, model=model)
    manifest = args.out / "translator.json"
    subprocess.run([sys.executable, "-m", "autotune.cli", "compile", str(folder), "--task", "seq2seq",
                    "--shape", "input_ids=1..4x1..16", "--max-new-tokens", str(args.max_new_tokens),
                    "-o", str(manifest), "--db", f"sqlite:///{args.out / 'tuning.db'}", "-q"], check=True)
    translator = autotune.load(manifest)
    reference = OnnxRuntimeSteps(read_seq2seq(folder), 1)  # the logits a difference is judged by
    rng = np.random.default_rng(0)
    counts = {beams: {"sentences": 0, "same": 0} for beams in (1, 2, 4)}
    for _ in range(args.batches):
        for beams, count in counts.items():
            batch = int(rng.integers(1, 4 // beams + 1))
            ids = rng.integers(2, 1000, (batch, int(rng.integers(1, 17))))
            ids[0, 0] = 999  # the vocabulary's last id
            mask = np.ones_like(ids)
            mask[1:, max(1, ids.shape[1] // 2):] = 0
            ours = translator.generate(ids, mask, num_beams=beams)
            with torch.no_grad():
                theirs = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                        max_new_tokens=args.max_new_tokens, num_beams=beams,
                                        do_sample=False).numpy()
            same = [_sentence(a) == _sentence(b) for a, b in zip(ours.tolist(), theirs.tolist())]
            count["sentences"] += len(same)
            count["same"] += sum(same)
            if beams == 1 and not all(same):  # where greedy parted: a near-tie of the reference's logits?
                parted = divergences(reference, ids, mask, _ended(ours), _ended(theirs), MARIAN_PAD)
                count.setdefault("differences", []).extend(asdict(d) for d in parted)
    print(json.dumps({"greedy" if b == 1 else f"beams_{b}": c for b, c in counts.items()}))


def _ended(tokens: np.ndarray) -> np.ndarray:
    """Each row padded after its first end of sentence (transformers keeps the width of the batch)."""
    out = np.full_like(tokens, MARIAN_PAD)
    for row, sentence in enumerate(tokens.tolist()):
        kept = _sentence(sentence)
        out[row, :len(kept)] = kept
    return out


if __name__ == "__main__":
    main()
