"""Generation for encoder-decoder models: greedy and beam search over a model's steps.

One loop, written once, drives any implementation of ``Seq2SeqSteps`` (ONNX Runtime sessions as
the reference and the peer, compiled artifacts as the product), so both are checked and timed by
the same search. The loop sees logits as numpy and chooses token ids; encoder states and caches
stay whatever the steps keep them as (device tensors for an artifact): beams reorder them through
``Seq2SeqSteps.select``, never through the host.

The searches follow Hugging Face transformers' ``generate`` (greedy; beam search with its length
penalty, ``early_stopping`` and its stopping heuristic), so their outputs can be compared token
for token. Returned sequences start with the decoder start token, as transformers' do, and are
filled with ``pad_token_id`` after a sentence's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import AutotuneError

NEG_INF = -1.0e9  # the score of a beam that must not be chosen (transformers' value)


class Seq2SeqSteps(Protocol):
    """The parts of an encoder-decoder model as the search drives them."""

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> object:
        """The encoder state of a batch (its hidden states and mask, as the steps keep them)."""

    def first_step(self, tokens: np.ndarray, encoded: object) -> tuple[np.ndarray, object]:
        """Logits ``[batch, vocab]`` after the start tokens ``[batch, 1]``, and the new cache."""

    def next_step(self, tokens: np.ndarray, encoded: object, cache: object) -> tuple[np.ndarray, object]:
        """Logits after one more token per row ``[batch, 1]``, and the grown cache."""

    def select(self, state: object, rows: np.ndarray) -> object:
        """An encoder state or a cache made of ``state``'s rows ``rows`` (repeats allowed)."""


@dataclass(frozen=True)
class GenerationConfig:
    """What ``generate`` does; the token ids come from the model's config unless given."""

    max_new_tokens: int
    decoder_start_token_id: int
    eos_token_id: tuple[int, ...]
    pad_token_id: int
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True, False or "never", as in transformers
    min_new_tokens: int = 0  # no end-of-sequence before this many new tokens (transformers' processor)

    def check(self, vocab: int, max_new_tokens_limit: int | None = None) -> None:
        """One ``AutotuneError`` for a setting the model cannot take."""
        if self.max_new_tokens < 1:
            raise AutotuneError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if max_new_tokens_limit is not None and self.max_new_tokens > max_new_tokens_limit:
            raise AutotuneError(f"max_new_tokens {self.max_new_tokens} is beyond the past length this model "
                                f"was compiled for: at most {max_new_tokens_limit}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise AutotuneError(f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], "
                                f"got {self.min_new_tokens}")
        if self.num_beams < 1:
            raise AutotuneError(f"num_beams must be at least 1, got {self.num_beams}")
        if self.early_stopping not in (True, False, "never"):
            raise AutotuneError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        named = {"decoder_start_token_id": [self.decoder_start_token_id], "pad_token_id": [self.pad_token_id],
                 "eos_token_id": list(self.eos_token_id)}
        for name, ids in named.items():
            if not ids or any(not 0 <= i < vocab for i in ids):
                raise AutotuneError(f"{name} {ids} is outside the vocabulary [0, {vocab - 1}]")


def token_ids(value: int | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """One token id or several (a config's ``eos_token_id`` may be either) as a tuple."""
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)


def check_source(input_ids, attention_mask, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """The caller's source batch as int64 arrays, or one ``AutotuneError`` naming what is wrong."""
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 1 or ids.dtype.kind not in "iu":
        raise AutotuneError(f"input_ids must be integer token ids [batch, length], got {ids.dtype}{list(ids.shape)}")
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise AutotuneError(f"input_ids[{row}, {col}] is {int(ids[row, col])}, outside the vocabulary "
                            f"[0, {vocab - 1}]")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != ids.shape or mask.dtype.kind not in "iub":
        raise AutotuneError(f"attention_mask must be integers shaped like input_ids {list(ids.shape)}, got "
                            f"{mask.dtype}{list(mask.shape)}")
    return ids.astype(np.int64), mask.astype(np.int64)


def generate(steps: Seq2SeqSteps, input_ids: np.ndarray, attention_mask: np.ndarray,
             config: GenerationConfig) -> np.ndarray:
    """Token ids ``[batch, 1 + generated]`` for a checked source batch (``check_source``)."""
    if config.num_beams == 1:
        return _greedy(steps, input_ids, attention_mask, config)
    return _beam_search(steps, input_ids, attention_mask, config)


def _greedy(steps: Seq2SeqSteps, input_ids, attention_mask, config: GenerationConfig) -> np.ndarray:
    batch = input_ids.shape[0]
    encoded = steps.encode(input_ids, attention_mask)
    tokens = np.full((batch, 1), config.decoder_start_token_id, np.int64)
    logits, cache = steps.first_step(tokens, encoded)
    chosen = [tokens[:, 0]]
    open_rows = np.ones(batch, bool)
    for step in range(config.max_new_tokens):
        if step:
            logits, cache = steps.next_step(chosen[-1][:, None], encoded, cache)
        best = np.where(open_rows, _without_early_end(logits, step, config).argmax(axis=-1), config.pad_token_id)
        chosen.append(best)
        open_rows &= ~np.isin(best, config.eos_token_id)
        if not open_rows.any():
            break
    return np.stack(chosen, axis=1)


def _without_early_end(scores: np.ndarray, generated: int, config: GenerationConfig) -> np.ndarray:
    """``scores`` with end-of-sequence made unchoosable while fewer than ``min_new_tokens`` tokens
    were generated (transformers' ``MinNewTokensLengthLogitsProcessor``)."""
    if generated >= config.min_new_tokens:
        return scores
    scores = scores.copy()
    scores[:, list(config.eos_token_id)] = -np.inf
    return scores


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float32) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores of each row, best first."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[b, index[b, j], ...]`` for every row ``b``."""
    return np.take_along_axis(values, index.reshape(index.shape + (1,) * (values.ndim - 2)), axis=1)


@dataclass
class _Beams:
    """The running beams and the finished hypotheses of each sentence, ``[batch, beams, ...]``."""

    running: np.ndarray  # token ids so far, ``[batch, beams, max_length]``
    running_scores: np.ndarray  # summed log-probabilities
    finished: np.ndarray  # token ids of the best finished hypotheses
    finished_scores: np.ndarray  # their length-normalised scores
    finished_lengths: np.ndarray
    is_finished: np.ndarray  # whether each finished slot holds a hypothesis
    improvable: np.ndarray  # ``[batch, 1]``: whether a running beam may still beat a finished one


def _start_beams(batch: int, beams: int, config: GenerationConfig) -> _Beams:
    max_length = 1 + config.max_new_tokens
    running = np.full((batch, beams, max_length), config.pad_token_id, np.int64)
    running[:, :, 0] = config.decoder_start_token_id
    scores = np.zeros((batch, beams), np.float32)
    scores[:, 1:] = NEG_INF  # every beam starts as the same sequence: only the first one counts
    return _Beams(running, scores, running.copy(), np.full((batch, beams), NEG_INF, np.float32),
                  np.ones((batch, beams), np.int64), np.zeros((batch, beams), bool), np.ones((batch, 1), bool))


def _beam_search(steps: Seq2SeqSteps, input_ids, attention_mask, config: GenerationConfig) -> np.ndarray:
    batch, beams = input_ids.shape[0], config.num_beams
    encoded = steps.select(steps.encode(input_ids, attention_mask), np.repeat(np.arange(batch), beams))
    state = _start_beams(batch, beams, config)
    logits, cache = steps.first_step(np.full((batch * beams, 1), config.decoder_start_token_id, np.int64),
                                     encoded)
    length = 1
    while True:
        continued_from, all_end = _advance(state, logits, length, config)
        length += 1
        if all_end or not _may_go_on(state, length, config):
            break
        rows = (np.arange(batch)[:, None] * beams + continued_from).reshape(-1)
        cache = steps.select(cache, rows)
        logits, cache = steps.next_step(state.running[:, :, length - 1].reshape(-1, 1), encoded, cache)
    return _best_hypotheses(state, config.pad_token_id)


def _advance(state: _Beams, logits: np.ndarray, length: int, config: GenerationConfig) -> tuple[np.ndarray, bool]:
    """One step of beam search at ``length`` tokens so far: the beam each new running beam
    continues, and whether every candidate continuation ended (nothing is left to run on)."""
    batch, beams = state.running_scores.shape
    vocab = logits.shape[-1]
    keep = max(2, 1 + len(config.eos_token_id)) * beams
    log_probs = _without_early_end(_log_softmax(logits), length - 1, config)
    summed = (log_probs.reshape(batch, beams, vocab) + state.running_scores[:, :, None]
              ).reshape(batch, beams * vocab)
    top = _top(summed, keep)
    top_scores = np.take_along_axis(summed, top, axis=1)
    top_beams, top_tokens = top // vocab, top % vocab
    top_sequences = _gather(state.running, top_beams).copy()
    top_sequences[:, :, length] = top_tokens
    ends = np.isin(top_tokens, config.eos_token_id) | (length + 1 >= 1 + config.max_new_tokens)
    # the best continuations that do not end run on
    open_scores = top_scores + ends * NEG_INF
    chosen = _top(open_scores, beams)
    state.running, state.running_scores = _gather(top_sequences, chosen), _gather(open_scores, chosen)
    _keep_finished(state, top_sequences, top_scores, ends, length, config)
    return _gather(top_beams, chosen), bool(ends.all())


def _keep_finished(state: _Beams, sequences, scores, ends, length: int, config: GenerationConfig) -> None:
    """Merge the continuations among the best ``beams`` that end into the finished hypotheses."""
    beams = state.running_scores.shape[1]
    just_finished = ends & (np.arange(ends.shape[1]) < beams)[None, :]
    normalised = scores / float(length) ** config.length_penalty
    full = state.is_finished.all(axis=1, keepdims=True) & (config.early_stopping is True)
    normalised = normalised + (full | ~state.improvable | ~just_finished) * NEG_INF
    merged_scores = np.concatenate([state.finished_scores, normalised], axis=1)
    best = _top(merged_scores, beams)
    state.finished = _gather(np.concatenate([state.finished, sequences], axis=1), best)
    state.finished_scores = _gather(merged_scores, best)
    new_lengths = np.full(sequences.shape[:2], length + 1, np.int64)
    state.finished_lengths = _gather(np.concatenate([state.finished_lengths, new_lengths], axis=1), best)
    state.is_finished = _gather(np.concatenate([state.is_finished, just_finished], axis=1), best)


def _may_go_on(state: _Beams, length: int, config: GenerationConfig) -> bool:
    """transformers' stopping rule: some sentence's running beams may still beat its finished
    ones (by its heuristic), and the maximum length is not reached."""
    if length >= 1 + config.max_new_tokens:
        return False
    best_length = (config.max_new_tokens if config.early_stopping == "never" and config.length_penalty > 0
                   else length - 1)
    best_running = state.running_scores[:, :1] / float(best_length) ** config.length_penalty
    worst_finished = np.where(state.is_finished, state.finished_scores.min(axis=1, keepdims=True), NEG_INF)
    state.improvable &= (best_running > worst_finished).any(axis=-1, keepdims=True)
    all_full = bool(state.is_finished.all()) and config.early_stopping is True
    return bool(state.improvable.any()) and not all_full


def _best_hypotheses(state: _Beams, pad_token_id: int) -> np.ndarray:
    """The best finished hypothesis of each sentence, filled with ``pad_token_id`` after its end."""
    lengths = state.finished_lengths[:, 0]
    out = np.full((len(lengths), int(lengths.max())), pad_token_id, np.int64)
    for row, (tokens, size) in enumerate(zip(state.finished[:, 0], lengths)):
        out[row, :size] = tokens[:size]
    return out


NEAR_TIE = 1e-3  # logits this close (relative to the row's largest) may order either way in fp32


@dataclass(frozen=True)
class Divergence:
    """Where two greedy outputs of one sentence part, and whether a near-tie explains it."""

    sentence: int
    position: int  # index in the output (0: the decoder start token)
    ours: int
    theirs: int
    logit_gap: float  # reference logit of ``theirs`` minus that of ``ours``, relative to the row's largest
    near_tie: bool


def forced_logits(steps: Seq2SeqSteps, input_ids: np.ndarray, attention_mask: np.ndarray,
                  prefix: np.ndarray) -> np.ndarray:
    """The logits ``[batch, vocab]`` after feeding ``prefix [batch, length]`` (start token first)."""
    encoded = steps.encode(input_ids, attention_mask)
    logits, cache = steps.first_step(prefix[:, :1], encoded)
    for position in range(1, prefix.shape[1]):
        logits, cache = steps.next_step(prefix[:, position:position + 1], encoded, cache)
    return logits


def divergences(reference: Seq2SeqSteps, input_ids: np.ndarray, attention_mask: np.ndarray,
                ours: np.ndarray, theirs: np.ndarray, pad_token_id: int) -> list[Divergence]:
    """For each sentence whose greedy tokens differ, the first differing position and the gap
    between the two chosen tokens' logits under ``reference`` given the common prefix."""
    width = max(ours.shape[1], theirs.shape[1])
    ours, theirs = (np.pad(t, [(0, 0), (0, width - t.shape[1])], constant_values=pad_token_id) for t in (ours, theirs))
    found = []
    for row in np.flatnonzero(np.any(ours != theirs, axis=1)):
        position = int(np.argmax(ours[row] != theirs[row]))
        logits = forced_logits(reference, input_ids[row:row + 1], attention_mask[row:row + 1],
                               theirs[row:row + 1, :position])[0]
        scale = max(float(np.abs(logits).max()), 1e-12)
        gap = float(logits[theirs[row, position]] - logits[ours[row, position]]) / scale
        found.append(Divergence(int(row), position, int(ours[row, position]), int(theirs[row, position]), gap,
                                abs(gap) <= NEAR_TIE))
    return found
