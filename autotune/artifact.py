"""Compile the best schedules into a deployable ``.so`` with a manifest, and validate it."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
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
             min_cosine_tol: float | None = None,
             inputs: dict[str, np.ndarray] | None = None) -> Validation:
    """Run the artifact and ONNX Runtime on ``inputs`` (default: inputs the model accepts,
    ``frontend.random_inputs``) and compare."""
    from .runtime import load

    inputs = inputs if inputs is not None else random_inputs(model.inputs)
    ours = load(so_path)(inputs)
    names = [o.name for o in model.outputs]
    try:
        reference = onnxruntime_session(model.path, threads).run(names, inputs)
    except Exception as err:  # ONNX Runtime's own refusal of the inputs (e.g. an index it rejects)
        raise AutotuneError(f"ONNX Runtime cannot run {model.path} on the validation inputs: "
                            f"{' '.join(str(err).split())[:300]}") from None
    return compare_outputs(ours, reference, names, rtol, atol, max_rel_tol, min_cosine_tol)


def _manifest(so_path: Path, model: ImportedModel, target, extra: dict) -> dict:
    """The manifest of the ``.so`` at ``so_path`` (hashed as it is now), to be kept beside it."""
    import tvm

    from .targets import canonical, required_features

    return {
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


def _write_json(path: Path, value: dict) -> None:
    """Write ``value`` to ``path`` through a file beside it, flushed to disk, renamed over it."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


class StagedArtifact:
    """A new ``.so`` and manifest written beside ``target`` under temporary names.

    ``commit`` renames them over ``target`` and its manifest (the ``.so`` first: until the manifest
    follows, the pair does not verify and the loader refuses it, so a reader never loads half of
    each); ``reject`` keeps them as ``NAME.rejected.so``; ``discard`` removes them. Whatever happens
    before ``commit``, the artifact at ``target`` is untouched.
    """

    def __init__(self, target: Path, manifest: dict, so_path: Path):
        self.target, self.manifest, self.so_path = target, manifest, so_path

    def record_validation(self, validation: Validation) -> None:
        """Add the validation result to the staged manifest (the ``.so`` and its hash unchanged)."""
        self.manifest["validation"] = validation.as_dict()
        _write_json(manifest_path(self.so_path), self.manifest)

    def commit(self) -> None:
        os.replace(self.so_path, self.target)
        os.replace(manifest_path(self.so_path), manifest_path(self.target))

    def reject(self) -> Path:
        """Keep the staged pair as ``NAME.rejected.so`` (+ manifest) beside the target; its path."""
        kept = self.target.with_name(f"{self.target.stem}.rejected{self.target.suffix or '.so'}")
        self.manifest["file"] = kept.name
        _write_json(manifest_path(self.so_path), self.manifest)
        os.replace(self.so_path, kept)
        os.replace(manifest_path(self.so_path), manifest_path(kept))
        return kept

    def discard(self) -> None:
        for path in (self.so_path, manifest_path(self.so_path)):
            path.unlink(missing_ok=True)


def stage(executable, target: Path, model: ImportedModel, tvm_target, extra: dict) -> StagedArtifact:
    """Export ``executable`` and its manifest beside ``target`` under temporary names (see
    ``StagedArtifact``). CUDA code is embedded compiled."""
    from .cuda import export_options

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".staged.so", dir=target.parent)
    os.close(handle)
    so_path = Path(name)
    try:
        executable.export_library(str(so_path), **export_options(tvm_target))
        manifest = {**_manifest(so_path, model, tvm_target, extra), "file": target.name}
        _write_json(manifest_path(so_path), manifest)
    except Exception as err:
        for path in (so_path, manifest_path(so_path)):
            path.unlink(missing_ok=True)
        raise AutotuneError(f"cannot export {target}: {str(err).splitlines()[0][:200]}") from None
    return StagedArtifact(target, manifest, so_path)
