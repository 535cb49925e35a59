"""Validation: an artifact's outputs against ONNX Runtime's on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..common.results import Result
from ..common.text import one_line
from ..common.tolerances import ATOL, RTOL
from ..errors import AutotuneError
from ..frontend.importer import ImportedModel
from ..frontend.inputs import random_inputs
from ..runtime.loader import load


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

    def tolerance(self) -> str:
        if self.max_rel_tol is None and self.min_cosine_tol is None:
            return f"rtol {self.rtol}, atol {self.atol}"
        return f"max rel error {self.max_rel_tol}, min cosine {self.min_cosine_tol}"


def onnxruntime_session(model_path: Path, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


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
             inputs: dict[str, np.ndarray] | None = None) -> Validation:
    """Run the artifact and ONNX Runtime on ``inputs`` (default: inputs the model accepts,
    ``frontend.random_inputs``) and compare."""
    inputs = inputs if inputs is not None else random_inputs(model.inputs)
    ours = load(so_path)(inputs)
    names = [o.name for o in model.outputs]
    try:
        reference = onnxruntime_session(model.path, threads).run(names, inputs)
    except Exception as err:  # ONNX Runtime's own refusal of the inputs (e.g. an index it rejects)
        raise AutotuneError(f"ONNX Runtime cannot run {model.path} on the validation inputs: "
                            f"{one_line(err)}") from None
    return compare_outputs(ours, reference, names, rtol, atol, max_rel_tol, min_cosine_tol)
