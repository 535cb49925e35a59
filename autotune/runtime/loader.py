"""Production loader: verify an artifact against its manifest and run it. Needs only TVM's runtime.

Imports nothing of the compiler: ``TVM_USE_RUNTIME_LIB=1`` is set before TVM loads, unless the
process already imported TVM; and TVM gets the threads the artifact was tuned for (no more than
the cores this process may use) unless the caller set ``TVM_NUM_THREADS``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from ..backends import backend_named
from ..common.text import first_line
from ..common.threads import default_tvm_threads
from ..errors import AutotuneError
from ..frontend.buckets import Bucket, ShapePlan, bucket_function_name
from ..frontend.specs import TensorSpec
from ..targets.host import usable_cores
from .manifest import Manifest, manifest_path, parse_manifest, read_manifest_bytes
from .trust import public_key_from, verify_signature


class CompiledModel:
    """A loaded artifact: call it with numpy arrays by input name, get numpy arrays by output name.

    Safe to call from several threads at once (each thread gets its own VM over the shared module).
    """

    def __init__(self, so_path: Path, manifest: Manifest | None, data: bytes):
        if "tvm" not in sys.modules:
            os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
        tuned_for = manifest.target.get("num-cores") if manifest else None
        default_tvm_threads(min(int(tuned_for), usable_cores()) if tuned_for else None)
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.path = so_path
        self.manifest = manifest
        self._tvm = tvm
        backend = backend_named(manifest.target_kind if manifest else "llvm")
        self.device = backend.device()
        self._on_host = backend.device_type == "cpu"  # numpy reads and writes its tensors in place
        if manifest is not None:
            backend.check_loadable(manifest, so_path)
        if not self.device.exist:
            raise AutotuneError(f"{so_path} needs a {self.device} device, which this host lacks")
        self._module = _load_private_copy(tvm, data)
        self._make_vm = lambda: VirtualMachine(self._module, self.device)
        self._per_thread = threading.local()
        self._vm()  # fail at load time, not at the first call, if the module cannot run
        self.inputs = manifest.inputs if manifest else None
        self._specs = manifest.input_specs() if manifest else None
        self.output_names = manifest.output_names() if manifest else None
        self.plan = ShapePlan.from_dict(manifest.shape_plan) if manifest and manifest.shape_plan else None

    def _vm(self):
        """This thread's VM: a VM holds per-call state, so threads never share one."""
        return self._thread_state("vm", self._make_vm)

    def _thread_state(self, name: str, make):
        """This thread's ``name`` (its VM, entry functions, input tensors), made at its first use."""
        value = getattr(self._per_thread, name, None)
        if value is None:
            value = make()
            setattr(self._per_thread, name, value)
        return value

    def _arguments(self, arrays: dict[str, np.ndarray]) -> tuple[str, list, dict[str, int] | None]:
        """The entry function to call, its arguments, and the call's sizes per ranged dim."""
        if self._specs is None:
            return "main", [self._tvm.runtime.tensor(a, self.device) for a in arrays.values()], None
        expected = [spec.name for spec in self._specs]
        if sorted(arrays) != sorted(expected):
            raise AutotuneError(f"inputs {sorted(arrays)} given, model takes {expected}")
        if self.plan is None:
            return "main", self._device_inputs("main", {spec.name: _checked(spec, arrays[spec.name])
                                                        for spec in self._specs}), None
        given = {spec.name: np.ascontiguousarray(arrays[spec.name]) for spec in self._specs}
        sizes = self.plan.sizes_of(given, {spec.name: spec.dtype for spec in self._specs})
        bucket = self.plan.bucket_for(sizes)
        return bucket.function, self._device_inputs(bucket.function, self.plan.pad(given, bucket)), sizes

    def _device_inputs(self, function: str, arrays: dict[str, np.ndarray]) -> list:
        """``arrays`` as ``function``'s arguments, in input order. On the host each is copied into this
        thread's tensor for that function and input, allocated at its first call: a call then costs
        a numpy copy per input, not a TVM allocation (whose Python path, its caches cold after a
        model's run, takes longer than the copy)."""
        if not self._on_host:
            return [self._tvm.runtime.tensor(arrays[spec.name], self.device) for spec in self._specs]
        buffers = self._thread_state("inputs", dict)  # (entry function, input name) -> (tensor, numpy view)
        tensors = []
        for spec in self._specs:
            array = arrays[spec.name]
            key = (function, spec.name)
            if key not in buffers:
                tensor = self._tvm.runtime.empty(array.shape, str(array.dtype), self.device)
                buffers[key] = (tensor, np.from_dlpack(tensor))
            tensor, view = buffers[key]
            np.copyto(view, array)
            tensors.append(tensor)
        return tensors

    def _host_array(self, tensor, function: str) -> np.ndarray:
        """An output of entry function ``function`` as a numpy array: on the host, a view of the tensor
        the call allocated (it lives as long as the array), a copy where it shares memory with one of
        the function's reused input tensors."""
        if not self._on_host:
            return tensor.numpy()
        array = np.from_dlpack(tensor)
        reused = self._thread_state("inputs", dict)  # none without a manifest: fresh tensors each call
        if any(np.may_share_memory(array, view) for (entry, _), (_, view) in reused.items() if entry == function):
            return array.copy()
        return array

    def __call__(self, arrays: dict[str, np.ndarray] | None = None, **named: np.ndarray
                 ) -> dict[str, np.ndarray]:
        """Run the model on numpy inputs by name; a bad input raises ``AutotuneError`` and the
        model keeps serving. A range artifact takes any shape in its ranges (``inputs``)."""
        given = {**(arrays or {}), **named}
        function, args, sizes = self._arguments(given)
        try:
            outputs = self.run_on_device(function, args)
        except AutotuneError:
            self._name_index_outside(given)
            raise
        names = self.output_names or [f"output_{i}" for i in range(len(outputs))]
        arrays_out = {name: self._host_array(out, function) for name, out in zip(names, outputs)}
        return arrays_out if sizes is None else self.plan.crop(arrays_out, sizes)


    @property
    def input_specs(self) -> list[TensorSpec] | None:
        """The inputs in the order the entry functions take them (None without a manifest)."""
        return self._specs

    def bucket_at(self, sizes: dict[str, int]):
        """The bucket built for exactly ``sizes`` (a value of every ranged dim), not the one that
        ``__call__`` would route them to: parts of a generator must agree on their shapes."""
        if self.plan is None or sizes.keys() != self.plan.ladders.keys() or any(
                sizes[d] not in rungs for d, rungs in self.plan.ladders.items()):
            raise AutotuneError(f"{self.path} has no bucket for {sizes}")
        return Bucket(bucket_function_name(sizes), dict(sizes))

    def _name_index_outside(self, arrays: dict[str, np.ndarray]) -> None:
        """Raise naming the first index outside its table, its input and where it is, if any: called
        once a call has stopped. Every artifact whose manifest gives an input's index range checks
        it in a guard kernel before any table read (``frontend.guards``), so the happy path skips
        this scan and the guard's stop still gets the precise message."""
        for spec in self._specs or ():
            if spec.name in arrays:
                spec.check_indices(np.asarray(arrays[spec.name]))

    def _entry(self, function: str):
        """This thread's VM's entry function ``function``, looked up once."""
        entries = self._thread_state("entries", dict)
        if function not in entries:
            entries[function] = self._vm()[function]
        return entries[function]

    def run_on_device(self, function: str, args: list) -> list:
        """Run entry function ``function`` on device tensors (in input order, shaped for its bucket)
        and return its outputs as device tensors: a caller that keeps state on the device (a KV
        cache) avoids the host. The caller has checked the values the artifact cannot."""
        try:
            result = self._entry(function)(*args)
        except RuntimeError as err:  # the artifact's own checks (e.g. an index guard) stopped it
            raise AutotuneError(f"{self.path}: {first_line(err)}") from None
        return [result] if hasattr(result, "numpy") else list(result)


def _checked(spec: TensorSpec, value) -> np.ndarray:
    """``value`` as a contiguous array of the spec's shape and dtype (its indices are checked by the
    artifact's guards: ``CompiledModel._name_index_outside``)."""
    array = np.ascontiguousarray(value)
    if tuple(array.shape) != spec.shape or str(array.dtype) != spec.dtype:
        raise AutotuneError(f"input {spec.name!r}: got {array.dtype}{list(array.shape)}, "
                            f"model was compiled for {spec.dtype}{list(spec.shape)}")
    return array


def _load_private_copy(tvm, data: bytes):
    """The TVM module of ``data`` (the bytes that were verified), loaded from a copy that only this
    process can reach, removed once loaded: the file at the artifact's path may change after it
    was hashed, the copy cannot."""
    folder = tempfile.mkdtemp(prefix="autotune-load-")  # mode 0700
    try:
        path = os.path.join(folder, "artifact.so")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return tvm.runtime.load_module(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _warn_unverified(so_path: Path) -> None:
    message = (f"autotune: WARNING: loading {so_path} with trust_unverified=True: its manifest, hash and "
               "validation are not enforced; never do this with an artifact you did not build")
    warnings.warn(message, stacklevel=3)
    print(message, file=sys.stderr)


def verify_artifact(so_path: Path, trust_unverified: bool = False, expected_sha256: str | None = None,
                    public_key: str | Path | None = None, expected_manifest_sha256: str | None = None
                    ) -> tuple[bytes, Manifest | None]:
    """The bytes of ``so_path`` and its manifest, once both are verified as ``load`` describes
    (imports no TVM: ``autotune verify`` uses it alone). ``expected_manifest_sha256`` pins the
    manifest's bytes too: with ``expected_sha256``, the caller has verified the document that pins
    both (a signed generator manifest), and no signature of this artifact is asked for."""
    if not so_path.is_file():
        raise AutotuneError(f"artifact not found: {so_path}")
    pinned = expected_sha256 is not None and expected_manifest_sha256 is not None
    key = None if pinned else public_key_from(public_key)
    if trust_unverified:
        _warn_unverified(so_path)
    data = so_path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256.lower():
        raise AutotuneError(f"{so_path} is not the pinned artifact: sha256 {actual[:16]}… != expected "
                            f"{expected_sha256[:16]}…; refusing to load it")
    if trust_unverified and key is None and not manifest_path(so_path).is_file():
        return data, None
    manifest_bytes = read_manifest_bytes(so_path)
    if expected_manifest_sha256 is not None and hashlib.sha256(manifest_bytes).hexdigest() != expected_manifest_sha256:
        raise AutotuneError(f"{manifest_path(so_path)} is not the pinned manifest of {so_path}; refusing to load it")
    manifest = parse_manifest(manifest_bytes, manifest_path(so_path))
    if key is not None:
        verify_signature(so_path, manifest_bytes, key)
    if actual != manifest.sha256 and (not trust_unverified or key is not None):
        raise AutotuneError(f"{so_path} does not match its manifest: sha256 {actual[:16]}… "
                            f"!= {str(manifest.sha256)[:16]}…; refusing to load it")
    if (manifest.validation or {}).get("passed") is False and not trust_unverified:
        raise AutotuneError(f"{so_path} failed its validation against ONNX Runtime when it was "
                            "compiled (see 'validation' in its manifest); refusing to load it")
    return data, manifest


def load(path: str | Path, trust_unverified: bool = False, expected_sha256: str | None = None,
         public_key: str | Path | None = None, expected_manifest_sha256: str | None = None) -> CompiledModel:
    """Load a compiled ``.so`` after checking it, and return the model to call.

    Args:
        path: the ``.so``; its manifest ``path.json`` lies beside it.
        trust_unverified: load even without a manifest, or one that does not match or failed
            validation (warns loudly). A pinned hash and a required signature still apply.
        expected_sha256: the hash the deployer pinned (``autotune history artifacts`` prints it).
        public_key: an Ed25519 public key file; the manifest must carry a valid signature of it
            (``autotune sign``). ``$AUTOTUNE_PUBLIC_KEY`` makes this the default.
        expected_manifest_sha256: the manifest's pinned hash (``verify_artifact``).

    Raises:
        AutotuneError: the artifact does not verify, failed validation, or cannot run on this host.
    """
    so_path = Path(path)
    data, manifest = verify_artifact(so_path, trust_unverified, expected_sha256, public_key, expected_manifest_sha256)
    return CompiledModel(so_path, manifest, data)
