"""A translation model's three parts as both ``tune --task seq2seq`` and ``compile --task seq2seq``
see them: the same ONNX graphs at the same shape ranges, so that the compiler finds the records
the tuner wrote.

The encoder is the folder's own file; the first decoder step writes its keys transposed, and the
decoder step with past is rewritten for a fixed-capacity cache of transposed keys
(``frontend.kv_cache``), whose capacity ranges up to ``max_new_tokens``. Every part ranges over the same rows (sentences × beams) and source lengths.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AutotuneError
from ..frontend.buckets import DimRange, parse_dims, powers_of_two
from ..frontend.seq2seq import Seq2SeqLayout


def source_range(source: str) -> tuple[DimRange, DimRange]:
    """Rows and tokens of ``input_ids``' range, e.g. ``1..8x1..64``."""
    dims = parse_dims(source, f"--shape input_ids={source!r}")
    if len(dims) != 2:
        raise AutotuneError(f"--shape input_ids={source}: a source batch has 2 dims (rows x tokens), e.g. 1..8x1..64")
    return dims[0], dims[1]


def source_of(shapes: dict) -> str:
    """The source range of ``--shape`` flags, which for a translation model name ``input_ids`` alone."""
    if set(shapes) != {"input_ids"}:
        raise AutotuneError("--task seq2seq takes one --shape, the source's: --shape input_ids=ROWSxTOKENS, "
                            "e.g. input_ids=1..8x1..64 (rows count sentences × beams)")
    return "x".join(str(dim) for dim in shapes["input_ids"])


def check_new_tokens(max_new_tokens: int) -> None:
    if max_new_tokens < 1:
        raise AutotuneError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")


def part_models(layout: Seq2SeqLayout, folder: Path, suffix: str = "") -> dict[str, Path]:
    """The ONNX file of each part: the folder's encoder, the two decoder steps rewritten for serving
    (``frontend.kv_cache``) into ``folder`` as ``first_step{suffix}.onnx`` and ``next_step{suffix}.onnx``."""
    import onnx

    from ..frontend.kv_cache import with_fixed_capacity, with_keys_transposed
    from ..frontend.onnx_file import read_model

    paths = {"encoder": layout.part("encoder")}
    for part, rewrite in (("first_step", with_keys_transposed), ("next_step", with_fixed_capacity)):
        source, paths[part] = layout.part(part), folder / f"{part}{suffix}.onnx"
        onnx.save(rewrite(read_model(source), layout.layers, source), str(paths[part]))
    return paths


def part_shapes(part: str, layout: Seq2SeqLayout, rows: DimRange, length: DimRange, new_tokens: int
                ) -> dict[str, tuple[DimRange, ...]]:
    """The shape ranges of part ``part``'s inputs. The encoder buckets the source finely (its cost
    grows with it); the decoder steps read the source only in cross-attention, so they bucket it
    at powers of two (the encoder's states are padded up to them), and their cache has the one
    capacity ``new_tokens`` (unused slots masked): a few buckets per batch size, not hundreds."""
    one, fixed = DimRange(1, 1), lambda size: DimRange(size, size)
    if part == "encoder":
        return {"input_ids": (rows, length), "attention_mask": (rows, length)}
    source = powers_of_two(length)
    shapes = {"input_ids": (rows, one), "encoder_attention_mask": (rows, source)}
    if part == "first_step":
        return {**shapes, "encoder_hidden_states": (rows, source, fixed(layout.hidden))}
    heads, head_dim = fixed(layout.heads), fixed(layout.head_dim)
    def cache(name: str) -> tuple[DimRange, ...]:  # keys transposed: [rows, heads, head_dim, length]
        length = source if ".encoder." in name else fixed(new_tokens)
        return (rows, heads, head_dim, length) if name.endswith(".key") else (rows, heads, length, head_dim)

    caches = {name: cache(name) for name in layout.past_names()}
    return {**shapes, **caches, "cache_mask": (rows, fixed(new_tokens)), "beam_rows": (rows,)}


def calls_per_generation(part: str, new_tokens: int) -> int:
    """How often generating ``new_tokens`` tokens runs ``part``: the step with past runs for every
    token after the first."""
    return max(new_tokens - 1, 1) if part == "next_step" else 1
