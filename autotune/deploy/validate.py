"""Validation: an artifact's outputs against ONNX Runtime's on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..common.results import OMIT_NONE, Result
from ..common.text import one_line
from ..common.tolerances import ATOL, RTOL
from ..errors import AutotuneError
from ..frontend.buckets import ShapePlan
from ..frontend.importer import ImportedModel
from ..frontend.inputs import random_inputs
from ..frontend.onnx_file import onnxruntime_session
from ..runtime.loader import load
from . import text_accuracy


@dataclass
class Validation(Result):
    """How the artifact's outputs compare with ONNX Runtime (fp32) on the same random inputs.

    Passes when every output is ``allclose`` (rtol/atol), or, where ``max_rel_tol`` or
    ``min_cosine_tol`` is set (reduced precision), when the max relative error and the lowest
    cosine similarity over the outputs are within them.
    """

    max_abs_err: float
    max_rel_err: float
    min_cosine: float
    rtol: float
    atol: float
    max_rel_tol: float | None
    min_cosine_tol: float | None
    passed: bool
    # reduced precision, on the shipped real sentences where they fit the model (``text_accuracy``)
    text_accuracy: dict | None = field(default=None, metadata=OMIT_NONE)
    min_sentence_cosine_tol: float | None = field(default=None, metadata=OMIT_NONE)

    def tolerance(self) -> str:
        if self.max_rel_tol is None and self.min_cosine_tol is None:
            return f"rtol {self.rtol}, atol {self.atol}"
        text = f", sentence cosine {self.min_sentence_cosine_tol}" if self.text_accuracy else ""
        return f"max rel error {self.max_rel_tol}, min cosine {self.min_cosine_tol}{text}"


def compare_outputs(ours: dict[str, np.ndarray], reference: list[np.ndarray], names: list[str],
                    rtol: float, atol: float, max_rel_tol: float | None = None,
                    min_cosine_tol: float | None = None) -> Validation:
    """Max abs error, max relative error (to the reference's magnitude), min cosine similarity."""
    max_abs = max_rel = 0.0
    min_cos = 1.0
    close = True
    for name, ref in zip(names, reference):
        got, ref = ours[name].astype(np.float64).ravel(), ref.astype(np.float64).ravel()
        diff = float(np.abs(got - ref).max(initial=0.0))
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / max(float(np.abs(ref).max(initial=0.0)), 1e-12))
        norms = float(np.linalg.norm(got) * np.linalg.norm(ref))
        min_cos = min(min_cos, float(got @ ref) / norms if norms else float(diff == 0.0))
        close = close and bool(np.allclose(got, ref, rtol=rtol, atol=atol))
    if max_rel_tol is not None or min_cosine_tol is not None:
        close = ((max_rel_tol is None or max_rel <= max_rel_tol)
                 and (min_cosine_tol is None or min_cos >= min_cosine_tol))
    return Validation(max_abs, max_rel, min_cos, rtol, atol, max_rel_tol, min_cosine_tol, close)


def validate(so_path: Path, model: ImportedModel, threads: int, rtol: float = RTOL,
             atol: float = ATOL, max_rel_tol: float | None = None,
             min_cosine_tol: float | None = None,
             inputs: dict[str, np.ndarray] | None = None,
             min_sentence_cosine_tol: float | None = None) -> Validation:
    """Run the artifact and ONNX Runtime on ``inputs`` (default: inputs the model accepts,
    ``frontend.random_inputs``; for a range artifact, at each of ``validation_sizes``) and compare;
    the result is the worst over the shapes. With ``min_sentence_cosine_tol`` (reduced precision),
    the model's first output is also compared on real sentences where they fit the model
    (``text_accuracy``), and their lowest sentence cosine must reach it."""
    artifact = load(so_path)
    session = onnxruntime_session(model.path, threads)
    names = [o.name for o in model.outputs]
    sets = [inputs] if inputs is not None else [random_inputs(specs) for specs in _validation_specs(model)]
    results = []
    for each in sets:
        try:
            reference = session.run(names, each)
        except Exception as err:  # ONNX Runtime's own refusal of the inputs (e.g. an index it rejects)
            raise AutotuneError(f"ONNX Runtime cannot run {model.path} on the validation inputs: "
                                f"{one_line(err)}") from None
        results.append(compare_outputs(artifact(each), reference, names, rtol, atol, max_rel_tol, min_cosine_tol))
    worst = _worst(results)
    if min_sentence_cosine_tol is None or not text_accuracy.applies(model.inputs):
        return worst
    first = names[0]
    accuracy = text_accuracy.measure(lambda each: artifact(each)[first],
                                     lambda each: session.run([first], each)[0], model.inputs)
    if accuracy is None:
        return worst
    return replace(worst, text_accuracy=accuracy.as_dict(), min_sentence_cosine_tol=min_sentence_cosine_tol,
                   passed=worst.passed and accuracy.sentence_cosine_min >= min_sentence_cosine_tol)


def _validation_specs(model: ImportedModel) -> list[list]:
    """The input specs to validate at: the model's, or for a range artifact its shapes at
    ``validation_sizes``."""
    if model.plan is None:
        return [model.inputs]
    return [[replace(spec, shape=model.plan.shape_of(spec.name, sizes)) for spec in model.inputs]
            for sizes in validation_sizes(model.plan)]


def validation_sizes(plan: ShapePlan) -> list[dict[str, int]]:
    """Shapes that exercise a range artifact: every dim at its top, at its bottom, and at the first
    and last values that are no bucket's (so they are padded)."""
    def off_rung(dim: str, reverse: bool) -> int:
        allowed, rungs = plan.dims[dim], set(plan.ladders[dim])
        values = range(allowed.high, allowed.low - 1, -1) if reverse else range(allowed.low, allowed.high + 1)
        return next((v for v in values if v not in rungs), allowed.high)

    chosen = [{d: r.high for d, r in plan.dims.items()}, {d: r.low for d, r in plan.dims.items()},
              {d: off_rung(d, False) for d in plan.dims}, {d: off_rung(d, True) for d in plan.dims}]
    return [dict(items) for items in dict.fromkeys(tuple(c.items()) for c in chosen)]


def _worst(results: list[Validation]) -> Validation:
    first = results[0]
    return Validation(max(r.max_abs_err for r in results), max(r.max_rel_err for r in results),
                      min(r.min_cosine for r in results), first.rtol, first.atol, first.max_rel_tol,
                      first.min_cosine_tol, all(r.passed for r in results))
