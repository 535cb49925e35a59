"""Compile the best schedules into a deployable ``.so`` with a manifest, and validate it."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AutotuneError
from .frontend import ImportedModel, random_inputs
from .runtime import MANIFEST_FORMAT, manifest_path, sha256_of


def build_tuned(fused_mod, target, database):
    """A Relax executable of ``fused_mod`` with the database's best schedule for every task it has.

    Tasks without a record get a heuristic default schedule instead of the naive loop nest. On CPU,
    the weight layouts the schedules chose are computed here, once, from the constants, and the
    schedules that ask for it get their weight prefetches (``prefetch``).
    """
    import tvm
    from tvm import relax

    from .cuda import codegen_fallback
    from .heuristics import schedule_unscheduled
    from .prefetch import prefetch_pass
    from .tasks import backend_pipeline, tuple_items_forwarded

    pipeline = backend_pipeline(target)
    prepack = [prefetch_pass(), relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant(),
               tuple_items_forwarded(), relax.transform.DeadCodeElimination()]
    with target, database, tvm.transform.PassContext(opt_level=3), codegen_fallback(target):
        apply_and_lower = tvm.transform.Sequential([relax.transform.MetaScheduleApplyDatabase(),
                                                    schedule_unscheduled(target),
                                                    *(prepack if target.kind.name == "llvm" else []),
                                                    *pipeline.dataflow_lower_passes(target),
                                                    *pipeline.finalize_passes(target)])
        return relax.build(fused_mod, target=target, relax_pipeline=apply_and_lower)


def build_untuned(relax_mod, target):
    """The stock TVM build of the imported model: the baseline users would get without tuning."""
    import tvm

    with target:
        return tvm.compile(relax_mod, target=target)


@dataclass
class Validation:
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

    def as_dict(self) -> dict:
        return dict(vars(self))

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


def validate(so_path: Path, model: ImportedModel, threads: int, rtol: float = 1e-4,
             atol: float = 1e-4, max_rel_tol: float | None = None,
             min_cosine_tol: float | None = None) -> Validation:
    """Run the artifact and ONNX Runtime on random inputs and compare."""
    from .runtime import load

    inputs = random_inputs(model.inputs)
    ours = load(so_path)(inputs)
    session = onnxruntime_session(model.path, threads)
    names = [o.name for o in model.outputs]
    return compare_outputs(ours, session.run(names, inputs), names, rtol, atol, max_rel_tol,
                           min_cosine_tol)


def _write_manifest(so_path: Path, model: ImportedModel, target, extra: dict) -> dict:
    import tvm

    from .targets import canonical, required_features

    manifest = {
        "format": MANIFEST_FORMAT, "file": so_path.name, "sha256": sha256_of(so_path),
        "target": json.loads(canonical(target)), "target_kind": target.kind.name,
        "mcpu": target.attrs.get("mcpu") and str(target.attrs["mcpu"]),
        "required_features": required_features(target), "tvm_version": tvm.__version__,
        "cuda_arch": str(target.attrs["arch"]) if target.kind.name == "cuda" else None,
        "model": {"name": model.name, "path": str(model.path.resolve()), "sha256": model.sha256},
        "inputs": [s.as_dict() for s in model.inputs],
        "outputs": [s.as_dict() for s in model.outputs],
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(), **extra,
    }
    manifest_path(so_path).write_text(json.dumps(manifest, indent=2))
    return manifest


def export(executable, so_path: Path, model: ImportedModel, target, extra: dict) -> dict:
    """Write the ``.so`` and its manifest; returns the manifest. CUDA code is embedded compiled."""
    from .cuda import export_options

    so_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        executable.export_library(str(so_path), **export_options(target))
    except Exception as err:
        raise AutotuneError(f"cannot export {so_path}: {str(err).splitlines()[0][:200]}") from None
    return _write_manifest(so_path, model, target, extra)


def add_validation(so_path: Path, validation: Validation) -> None:
    """Record the validation result in the manifest (the ``.so`` and its hash are unchanged)."""
    path = manifest_path(so_path)
    manifest = json.loads(path.read_text())
    manifest["validation"] = validation.as_dict()
    path.write_text(json.dumps(manifest, indent=2))
