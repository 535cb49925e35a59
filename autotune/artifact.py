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
    """A Relax executable of ``fused_mod`` with the database's best schedule for every task it has."""
    import tvm
    from tvm import relax

    from .tasks import backend_pipeline

    pipeline = backend_pipeline(target)
    lower = tvm.transform.Sequential([*pipeline.dataflow_lower_passes(target),
                                      *pipeline.finalize_passes(target)])

    @tvm.transform.module_pass(opt_level=0)
    def apply_and_lower(mod, _ctx):
        return lower(relax.transform.MetaScheduleApplyDatabase()(mod))

    with target, database, tvm.transform.PassContext(opt_level=3):
        return relax.build(fused_mod, target=target, relax_pipeline=apply_and_lower)


def build_untuned(relax_mod, target):
    """The stock TVM build of the imported model: the baseline users would get without tuning."""
    import tvm

    with target:
        return tvm.compile(relax_mod, target=target)


@dataclass
class Validation:
    """How the artifact's outputs compare with ONNX Runtime on the same random inputs."""

    max_abs_err: float
    max_rel_err: float
    rtol: float
    atol: float
    passed: bool

    def as_dict(self) -> dict:
        return dict(vars(self))


def onnxruntime_session(model_path: Path, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def compare_outputs(ours: dict[str, np.ndarray], reference: list[np.ndarray], names: list[str],
                    rtol: float, atol: float) -> Validation:
    """Max abs and relative (to the reference's magnitude) error over all outputs."""
    max_abs = max_rel = 0.0
    passed = True
    for name, ref in zip(names, reference):
        got = ours[name].astype(np.float64)
        diff = np.abs(got - ref.astype(np.float64))
        max_abs = max(max_abs, float(diff.max(initial=0.0)))
        max_rel = max(max_rel, float(diff.max(initial=0.0) / max(float(np.abs(ref).max(initial=0.0)), 1e-12)))
        passed = passed and bool(np.allclose(got, ref, rtol=rtol, atol=atol))
    return Validation(max_abs, max_rel, rtol, atol, passed)


def validate(so_path: Path, model: ImportedModel, threads: int, rtol: float = 1e-4,
             atol: float = 1e-4) -> Validation:
    """Run the artifact and ONNX Runtime on random inputs and compare."""
    from .runtime import load

    inputs = random_inputs(model.inputs)
    ours = load(so_path)(inputs)
    session = onnxruntime_session(model.path, threads)
    names = [o.name for o in model.outputs]
    return compare_outputs(ours, session.run(names, inputs), names, rtol, atol)


def _write_manifest(so_path: Path, model: ImportedModel, target, extra: dict) -> dict:
    import tvm

    from .targets import canonical, required_features

    manifest = {
        "format": MANIFEST_FORMAT, "file": so_path.name, "sha256": sha256_of(so_path),
        "target": json.loads(canonical(target)), "target_kind": target.kind.name,
        "mcpu": target.attrs.get("mcpu") and str(target.attrs["mcpu"]),
        "required_features": required_features(target), "tvm_version": tvm.__version__,
        "model": {"name": model.name, "path": str(model.path.resolve()), "sha256": model.sha256},
        "inputs": [s.as_dict() for s in model.inputs],
        "outputs": [s.as_dict() for s in model.outputs],
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(), **extra,
    }
    manifest_path(so_path).write_text(json.dumps(manifest, indent=2))
    return manifest


def export(executable, so_path: Path, model: ImportedModel, target, extra: dict) -> dict:
    """Write the ``.so`` and its manifest; returns the manifest."""
    so_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        executable.export_library(str(so_path))
    except Exception as err:
        raise AutotuneError(f"cannot export {so_path}: {str(err).splitlines()[0][:200]}") from None
    return _write_manifest(so_path, model, target, extra)


def add_validation(so_path: Path, validation: Validation) -> None:
    """Record the validation result in the manifest (the ``.so`` and its hash are unchanged)."""
    path = manifest_path(so_path)
    manifest = json.loads(path.read_text())
    manifest["validation"] = validation.as_dict()
    path.write_text(json.dumps(manifest, indent=2))
