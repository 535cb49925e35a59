"""The manifest beside every artifact (``model.so.json``): what it is, what it needs, where it came from."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..common.results import Result
from ..errors import AutotuneError
from ..frontend.specs import TensorSpec

MANIFEST_FORMAT = "autotune-artifact/1"


def manifest_path(so_path: str | Path) -> Path:
    """Where the manifest of ``so_path`` lives: beside it, ``model.so.json``."""
    return Path(f"{so_path}.json")


@dataclass
class Manifest(Result):
    """An artifact's manifest. The JSON keys are the field names; unknown keys are kept in ``extra``."""

    sha256: str
    target: dict
    target_kind: str
    inputs: list[dict]
    outputs: list[dict]
    format: str = MANIFEST_FORMAT
    file: str = ""
    mcpu: str | None = None
    required_features: list[str] = field(default_factory=list)
    cuda_arch: str | None = None
    tvm_version: str = ""
    model: dict = field(default_factory=dict)
    created_at: str = ""
    record_ids: list[int] = field(default_factory=list)
    fusion: str = "full"
    precision: str = "fp32"
    provenance: list[str] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)
    tasks: int = 0
    tasks_tuned: int = 0
    validation: dict | None = None
    shape_plan: dict | None = None  # a range artifact's buckets (``frontend.buckets.ShapePlan``)

    def input_specs(self) -> list[TensorSpec]:
        """The inputs the artifact takes."""
        return [TensorSpec.from_dict(spec) for spec in self.inputs]

    def output_names(self) -> list[str]:
        return [spec["name"] for spec in self.outputs]

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def read_manifest_bytes(so_path: Path) -> bytes:
    """The manifest file beside ``so_path``, as bytes (what a signature covers), or a clear error."""
    path = manifest_path(so_path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AutotuneError(f"no manifest {path} beside {so_path}: refusing to load an unverified "
                            "artifact (pass trust_unverified=True to load it anyway)") from None
    except OSError as err:
        raise AutotuneError(f"manifest {path} is unreadable: {err}") from None


def parse_manifest(data: bytes, path: Path) -> Manifest:
    """A manifest from the bytes of its file at ``path``, or a clear error."""
    try:
        parsed = json.loads(data)
    except ValueError as err:
        raise AutotuneError(f"manifest {path} is unreadable: {err}") from None
    if not isinstance(parsed, dict) or parsed.get("format") != MANIFEST_FORMAT:
        found = parsed.get("format") if isinstance(parsed, dict) else type(parsed).__name__
        raise AutotuneError(f"manifest {path} has format {found!r}, expected {MANIFEST_FORMAT!r}")
    try:
        return Manifest.from_dict(parsed)
    except TypeError as err:  # a required key missing
        raise AutotuneError(f"manifest {path} is incomplete: {err}") from None


def read_manifest(so_path: Path) -> Manifest:
    """The manifest beside ``so_path``, or a clear error."""
    return parse_manifest(read_manifest_bytes(so_path), manifest_path(so_path))
