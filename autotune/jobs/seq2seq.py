"""``compile --task seq2seq``: a translation model's three parts compiled, then checked together.

The folder's encoder, first decoder step and decoder step with past (``frontend.seq2seq``; the
last rewritten for a fixed-capacity cache, ``frontend.kv_cache``) become three range artifacts
over the same batch (sentences × beams) and source length ranges, the cache's capacity ranging
up to ``max_new_tokens``; each is validated against ONNX Runtime on its own graph (in fp32 by
relative error and cosine, ``tolerances.GENERATOR_PART``), then the
generator as a whole: greedy generation on random source batches must give the tokens of the
same loop over ONNX Runtime running the folder's own files. Only then is the generator manifest
put in place (one rename); a failed part or check leaves the previous generator as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..common.results import Result
from ..common.tolerances import GENERATOR_PART
from ..errors import AutotuneError, ValidationFailed
from ..frontend.buckets import DimRange
from ..frontend.seq2seq import OnnxRuntimeSteps, Seq2SeqLayout, read_seq2seq
from ..runtime.generation import NEAR_TIE, GenerationConfig, divergences, generate, token_ids
from ..runtime.generator import FORMAT, PART_NAMES, Translator
from ..runtime.manifest import manifest_path as artifact_manifest
from .compile import CompileOptions, compile
from .generator_parts import check_new_tokens, part_models, part_shapes, source_range

CHECK_BATCHES = 6  # random source batches the whole generator is checked on
MIN_SAME_SENTENCES = 0.99  # fp32: the rest may differ only where two logits nearly tie
# bf16 and int8 move logits by more than a near tie: a sentence whose two best tokens are close may
# take the other one, after which the rest of it differs; the share of identical sentences is judged
MIN_SAME_SENTENCES_REDUCED = 0.8


@dataclass
class Seq2SeqCompileResult(Result):
    """The generator manifest, each part's compile result, and the whole generator's check."""

    manifest: str
    parts: dict[str, dict]
    validation: dict


def compile_seq2seq(folder: str | Path, output: str | Path, source: str, max_new_tokens: int,
                    options: CompileOptions = CompileOptions()) -> Seq2SeqCompileResult:
    """Compile the seq2seq export in ``folder`` for sources ``source`` (``input_ids``' range,
    e.g. ``1..8x1..64``: rows, counting beams, × tokens) and up to ``max_new_tokens`` tokens,
    and write the generator manifest ``output`` (``NAME.json``) with its parts in ``NAME.parts/``."""
    layout = read_seq2seq(folder)
    manifest_path = Path(output)
    if manifest_path.suffix != ".json":
        raise AutotuneError(f"-o {output}: a translation model is written as its generator manifest, "
                            "NAME.json (its parts go to NAME.parts/)")
    rows, length = source_range(source)
    check_new_tokens(max_new_tokens)
    if options.precision == "fp32" and options.max_rel_err is None and options.min_cosine is None:
        options = replace(options, max_rel_err=GENERATOR_PART[0], min_cosine=GENERATOR_PART[1])
    parts_dir = manifest_path.with_suffix(".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    token = f"{time.time_ns():x}"
    results = {}
    try:  # the rewritten steps stay beside their parts: ``profile`` reads a part's model
        paths = part_models(layout, parts_dir, f"-{token}")
        for name in PART_NAMES:
            shapes = part_shapes(name, layout, rows, length, max_new_tokens)
            results[name] = compile(paths[name], parts_dir / f"{name}-{token}.so", replace(options, shapes=shapes))
        manifest = _manifest(layout, folder, rows, length, max_new_tokens, results, manifest_path)
        validation = _check_generator(layout, manifest, manifest_path, rows, length, max_new_tokens,
                                      options.precision)
    except BaseException:
        _remove_parts(parts_dir, token)
        raise
    _publish(manifest_path, {**manifest, "validation": validation})
    _remove_other_parts(parts_dir, token)
    return Seq2SeqCompileResult(manifest=str(manifest_path), parts={n: r.as_dict() for n, r in results.items()},
                                validation=validation)


def _manifest(layout: Seq2SeqLayout, folder, rows: DimRange, length: DimRange, new_tokens: int,
              results: dict, manifest_path: Path) -> dict:
    base = manifest_path.parent.resolve()
    return {"format": FORMAT, "model": str(Path(folder).resolve()),
            "layout": {"vocab": layout.vocab, "hidden": layout.hidden, "layers": layout.layers,
                       "heads": layout.heads, "head_dim": layout.head_dim},
            "tokens": layout.tokens,
            "ranges": {"batch": [rows.low, rows.high], "source": [length.low, length.high],
                       "max_new_tokens": new_tokens},
            "parts": {name: {"file": os.path.relpath(Path(r.artifact).resolve(), base), "sha256": r.sha256,
                             "manifest_sha256": hashlib.sha256(artifact_manifest(r.artifact).read_bytes()).hexdigest()}
                      for name, r in results.items()},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _check_generator(layout: Seq2SeqLayout, manifest: dict, manifest_path: Path, rows: DimRange,
                     length: DimRange, new_tokens: int, precision: str) -> dict:
    """Greedy tokens of the compiled parts against those of ONNX Runtime on the folder's files: in
    fp32 at least ``MIN_SAME_SENTENCES`` identical and every difference a near tie; in reduced
    precision at least ``MIN_SAME_SENTENCES_REDUCED`` identical."""
    staged = manifest_path.with_name(manifest_path.name + ".checking")
    staged.write_text(json.dumps(manifest))
    try:
        translator = Translator(staged)
    finally:
        staged.unlink()
    reference = OnnxRuntimeSteps(layout, 1)
    tokens = layout.tokens
    config = GenerationConfig(new_tokens, int(tokens.get("decoder_start_token_id", 0)),
                              token_ids(tokens.get("eos_token_id", 1)), int(tokens.get("pad_token_id", 0)))
    rng = np.random.default_rng(0)
    same = total = 0
    ties: list[dict] = []
    for batch_rows, source_length in _check_sizes(rows, length, rng):
        ids = rng.integers(0, layout.vocab, (batch_rows, source_length))
        mask = np.ones_like(ids)
        mask[1:, max(1, source_length // 2):] = 0  # sentences of different lengths in one batch
        ours = translator.generate(ids, mask, new_tokens, eos_token_id=list(config.eos_token_id),
                                   decoder_start_token_id=config.decoder_start_token_id,
                                   pad_token_id=config.pad_token_id)
        theirs = generate(reference, ids, mask, config)
        parted = divergences(reference, ids, mask, ours, theirs, config.pad_token_id)
        ties += [{"source": [batch_rows, source_length], **asdict(d)} for d in parted]
        same += batch_rows - len(parted)
        total += batch_rows
    explained = sum(t["near_tie"] for t in ties)
    reduced = precision != "fp32"
    min_same = MIN_SAME_SENTENCES_REDUCED if reduced else MIN_SAME_SENTENCES
    result = {"sentences": total, "same_tokens": same, "min_same": min_same,
              "differences": ties, "differences_near_ties": explained,
              "passed": same >= min_same * total and (reduced or explained == len(ties))}
    if not result["passed"]:
        raise ValidationFailed(f"the compiled generator's ({precision}) greedy tokens differ from ONNX Runtime "
                               f"fp32's in {total - same} of {total} sentences ({len(ties) - explained} not at a "
                               f"near-tie of logits, within {NEAR_TIE:g} of the largest; at least {min_same:.0%} "
                               f"must be identical); nothing was deployed")
    return result


def _check_sizes(rows: DimRange, length: DimRange, rng) -> list[tuple[int, int]]:
    sizes = [(rows.high, length.high), (rows.low, length.low)]
    sizes += [(int(rng.integers(rows.low, rows.high + 1)), int(rng.integers(length.low, length.high + 1)))
              for _ in range(CHECK_BATCHES - len(sizes))]
    return sizes


def _publish(manifest_path: Path, manifest: dict) -> None:
    """Write the generator manifest in one rename: readers see the old one or the new one."""
    staged = manifest_path.with_name(f".{manifest_path.name}.{os.getpid()}.tmp")
    staged.write_text(json.dumps(manifest, indent=2))
    os.replace(staged, manifest_path)


def _remove_parts(parts_dir: Path, token: str) -> None:
    for path in parts_dir.glob(f"*-{token}.*"):
        path.unlink(missing_ok=True)


def _remove_other_parts(parts_dir: Path, token: str) -> None:
    """Parts of earlier compiles of this generator, now that the manifest names the new ones."""
    for path in parts_dir.glob("*-*.*"):
        if f"-{token}." not in path.name and path.name.split("-")[0] in PART_NAMES:
            path.unlink(missing_ok=True)
