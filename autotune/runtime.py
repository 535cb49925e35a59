"""Production loader: verify an artifact against its manifest and run it. Needs only TVM's runtime.

Imports nothing of the compiler: ``TVM_USE_RUNTIME_LIB=1`` is set before TVM loads, unless the
process already imported TVM; so is ``TVM_NUM_THREADS`` (to the cores the artifact was tuned for)
unless the caller set it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from .errors import AutotuneError

MANIFEST_FORMAT = "autotune-artifact/1"


def manifest_path(so_path: str | Path) -> Path:
    """Where the manifest of ``so_path`` lives: beside it, ``model.so.json``."""
    return Path(f"{so_path}.json")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(so_path: Path) -> dict:
    """The manifest beside ``so_path``, or a clear error."""
    path = manifest_path(so_path)
    if not path.is_file():
        raise AutotuneError(f"no manifest {path} beside {so_path}: refusing to load an unverified "
                            "artifact (pass trust_unverified=True to load it anyway)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise AutotuneError(f"manifest {path} is unreadable: {err}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise AutotuneError(f"manifest {path} has format {manifest.get('format')!r}, "
                            f"expected {MANIFEST_FORMAT!r}")
    return manifest


def _check_host(manifest: dict, so_path: Path) -> None:
    from .targets import lacking_on_host

    if manifest.get("target_kind") == "cuda":
        return  # GPU and arch are checked when TVM's runtime is loaded (CompiledModel)
    missing = lacking_on_host(manifest.get("required_features", []))
    if missing:
        raise AutotuneError(f"{so_path} was compiled for mcpu={manifest.get('mcpu')}, which needs "
                            f"{', '.join(missing)}; this host's CPU lacks them")


class CompiledModel:
    """A loaded artifact: call it with numpy arrays by input name, get numpy arrays by output name.

    Safe to call from several threads at once (each thread gets its own VM over the shared module).
    """

    def __init__(self, so_path: Path, manifest: dict | None):
        if "tvm" not in sys.modules:
            os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
            cores = (manifest or {}).get("target", {}).get("num-cores")
            if cores:  # the threads the schedules were tuned for (TVM's own default may be fewer)
                os.environ.setdefault("TVM_NUM_THREADS", str(cores))
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.path = so_path
        self.manifest = manifest
        self._tvm = tvm
        self.device = tvm.cuda(0) if manifest and manifest.get("target_kind") == "cuda" else tvm.cpu(0)
        if manifest and manifest.get("cuda_arch"):
            from .cuda import check_device

            check_device(manifest["cuda_arch"], f"load {so_path}")
        elif not self.device.exist:
            raise AutotuneError(f"{so_path} needs a {self.device} device, which this host lacks")
        self._module = tvm.runtime.load_module(str(so_path))
        self._make_vm = lambda: VirtualMachine(self._module, self.device)
        self._per_thread = threading.local()
        self._vm()  # fail at load time, not at the first call, if the module cannot run
        self.inputs = manifest["inputs"] if manifest else None
        self.output_names = [o["name"] for o in manifest["outputs"]] if manifest else None

    def _vm(self):
        """This thread's VM: a VM holds per-call state, so threads never share one."""
        vm = getattr(self._per_thread, "vm", None)
        if vm is None:
            vm = self._per_thread.vm = self._make_vm()
        return vm

    def _arguments(self, arrays: dict[str, np.ndarray]) -> list:
        if self.inputs is None:
            return [self._tvm.runtime.tensor(a, self.device) for a in arrays.values()]
        expected = [spec["name"] for spec in self.inputs]
        if sorted(arrays) != sorted(expected):
            raise AutotuneError(f"inputs {sorted(arrays)} given, model takes {expected}")
        args = []
        for spec in self.inputs:
            array = np.ascontiguousarray(arrays[spec["name"]])
            if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
                raise AutotuneError(f"input {spec['name']!r}: got {array.dtype}{list(array.shape)}, "
                                    f"model was compiled for {spec['dtype']}{spec['shape']}")
            check_index_range(spec, array)
            args.append(self._tvm.runtime.tensor(array, self.device))
        return args

    def __call__(self, arrays: dict[str, np.ndarray] | None = None, **named: np.ndarray
                 ) -> dict[str, np.ndarray]:
        """Run the model on numpy inputs by name; a bad input raises ``AutotuneError`` and the
        model keeps serving."""
        args = self._arguments({**(arrays or {}), **named})
        try:
            result = self._vm()["main"](*args)
        except RuntimeError as err:  # the artifact's own checks (e.g. an index guard) stopped it
            raise AutotuneError(f"{self.path}: {_first_line(err)}") from None
        outputs = [result] if hasattr(result, "numpy") else list(result)
        names = self.output_names or [f"output_{i}" for i in range(len(outputs))]
        return {name: out.numpy() for name, out in zip(names, outputs)}


def check_index_range(spec: dict, array: np.ndarray, what: str = "input") -> None:
    """Raise naming the input, its first value outside the index range ``spec`` records (a table's
    rows, ONNX's negative indices included) and where it is; nothing for other inputs."""
    if "index_range" not in spec or array.size == 0:
        return
    low, high = spec["index_range"]
    outside = np.flatnonzero((array < low) | (array > high))
    if outside.size:
        where = [int(i) for i in np.unravel_index(outside[0], array.shape)]
        raise AutotuneError(f"{what} {spec['name']!r} holds {array.flat[outside[0]]} at {where}, outside "
                            f"[{low}, {high}], the rows of the table it indexes ({outside.size} such "
                            f"value{'s' if outside.size > 1 else ''})")


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def load(path: str | Path, trust_unverified: bool = False) -> CompiledModel:
    """Load a compiled ``.so`` after checking its manifest's sha256 and that this host can run it."""
    so_path = Path(path)
    if not so_path.is_file():
        raise AutotuneError(f"artifact not found: {so_path}")
    if trust_unverified and not manifest_path(so_path).is_file():
        return CompiledModel(so_path, None)
    manifest = read_manifest(so_path)
    actual = sha256_of(so_path)
    if actual != manifest.get("sha256") and not trust_unverified:
        raise AutotuneError(f"{so_path} does not match its manifest: sha256 {actual[:16]}… "
                            f"!= {str(manifest.get('sha256'))[:16]}…; refusing to load it")
    validation = manifest.get("validation") or {}
    if validation.get("passed") is False and not trust_unverified:
        raise AutotuneError(f"{so_path} failed its validation against ONNX Runtime when it was "
                            "compiled (see 'validation' in its manifest); refusing to load it")
    _check_host(manifest, so_path)
    return CompiledModel(so_path, manifest)
