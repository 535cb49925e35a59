"""A deployed translation model: three compiled parts under one manifest, and ``generate``.

``compile --task seq2seq`` writes ``NAME.json`` (the generator manifest, what ``load`` takes) and
the parts in ``NAME.parts/``: the encoder, the first decoder step and the decoder step with a
fixed-capacity KV cache (``frontend.kv_cache``), each a range artifact with its own manifest. The
generator manifest pins every part's sha256, so a part that changed is refused at load, and it
is replaced in one rename, so a reader sees the old parts or the new ones, never a mix.

Between steps the cache stays in device tensors: each step writes the new token's keys and values
into its slot and reorders beams by ``beam_rows``; per step only the token ids go in and the
logits come out to choose the next tokens (``runtime.generation``). Once per call the source is
padded to the parts' buckets, and the first step's cache is moved into the capacity's slots.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import AutotuneError
from .generation import GenerationConfig, check_source, generate, token_ids
from .loader import CompiledModel, verify_artifact
from .loader import load as load_artifact
from .trust import public_key_from, verify_signature

FORMAT = "autotune-seq2seq/1"
PART_NAMES = ("encoder", "first_step", "next_step")


def is_generator_manifest(path: Path) -> bool:
    """Whether ``path`` is a generator manifest (``compile --task seq2seq``'s ``NAME.json``)."""
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load(path: str | Path, trust_unverified: bool = False, expected_sha256: str | None = None,
         public_key: str | Path | None = None):
    """Load a compiled ``.so`` (a ``CompiledModel``) or a translation model's generator manifest
    (a ``Translator``), after verifying it as ``runtime.loader.load`` describes; a generator's
    parts must also have the sha256 its manifest pins."""
    path = Path(path)
    if is_generator_manifest(path):
        if expected_sha256 is not None:
            raise AutotuneError(f"{path}: pin a generator by its parts' hashes in its manifest (sign the "
                                "manifest to protect it), not by one expected_sha256")
        return Translator(path, public_key)
    return load_artifact(path, trust_unverified, expected_sha256, public_key)


def verify_generator(path: Path, public_key: str | Path | None = None) -> dict:
    """The generator manifest at ``path`` once it and every part verify: its signature where a
    key is required (``public_key`` or ``$AUTOTUNE_PUBLIC_KEY``), then each part's ``.so`` and
    manifest against the hashes it pins (imports no TVM). Returns the manifest."""
    key = public_key_from(public_key)
    manifest = _signed_manifest(path, key)
    for name in PART_NAMES:
        part = manifest["parts"][name]
        verify_artifact(path.parent / part["file"], **_pins(part, key))
    return manifest


def _signed_manifest(path: Path, key: str | None) -> dict:
    """The generator manifest at ``path``, its signature checked where ``key`` is given."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise AutotuneError(f"{path}: cannot read the generator manifest: {err}") from None
    if key is not None:
        verify_signature(path, data, key)
    return _parse(data, path)


def _pins(part: dict, key: str | None) -> dict:
    """How a part is verified: by the hashes of its ``.so`` and manifest that the (verified)
    generator manifest pins; one compiled before manifests were pinned needs its own signature."""
    if "manifest_sha256" in part:
        return {"expected_sha256": part["sha256"], "expected_manifest_sha256": part["manifest_sha256"]}
    return {"expected_sha256": part["sha256"], "public_key": key}


class Translator:
    """A loaded translation model: ``generate`` turns source token ids into target token ids."""

    def __init__(self, manifest_path: Path, public_key: str | Path | None = None):
        self.path = manifest_path
        key = public_key_from(public_key)
        self.manifest = _signed_manifest(manifest_path, key)  # the parts are verified as they load
        parts = self.manifest["parts"]
        self.parts: dict[str, CompiledModel] = {
            name: load_artifact(manifest_path.parent / parts[name]["file"], **_pins(parts[name], key))
            for name in PART_NAMES}
        self.vocab = int(self.manifest["layout"]["vocab"])
        self.max_new_tokens = int(self.manifest["ranges"]["max_new_tokens"])
        self.tokens = self.manifest.get("tokens", {})

    def generate(self, input_ids, attention_mask=None, max_new_tokens: int | None = None, num_beams: int = 1,
                 eos_token_id: int | list[int] | None = None, decoder_start_token_id: int | None = None,
                 pad_token_id: int | None = None, length_penalty: float = 1.0,
                 early_stopping: bool | str = False, min_new_tokens: int = 0) -> np.ndarray:
        """Target token ids ``[batch, 1 + generated]`` (starting with the decoder start token, padded
        after each sentence's end) for source ``input_ids [batch, length]``, greedy or by beam
        search, as transformers' ``generate``. Token ids default to the model's config. A bad
        input raises ``AutotuneError`` and the model keeps serving. ``max_new_tokens`` defaults to
        the most the model was compiled for; no sentence ends before ``min_new_tokens``."""
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        config = self.config(max_new_tokens, num_beams, eos_token_id, decoder_start_token_id, pad_token_id,
                             length_penalty, early_stopping, min_new_tokens)
        ids, mask = check_source(input_ids, attention_mask, self.vocab)
        return generate(self.steps(ids.shape[0] * num_beams, ids.shape[1], max_new_tokens), ids, mask, config)

    def steps(self, rows: int, length: int, max_new_tokens: int) -> DeviceSteps:
        """The parts as the generation loop drives them, for ``rows`` rows (sentences × beams) of
        sources of ``length`` tokens; ``AutotuneError`` outside the compiled ranges."""
        self._check_ranges(rows, length)
        return DeviceSteps(self.parts, rows, length, max_new_tokens)

    def config(self, max_new_tokens: int, num_beams: int = 1, eos=None, start=None, pad=None,
               length_penalty: float = 1.0, early_stopping: bool | str = False,
               min_new_tokens: int = 0) -> GenerationConfig:
        """The checked ``GenerationConfig`` of ``generate``'s settings (token ids from the model's
        config where not given)."""
        def token(given, key):
            value = given if given is not None else self.tokens.get(key)
            if value is None:
                raise AutotuneError(f"{key} is not in the model's config: pass {key}=")
            return value

        config = GenerationConfig(int(max_new_tokens), int(token(start, "decoder_start_token_id")),
                                  token_ids(token(eos, "eos_token_id")), int(token(pad, "pad_token_id")),
                                  int(num_beams), float(length_penalty), early_stopping, int(min_new_tokens))
        config.check(self.vocab, self.max_new_tokens)
        return config

    def _check_ranges(self, rows: int, length: int) -> None:
        ranges = self.manifest["ranges"]
        low, high = ranges["batch"]
        if not low <= rows <= high:
            raise AutotuneError(f"batch × num_beams is {rows}, outside the batch range {low}..{high} this "
                                f"model was compiled for")
        low, high = ranges["source"]
        if not low <= length <= high:
            raise AutotuneError(f"input_ids has {length} tokens, outside the source length range {low}..{high} "
                                "this model was compiled for")


def _parse(data: bytes, path: Path) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError as err:
        raise AutotuneError(f"{path}: cannot read the generator manifest: {err}") from None
    missing = [p for p in PART_NAMES if p not in manifest.get("parts", {})]
    if missing:
        raise AutotuneError(f"{path}: the generator manifest lists no {', '.join(missing)} part")
    if (manifest.get("validation") or {}).get("passed") is False:
        raise AutotuneError(f"{path} failed its validation against ONNX Runtime when it was compiled; "
                            "refusing to load it")
    return manifest


class DeviceSteps:
    """The compiled parts as ``runtime.generation.Seq2SeqSteps``, for one ``generate`` call of
    ``rows`` rows (sentences × beams), sources of ``length`` tokens and up to ``new_tokens``."""

    def __init__(self, parts: dict[str, CompiledModel], rows: int, length: int, new_tokens: int):
        import tvm

        self._tvm = tvm
        self.parts, self.rows = parts, rows
        step = parts["next_step"]
        self.sizes = _bucket(step, {"batch_size": rows, "encoder_sequence_length": length,
                                    "cache_capacity": new_tokens})
        self.bucket_rows = self.sizes.get("batch_size") or _spec(step, "input_ids").shape[0]  # ranged, or fixed
        self.capacity = self.sizes.get("cache_capacity") or _spec(step, "cache_mask").shape[1]
        self.source = self.sizes.get("encoder_sequence_length") or _spec(step, "encoder_attention_mask").shape[1]
        self.position = 0
        self.beam_rows = np.arange(self.bucket_rows, dtype=np.int64)
        self.filled = np.zeros((self.bucket_rows, self.capacity), np.int64)  # the cache slots written
        self.staged: dict[str, object] = {}  # a device tensor per small per-step input, refilled each step
        self.entries: dict[tuple, tuple[str, list[str]]] = {}  # per part and bucket: its function, input names
        self.last_call: tuple[CompiledModel, str, list] | None = None  # the part, function and device
        # arguments of the latest call: a benchmark times the kernels of a step alone by repeating it

    def _device(self, array: np.ndarray):
        return self._tvm.runtime.tensor(np.ascontiguousarray(array), self.parts["next_step"].device)

    def _rows(self, array: np.ndarray) -> np.ndarray:
        """``array`` with its last row repeated up to the bucket's rows (padded rows are ignored)."""
        extra = self.bucket_rows - array.shape[0]
        return np.concatenate([array, np.repeat(array[-1:], extra, axis=0)]) if extra > 0 else array

    def _stage(self, name: str, array: np.ndarray):
        """``array`` in the device tensor kept for per-step input ``name`` (made on first use):
        copying into it costs a third of making a tensor, every step."""
        tensor = self.staged.get(name)
        if tensor is None:
            tensor = self.staged[name] = self._device(array)
        else:
            tensor.copyfrom(np.ascontiguousarray(array))
        return tensor

    def _run(self, part: str, sizes: dict[str, int], arrays: dict[str, object], staged: bool = False
             ) -> dict[str, object]:
        """Run ``part``'s bucket at ``sizes`` on ``arrays`` (device tensors, or numpy arrays copied to
        the device: into kept tensors where ``staged``, as a step's small inputs are)."""
        model = self.parts[part]
        bucket = {d: sizes[d] for d in model.plan.ladders} if model.plan else {}
        key = (part, *sorted(bucket.items()))
        if key not in self.entries:
            function = model.bucket_at(bucket).function if model.plan else "main"  # a static part: one function
            self.entries[key] = (function, [spec.name for spec in model.input_specs])
        function, names = self.entries[key]
        args = [arrays[name] if not isinstance(arrays[name], np.ndarray)
                else self._stage(name, arrays[name]) if staged else self._device(arrays[name]) for name in names]
        self.last_call = (model, function, args)
        return dict(zip(model.output_names, model.run_on_device(function, args)))

    def encode(self, input_ids, attention_mask):
        """The encoder at its own bucket for the source; its states and mask padded (masked out)
        up to the steps' source bucket where that is longer."""
        encoder = self.parts["encoder"]
        source = {"input_ids": input_ids, "attention_mask": attention_mask}
        bucket = _bucket(encoder, {"batch_size": input_ids.shape[0], "encoder_sequence_length": input_ids.shape[1]})
        padded = encoder.plan.pad(source, encoder.bucket_at(bucket)) if encoder.plan else source
        hidden = self._run("encoder", bucket, padded)["last_hidden_state"]
        mask, extra = padded["attention_mask"], self.source - padded["attention_mask"].shape[1]
        if extra > 0:
            mask = np.pad(mask, [(0, 0), (0, extra)])
            hidden = self._device(np.pad(hidden.numpy(), [(0, 0), (0, extra), (0, 0)]))
        return {"mask": mask, "hidden": hidden}

    def select(self, state: dict, rows: np.ndarray) -> dict:
        if "hidden" in state:  # the encoder's states expanded to beams: once per call, on the host
            return {"mask": self._rows(state["mask"][rows]),
                    "hidden": self._device(self._rows(state["hidden"].numpy()[rows]))}
        self.beam_rows = np.arange(self.bucket_rows, dtype=np.int64)
        self.beam_rows[:len(rows)] = rows  # the next step reads the cache through these rows
        return state

    def first_step(self, tokens, encoded):
        mask = encoded["mask"]  # the encoder's bucket: the steps' rows (beams: ``select`` made it so)
        out = self._run("first_step", self.sizes, {"input_ids": self._rows(tokens), "encoder_attention_mask": mask,
                                                   "encoder_hidden_states": encoded["hidden"]})
        cache = {"encoder_attention_mask": self._device(mask)}
        for name, value in out.items():
            if name.startswith("present."):
                cache[name.replace("present.", "past_key_values.", 1)] = (
                    self._in_capacity(value, slot_axis=3 if name.endswith(".key") else 2)
                    if ".decoder." in name else value)
        self.position = 1
        return out["logits"].numpy()[:self.rows, -1], cache

    def _in_capacity(self, first: object, slot_axis: int) -> object:
        """The first step's keys ``[rows, heads, head, 1]`` (transposed) or values ``[rows, heads,
        1, head]`` in slot 0 of the capacity along ``slot_axis``."""
        values = first.numpy()
        shape = list(values.shape)
        shape[slot_axis] = self.capacity
        cache = np.zeros(shape, values.dtype)
        cache[(slice(None),) * slot_axis + (slice(0, 1),)] = values
        return self._device(cache)

    def next_step(self, tokens, encoded, cache):
        self.filled[:, self.position - 1] = 1
        out = self._run("next_step", self.sizes, {
            **cache, "input_ids": self._rows(tokens),
            "position_ids": np.array([self.position], np.int64), "cache_mask": self.filled,
            "beam_rows": self.beam_rows}, staged=True)
        self.position += 1
        self.beam_rows = np.arange(self.bucket_rows, dtype=np.int64)
        grown = {name.replace("present.", "past_key_values.", 1): value for name, value in out.items()
                 if name.startswith("present.")}
        return out["logits"].numpy()[:self.rows, -1], {**cache, **grown}


def _bucket(model: CompiledModel, wanted: dict[str, int]) -> dict[str, int]:
    """The dims of ``model``'s bucket that holds ``wanted`` (a value per dim name); none for a
    part compiled for one shape (the caller's shape was checked against it)."""
    if model.plan is None:
        return {}
    return {d: _rung(rungs, wanted[d]) for d, rungs in model.plan.ladders.items()}


def _spec(model: CompiledModel, name: str):
    return next(spec for spec in model.input_specs if spec.name == name)


def _rung(rungs: list[int], value: int) -> int:
    """The smallest bucket value of a ladder that holds ``value``."""
    return next(r for r in rungs if r >= value)
