"""A translation model as users export it: the seq2seq folder layout of Hugging Face Optimum.

``encoder_model.onnx`` (``input_ids``, ``attention_mask`` → ``last_hidden_state``),
``decoder_model.onnx`` (the first step: ``input_ids``, ``encoder_attention_mask``,
``encoder_hidden_states`` → ``logits`` and ``present.{i}.{decoder,encoder}.{key,value}``) and
``decoder_with_past_model.onnx`` (every later step: ``input_ids``, ``encoder_attention_mask`` and
``past_key_values.{i}.*`` → ``logits`` and ``present.{i}.decoder.*``), with the token ids of
``config.json``/``generation_config.json`` when the folder has them. ``read_seq2seq`` checks that
the three parts fit together, one clear error naming the part and the size otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AutotuneError

PARTS = {"encoder": "encoder_model.onnx", "first_step": "decoder_model.onnx",
         "next_step": "decoder_with_past_model.onnx"}
_ROLES = {"encoder": "the encoder", "first_step": "the first decoder step",
          "next_step": "the decoder step with past keys and values"}
_CACHE = re.compile(r"^(past_key_values|present)\.(\d+)\.(decoder|encoder)\.(key|value)$")
CONFIG_FILES = ("config.json", "generation_config.json")  # read as JSON, never executed


@dataclass(frozen=True)
class Seq2SeqLayout:
    """The three parts of a seq2seq export and the sizes they agree on."""

    folder: Path
    vocab: int
    hidden: int
    layers: int
    heads: int
    head_dim: int
    tokens: dict[str, object] = field(default_factory=dict)  # decoder_start/eos/pad token ids known

    def part(self, name: str) -> Path:
        """The ONNX file of part ``name`` (a key of ``PARTS``)."""
        return self.folder / PARTS[name]

    def past_names(self) -> list[str]:
        """The cache inputs of the decoder step with past, in the order of the layout."""
        return [f"past_key_values.{layer}.{side}.{kind}" for layer in range(self.layers)
                for side in ("decoder", "encoder") for kind in ("key", "value")]


def read_seq2seq(folder: str | Path) -> Seq2SeqLayout:
    """The layout of the seq2seq export in ``folder``; ``AutotuneError`` naming the part at fault
    for a missing part or parts whose vocabularies, hidden sizes or caches disagree."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AutotuneError(f"{folder}: not a folder; a translation model is a folder holding "
                            f"{', '.join(PARTS.values())} (Hugging Face Optimum's seq2seq layout)")
    for name, file in PARTS.items():
        if not (folder / file).is_file():
            raise AutotuneError(f"{folder}: missing {file} ({_ROLES[name]}); export with `optimum-cli "
                                "export onnx --task text2text-generation-with-past` or "
                                "`scripts/export_models.py marian`")
    shapes = {name: _interface(folder / file) for name, file in PARTS.items()}
    hidden = _agreed("hidden size", [("encoder", "last_hidden_state", 2),
                                     ("first_step", "encoder_hidden_states", 2)], shapes, folder)
    vocab = _agreed("vocabulary", [("first_step", "logits", 2), ("next_step", "logits", 2)], shapes, folder)
    layers, heads, head_dim = _cache_sizes(shapes, folder)
    return Seq2SeqLayout(folder, vocab, hidden, layers, heads, head_dim, _token_ids(folder))


def _interface(path: Path) -> dict[str, list[int | str]]:
    """Each graph input's and output's dims (a size, or the name of a dynamic dim)."""
    from .onnx_file import graph_inputs, read_model

    model = read_model(path)
    values = [*graph_inputs(model), *model.graph.output]
    return {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in v.type.tensor_type.shape.dim] for v in values}


def _size(shapes: dict, part: str, tensor: str, dim: int, folder: Path) -> int:
    dims = shapes[part].get(tensor)
    if dims is None:
        raise AutotuneError(f"{folder / PARTS[part]} ({_ROLES[part]}) has no tensor {tensor!r} "
                            f"(it has {', '.join(shapes[part])})")
    if len(dims) <= dim or not isinstance(dims[dim], int) or dims[dim] <= 0:
        raise AutotuneError(f"{folder / PARTS[part]}: dim {dim} of {tensor!r} is {dims}, not a fixed size")
    return dims[dim]


def _agreed(what: str, where: list[tuple[str, str, int]], shapes: dict, folder: Path) -> int:
    sizes = [(part, tensor, _size(shapes, part, tensor, dim, folder)) for part, tensor, dim in where]
    if len({size for _, _, size in sizes}) > 1:
        found = "; ".join(f"{PARTS[part]} {tensor!r}: {size}" for part, tensor, size in sizes)
        raise AutotuneError(f"{folder}: the parts disagree on the {what} ({found}): they are not parts "
                            "of one model")
    return sizes[0][2]


def _cache_sizes(shapes: dict, folder: Path) -> tuple[int, int, int]:
    """Layers, heads and head size of the KV cache the first step writes and the next step reads."""
    written = _cache_entries(shapes["first_step"], "present")
    read = _cache_entries(shapes["next_step"], "past_key_values")
    if not written or written.keys() != read.keys():
        raise AutotuneError(f"{folder}: {PARTS['first_step']} writes the cache entries "
                            f"{sorted(written) or 'none'}, but {PARTS['next_step']} reads "
                            f"{sorted(read) or 'none'}: they are not steps of one decoder")
    for key, dims in read.items():
        if (dims[1], dims[3]) != (written[key][1], written[key][3]):
            raise AutotuneError(f"{folder}: cache entry {'.'.join(map(str, key))} has heads × head size "
                                f"{written[key][1]}×{written[key][3]} in {PARTS['first_step']} but "
                                f"{dims[1]}×{dims[3]} in {PARTS['next_step']}")
    layers = 1 + max(layer for layer, _, _ in read)
    sizes = {(dims[1], dims[3]) for dims in read.values()}
    if len(sizes) != 1 or not all(isinstance(v, int) and v > 0 for v in next(iter(sizes))):
        raise AutotuneError(f"{folder}: the cache entries of {PARTS['next_step']} have heads × head size "
                            f"{sorted(map(str, sizes))}: one fixed size for every layer expected")
    heads, head_dim = sizes.pop()
    return layers, heads, head_dim


def _cache_entries(interface: dict, prefix: str) -> dict[tuple[int, str, str], list]:
    entries = {}
    for name, dims in interface.items():
        found = _CACHE.match(name)
        if found and found[1] == prefix and len(dims) == 4:
            entries[(int(found[2]), found[3], found[4])] = dims
    return entries


def _token_ids(folder: Path) -> dict[str, object]:
    """decoder_start, eos and pad token ids from the folder's configs (generation_config wins)."""
    tokens: dict[str, object] = {}
    for file in CONFIG_FILES:
        path = folder / file
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise AutotuneError(f"{path}: not a JSON config ({err})") from None
        for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
            if isinstance(config.get(key), (int, list)):
                tokens[key] = config[key]
    return tokens


class OnnxRuntimeSteps:
    """The three parts of ``layout`` run by ONNX Runtime: the reference that generated tokens are
    checked against and the peer they are timed against (``runtime.generation.Seq2SeqSteps``)."""

    def __init__(self, layout: Seq2SeqLayout, threads: int):
        from .onnx_file import onnxruntime_session

        self._sessions = {name: onnxruntime_session(layout.part(name), threads) for name in PARTS}
        self._written = [o.name for o in self._sessions["first_step"].get_outputs()[1:]]
        self._grown = [o.name for o in self._sessions["next_step"].get_outputs()[1:]]

    def encode(self, input_ids, attention_mask) -> dict:
        (hidden,) = self._sessions["encoder"].run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        return {"encoder_hidden_states": hidden, "encoder_attention_mask": attention_mask}

    def first_step(self, tokens, encoded: dict):
        logits, *cache = self._sessions["first_step"].run(None, {"input_ids": tokens, **encoded})
        return logits[:, -1], {_past(name): value for name, value in zip(self._written, cache)}

    def next_step(self, tokens, encoded: dict, cache: dict):
        feed = {"input_ids": tokens, "encoder_attention_mask": encoded["encoder_attention_mask"], **cache}
        logits, *grown = self._sessions["next_step"].run(None, feed)
        return logits[:, -1], {**cache, **{_past(name): value for name, value in zip(self._grown, grown)}}

    def select(self, state: dict, rows):
        return {name: value[rows] for name, value in state.items()}


def _past(present_name: str) -> str:
    return present_name.replace("present.", "past_key_values.", 1)
