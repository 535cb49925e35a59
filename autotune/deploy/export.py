"""Export: the ``.so`` and its manifest, staged beside the destination until validation passes."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..backends import backend_for
from ..common.files import sha256_of, write_json_atomically
from ..common.results import Result
from ..common.text import first_line
from ..errors import AutotuneError
from ..frontend.importer import ImportedModel
from ..runtime.manifest import Manifest, manifest_path
from ..targets.names import canonical
from .validate import Validation


@dataclass
class BuildProvenance(Result):
    """What an artifact was built from: the records, their jobs and provenances, the graph knobs."""

    record_ids: list[int]
    job_ids: list[int]
    provenance: list[str]
    fusion: str
    precision: str
    tasks: int
    tasks_tuned: int


def make_manifest(so_path: Path, name: str, model: ImportedModel, target, provenance: BuildProvenance
                  ) -> Manifest:
    """The manifest of the ``.so`` at ``so_path`` (hashed as it is now), to be kept beside it as
    ``name``'s; ``provenance`` is what it was built from."""
    import tvm

    return Manifest(
        file=name, sha256=sha256_of(so_path), target=json.loads(canonical(target)),
        target_kind=target.kind.name, **backend_for(target).manifest_fields(target),
        tvm_version=tvm.__version__,
        model={"name": model.name, "path": str(model.path.resolve()), "sha256": model.sha256},
        inputs=[s.as_dict() for s in model.inputs], outputs=[s.as_dict() for s in model.outputs],
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(),
        shape_plan=model.plan.as_dict() if model.plan else None, **provenance.as_dict())


class StagedArtifact:
    """A new ``.so`` and manifest written beside ``target`` under temporary names.

    ``commit`` renames them over ``target`` and its manifest (the ``.so`` first: until the manifest
    follows, the pair does not verify and the loader refuses it, so a reader never loads half of
    each); ``reject`` keeps them as ``NAME.rejected.so``; ``discard`` removes them. Whatever happens
    before ``commit``, the artifact at ``target`` is untouched.
    """

    def __init__(self, target: Path, manifest: Manifest, so_path: Path):
        self.target, self.manifest, self.so_path = target, manifest, so_path

    def record_validation(self, validation: Validation) -> None:
        """Add the validation result to the staged manifest (the ``.so`` and its hash unchanged)."""
        self.manifest.validation = validation.as_dict()
        self._write_manifest()

    def record_shape_plan(self, plan) -> None:
        """Put a range artifact's plan, as measured on the staged ``.so``, in its manifest."""
        self.manifest.shape_plan = plan.as_dict()
        self._write_manifest()

    def _write_manifest(self) -> None:
        """The staged manifest rewritten, atomically, with the fields set on ``self.manifest``."""
        write_json_atomically(manifest_path(self.so_path), self.manifest.as_dict())

    def commit(self) -> None:
        os.replace(self.so_path, self.target)
        os.replace(manifest_path(self.so_path), manifest_path(self.target))

    def reject(self) -> Path:
        """Keep the staged pair as ``NAME.rejected.so`` (+ manifest) beside the target; its path."""
        kept = self.target.with_name(f"{self.target.stem}.rejected{self.target.suffix or '.so'}")
        self.manifest.file = kept.name
        self._write_manifest()
        os.replace(self.so_path, kept)
        os.replace(manifest_path(self.so_path), manifest_path(kept))
        return kept

    def discard(self) -> None:
        for path in (self.so_path, manifest_path(self.so_path)):
            path.unlink(missing_ok=True)


def stage(executable, target: Path, model: ImportedModel, tvm_target, provenance: BuildProvenance
          ) -> StagedArtifact:
    """Export ``executable`` and its manifest beside ``target`` under temporary names (see
    ``StagedArtifact``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".staged.so", dir=target.parent)
    os.close(handle)
    so_path = Path(name)
    try:
        backend = backend_for(tvm_target)
        executable.export_library(str(so_path), **backend.export_options(tvm_target),
                                  **backend.artifact_options(tvm_target))
        manifest = make_manifest(so_path, target.name, model, tvm_target, provenance)
        write_json_atomically(manifest_path(so_path), manifest.as_dict())
    except Exception as err:
        for path in (so_path, manifest_path(so_path)):
            path.unlink(missing_ok=True)
        raise AutotuneError(f"cannot export {target}: {first_line(err, 200)}") from None
    return StagedArtifact(target, manifest, so_path)
