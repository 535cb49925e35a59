"""How close an artifact's outputs must be to ONNX Runtime's, unless the user says otherwise."""

from __future__ import annotations

RTOL = 1e-4  # fp32: the same arithmetic summed in another order differs by far less than this
ATOL = 1e-4
# Reduced precision is judged by max relative error (to each output's magnitude) and the lowest
# cosine similarity over the outputs instead of elementwise closeness.
REDUCED_PRECISION = {"fp16": (2e-2, 0.999), "bf16": (1e-1, 0.99), "int8": (2e-1, 0.99)}
# A translation generator's parts in fp32 are judged the same way (deep stacks of wide random
# weights make logits of tens, where fp32 summed in another order differs by ~1e-3 absolute): the
# generator as a whole is judged by its tokens against ONNX Runtime's (``jobs.seq2seq``).
GENERATOR_PART = (1e-3, 0.9999)


# A model that quantizes in its graph (DynamicQuantizeLinear, QuantizeLinear) rounds to whole steps:
# fp32 sums in another order than ONNX Runtime's move a value across a rounding boundary now and then,
# and the step it gains travels through the layers (all-MiniLM-L6-v2 quantized by ``quantize_dynamic``:
# cosine 0.9907 to ONNX Runtime, TVM's plain int32 loops and the VNNI kernel alike; a 1-layer model:
# 2.5e-7). It is judged as reduced precision.
QUANTIZED_GRAPH = (2e-1, 0.98)


def reduced_precision_limits(precision: str, max_rel_err: float | None, min_cosine: float | None,
                             quantized_graph: bool = False) -> tuple[float | None, float | None]:
    """The (max relative error, min cosine) limits for ``precision``: the user's where given, else the
    precision's defaults (none for fp32, which is judged by ``RTOL``/``ATOL``, unless the model
    quantizes in its graph: ``QUANTIZED_GRAPH``)."""
    default_rel, default_cos = REDUCED_PRECISION.get(precision, QUANTIZED_GRAPH if quantized_graph else (None, None))
    return (max_rel_err if max_rel_err is not None else default_rel,
            min_cosine if min_cosine is not None else default_cos)

# On real sentences (``deploy.text_accuracy``): the lowest cosine of a sentence's mean-pooled
# embedding to fp32's that a reduced-precision build may have.
MIN_SENTENCE_COSINE = {"fp16": 0.999, "bf16": 0.999, "int8": 0.99}


def sentence_cosine_limit(precision: str, given: float | None) -> float | None:
    """The user's limit where given, else ``precision``'s default (none for fp32)."""
    return given if given is not None else MIN_SENTENCE_COSINE.get(precision)
