"""Production loader: verify an artifact against its manifest and run it. Needs only TVM's runtime.

Imports nothing of the compiler: ``TVM_USE_RUNTIME_LIB=1`` is set before TVM loads, unless the
process already imported TVM; and TVM gets the threads the artifact was tuned for unless the
caller set ``TVM_NUM_THREADS``.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np

from ..backends import backend_named
from ..common.files import sha256_of
from ..common.text import first_line
from ..common.threads import default_tvm_threads
from ..errors import AutotuneError
from ..frontend.specs import TensorSpec
from .manifest import Manifest, manifest_path, read_manifest


class CompiledModel:
    """A loaded artifact: call it with numpy arrays by input name, get numpy arrays by output name.

    Safe to call from several threads at once (each thread gets its own VM over the shared module).
    """

    def __init__(self, so_path: Path, manifest: Manifest | None):
        if "tvm" not in sys.modules:
            os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
            default_tvm_threads(manifest.target.get("num-cores") if manifest else None)
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.path = so_path
        self.manifest = manifest
        self._tvm = tvm
        backend = backend_named(manifest.target_kind if manifest else "llvm")
        self.device = backend.device()
        if manifest is not None:
            backend.check_loadable(manifest, so_path)
        if not self.device.exist:
            raise AutotuneError(f"{so_path} needs a {self.device} device, which this host lacks")
        self._module = tvm.runtime.load_module(str(so_path))
        self._make_vm = lambda: VirtualMachine(self._module, self.device)
        self._per_thread = threading.local()
        self._vm()  # fail at load time, not at the first call, if the module cannot run
        self.inputs = manifest.inputs if manifest else None
        self._specs = manifest.input_specs() if manifest else None
        self.output_names = manifest.output_names() if manifest else None

    def _vm(self):
        """This thread's VM: a VM holds per-call state, so threads never share one."""
        vm = getattr(self._per_thread, "vm", None)
        if vm is None:
            vm = self._per_thread.vm = self._make_vm()
        return vm

    def _arguments(self, arrays: dict[str, np.ndarray]) -> list:
        if self._specs is None:
            return [self._tvm.runtime.tensor(a, self.device) for a in arrays.values()]
        expected = [spec.name for spec in self._specs]
        if sorted(arrays) != sorted(expected):
            raise AutotuneError(f"inputs {sorted(arrays)} given, model takes {expected}")
        return [self._tvm.runtime.tensor(_checked(spec, arrays[spec.name]), self.device)
                for spec in self._specs]

    def __call__(self, arrays: dict[str, np.ndarray] | None = None, **named: np.ndarray
                 ) -> dict[str, np.ndarray]:
        """Run the model on numpy inputs by name; a bad input raises ``AutotuneError`` and the
        model keeps serving."""
        args = self._arguments({**(arrays or {}), **named})
        try:
            result = self._vm()["main"](*args)
        except RuntimeError as err:  # the artifact's own checks (e.g. an index guard) stopped it
            raise AutotuneError(f"{self.path}: {first_line(err)}") from None
        outputs = [result] if hasattr(result, "numpy") else list(result)
        names = self.output_names or [f"output_{i}" for i in range(len(outputs))]
        return {name: out.numpy() for name, out in zip(names, outputs)}


def _checked(spec: TensorSpec, value) -> np.ndarray:
    """``value`` as a contiguous array of the spec's shape and dtype, its indices in range."""
    array = np.ascontiguousarray(value)
    if tuple(array.shape) != spec.shape or str(array.dtype) != spec.dtype:
        raise AutotuneError(f"input {spec.name!r}: got {array.dtype}{list(array.shape)}, "
                            f"model was compiled for {spec.dtype}{list(spec.shape)}")
    spec.check_indices(array)
    return array


def load(path: str | Path, trust_unverified: bool = False) -> CompiledModel:
    """Load a compiled ``.so`` after checking its manifest's sha256, that it passed validation, and
    that this host can run it."""
    so_path = Path(path)
    if not so_path.is_file():
        raise AutotuneError(f"artifact not found: {so_path}")
    if trust_unverified and not manifest_path(so_path).is_file():
        return CompiledModel(so_path, None)
    manifest = read_manifest(so_path)
    actual = sha256_of(so_path)
    if actual != manifest.sha256 and not trust_unverified:
        raise AutotuneError(f"{so_path} does not match its manifest: sha256 {actual[:16]}… "
                            f"!= {str(manifest.sha256)[:16]}…; refusing to load it")
    if (manifest.validation or {}).get("passed") is False and not trust_unverified:
        raise AutotuneError(f"{so_path} failed its validation against ONNX Runtime when it was "
                            "compiled (see 'validation' in its manifest); refusing to load it")
    return CompiledModel(so_path, manifest)
