"""``compile --task seq2seq``: a translation model's three parts compiled, then checked together.

The folder's encoder, first decoder step and decoder step with past (``frontend.seq2seq``; the
last rewritten for a fixed-capacity cache, ``frontend.kv_cache``) become three range artifacts
over the same batch (sentences × beams) and source length ranges, the cache's capacity ranging
up to ``max_new_tokens``; each is validated against ONNX Runtime on its own graph, then the
generator as a whole: greedy generation on random source batches must give the tokens of the
same loop over ONNX Runtime running the folder's own files. Only then is the generator manifest
put in place (one rename); a failed part or check leaves the previous generator as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..common.results import Result
from ..errors import AutotuneError, ValidationFailed
from ..frontend.buckets import DimRange, parse_dims
from ..frontend.seq2seq import OnnxRuntimeSteps, Seq2SeqLayout, read_seq2seq
from ..runtime.generation import GenerationConfig, generate, token_ids
from ..runtime.generator import FORMAT, PART_NAMES, Translator
from .compile import CompileOptions, compile

CHECK_BATCHES = 6  # random source batches the whole generator is checked on
MIN_SAME_SENTENCES = 0.99  # the rest may differ only where two logits nearly tie


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
    rows, length = _source_range(source)
    if max_new_tokens < 1:
        raise AutotuneError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    parts_dir = manifest_path.with_suffix(".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    token = f"{time.time_ns():x}"
    with tempfile.TemporaryDirectory(prefix="autotune-seq2seq-") as work:
        paths = _part_models(layout, Path(work))
        results = {}
        try:
            for name in PART_NAMES:
                shapes = _part_shapes(name, layout, rows, length, max_new_tokens)
                results[name] = compile(paths[name], parts_dir / f"{name}-{token}.so", replace(options, shapes=shapes))
            manifest = _manifest(layout, folder, rows, length, max_new_tokens, results, manifest_path)
            validation = _check_generator(layout, manifest, manifest_path, rows, length, max_new_tokens)
        except BaseException:
            _remove_parts(parts_dir, token)
            raise
    _publish(manifest_path, {**manifest, "validation": validation})
    _remove_other_parts(parts_dir, token)
    return Seq2SeqCompileResult(manifest=str(manifest_path), parts={n: r.as_dict() for n, r in results.items()},
                                validation=validation)


def _source_range(source: str) -> tuple[DimRange, DimRange]:
    dims = parse_dims(source, f"--shape input_ids={source!r}")
    if len(dims) != 2:
        raise AutotuneError(f"--shape input_ids={source}: a source batch has 2 dims (rows x tokens), e.g. 1..8x1..64")
    return dims[0], dims[1]


def _part_models(layout: Seq2SeqLayout, work: Path) -> dict[str, Path]:
    """The ONNX file of each part: the folder's own, the step with past rewritten."""
    import onnx

    from ..frontend.kv_cache import with_fixed_capacity
    from ..frontend.onnx_file import read_model

    source = layout.part("next_step")
    rewritten = work / "decoder_with_fixed_capacity_cache.onnx"
    onnx.save(with_fixed_capacity(read_model(source), layout.layers, source), str(rewritten))
    return {"encoder": layout.part("encoder"), "first_step": layout.part("first_step"), "next_step": rewritten}


def _part_shapes(part: str, layout: Seq2SeqLayout, rows: DimRange, length: DimRange, new_tokens: int) -> dict:
    batch, src = str(rows), str(length)
    if part == "encoder":
        return {"input_ids": f"{batch}x{src}", "attention_mask": f"{batch}x{src}"}
    shapes = {"input_ids": f"{batch}x1", "encoder_attention_mask": f"{batch}x{src}"}
    if part == "first_step":
        return {**shapes, "encoder_hidden_states": f"{batch}x{src}x{layout.hidden}"}
    cache = {name: f"{batch}x{layout.heads}x{src if '.encoder.' in name else f'1..{new_tokens}'}x{layout.head_dim}"
             for name in layout.past_names()}
    return {**shapes, **cache, "cache_mask": f"{batch}x1..{new_tokens}", "beam_rows": batch}


def _manifest(layout: Seq2SeqLayout, folder, rows: DimRange, length: DimRange, new_tokens: int,
              results: dict, manifest_path: Path) -> dict:
    base = manifest_path.parent.resolve()
    return {"format": FORMAT, "model": str(Path(folder).resolve()),
            "layout": {"vocab": layout.vocab, "hidden": layout.hidden, "layers": layout.layers,
                       "heads": layout.heads, "head_dim": layout.head_dim},
            "tokens": layout.tokens,
            "ranges": {"batch": [rows.low, rows.high], "source": [length.low, length.high],
                       "max_new_tokens": new_tokens},
            "parts": {name: {"file": os.path.relpath(Path(r.artifact).resolve(), base), "sha256": r.sha256}
                      for name, r in results.items()},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _check_generator(layout: Seq2SeqLayout, manifest: dict, manifest_path: Path, rows: DimRange,
                     length: DimRange, new_tokens: int) -> dict:
    """Greedy tokens of the compiled parts against those of ONNX Runtime on the folder's files."""
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
    for batch_rows, source_length in _check_sizes(rows, length, rng):
        ids = rng.integers(0, layout.vocab, (batch_rows, source_length))
        mask = np.ones_like(ids)
        mask[1:, max(1, source_length // 2):] = 0  # sentences of different lengths in one batch
        ours = translator.generate(ids, mask, new_tokens, eos_token_id=list(config.eos_token_id),
                                   decoder_start_token_id=config.decoder_start_token_id,
                                   pad_token_id=config.pad_token_id)
        theirs = generate(reference, ids, mask, config)
        width = max(ours.shape[1], theirs.shape[1])
        same += int(np.all(_widened(ours, width, config) == _widened(theirs, width, config), axis=1).sum())
        total += batch_rows
    result = {"sentences": total, "same_tokens": same, "min_same": MIN_SAME_SENTENCES,
              "passed": same >= MIN_SAME_SENTENCES * total}
    if not result["passed"]:
        raise ValidationFailed(f"the compiled generator's greedy tokens differ from ONNX Runtime's in "
                               f"{total - same} of {total} sentences; nothing was deployed")
    return result


def _check_sizes(rows: DimRange, length: DimRange, rng) -> list[tuple[int, int]]:
    sizes = [(rows.high, length.high), (rows.low, length.low)]
    sizes += [(int(rng.integers(rows.low, rows.high + 1)), int(rng.integers(length.low, length.high + 1)))
              for _ in range(CHECK_BATCHES - len(sizes))]
    return sizes


def _widened(tokens: np.ndarray, width: int, config: GenerationConfig) -> np.ndarray:
    return np.pad(tokens, [(0, 0), (0, width - tokens.shape[1])], constant_values=config.pad_token_id)


def _publish(manifest_path: Path, manifest: dict) -> None:
    """Write the generator manifest in one rename: readers see the old one or the new one."""
    staged = manifest_path.with_name(f".{manifest_path.name}.{os.getpid()}.tmp")
    staged.write_text(json.dumps(manifest, indent=2))
    os.replace(staged, manifest_path)


def _remove_parts(parts_dir: Path, token: str) -> None:
    for path in parts_dir.glob(f"*-{token}.so*"):
        path.unlink(missing_ok=True)


def _remove_other_parts(parts_dir: Path, token: str) -> None:
    """Parts of earlier compiles of this generator, now that the manifest names the new ones."""
    for path in parts_dir.glob("*.so*"):
        if f"-{token}.so" not in path.name and path.name.split("-")[0] in PART_NAMES:
            path.unlink(missing_ok=True)
