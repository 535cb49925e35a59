"""CUDA device code embedded in artifacts: compiled at export, never left as source.

How TVM 0.27 makes CUDA modules: ``target.build.cuda`` generates CUDA C++ and hands it to the
runtime factory ``ffi.Module.create.cuda``, which exists only where TVM's CUDA runtime loads (a host
with a driver); it compiles the source there through ``tvm_callback_cuda_compile`` (NVRTC by
default, nvcc with ``TVM_CUDA_COMPILE_MODE=nvcc``). Without a driver the codegen falls back to a
module that keeps the *source* (format ``cuda``), and a host loading that ``.so`` would need a CUDA
compiler at load time. So export packs the imported modules itself (``fpack_imports``): every CUDA
module still holding source is compiled here, with nvcc (fatbin) or NVRTC (cubin), for the target's
arch, and its serialized bytes rewritten as ``[fmt][function table][binary]``, the layout TVM's
CUDA loader reads. CUDA builds also force that fallback (``TVM_COMPILE_FORCE_FALLBACK``) so hosts
with and without a GPU take the same path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct

from ..errors import AutotuneError

@contextlib.contextmanager
def codegen_fallback():
    """While building for CUDA: keep generated source in the module, to be compiled at export."""
    previous = os.environ.get("TVM_COMPILE_FORCE_FALLBACK")
    os.environ["TVM_COMPILE_FORCE_FALLBACK"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TVM_COMPILE_FORCE_FALLBACK", None)
        else:
            os.environ["TVM_COMPILE_FORCE_FALLBACK"] = previous


def compile_device_code(source: str, target) -> tuple[str, bytes]:
    """Compile CUDA C++ for ``target``'s arch: ``("fatbin", …)`` with nvcc, else ``("cubin", …)``."""
    from tvm.support import nvcc

    with target:
        if shutil.which("nvcc") or os.path.exists(os.path.join(_cuda_home(), "bin", "nvcc")):
            return "fatbin", bytes(nvcc.compile_cuda(source, "fatbin", compiler="nvcc"))
        try:
            import cuda.bindings.nvrtc  # noqa: F401
        except ImportError:
            raise AutotuneError("compiling CUDA kernels needs nvcc on PATH (CUDA toolkit) or NVRTC "
                                "(pip install cuda-bindings nvidia-cuda-nvrtc)") from None
        return "cubin", bytes(nvcc.compile_cuda(source, "cubin", compiler="nvrtc"))


def _cuda_home() -> str:
    return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


class _Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def u64(self) -> int:
        (value,) = struct.unpack_from("<Q", self.data, self.pos)
        self.pos += 8
        return value

    def chunk(self) -> bytes:
        size = self.u64()
        self.pos += size
        return self.data[self.pos - size:self.pos]


def _compiled_payload(payload: bytes, sources: list[str], target) -> bytes:
    """A CUDA module's serialized bytes with its source replaced by device code."""
    reader = _Reader(payload)
    if reader.chunk() != b"cuda":  # already device code (built by a GPU host's runtime)
        return payload
    for source in sources:
        code = source.encode()
        tail = _u64(len(code)) + code
        if payload.endswith(tail):
            fmt, binary = compile_device_code(source, target)
            function_table = payload[reader.pos:len(payload) - len(tail)]
            return _u64(len(fmt)) + fmt.encode() + function_table + _u64(len(binary)) + binary
    raise AutotuneError("cannot find the CUDA source of a module being exported")


def _rewrite_library_bin(blob: bytes, sources: list[str], target) -> bytes:
    """TVM's library binary (``<nbytes><import tree>(<kind>[<bytes>])*``) with CUDA compiled."""
    reader = _Reader(blob, 8)
    indptr = [reader.u64() for _ in range(reader.u64())]
    for _ in range(reader.u64()):
        reader.u64()
    out = bytearray(blob[8:reader.pos])
    for _ in range(len(indptr) - 1):
        kind = reader.chunk()
        out += _u64(len(kind)) + kind
        if kind != b"_lib":
            payload = reader.chunk()
            if kind == b"cuda":
                payload = _compiled_payload(payload, sources, target)
            out += _u64(len(payload)) + payload
    return _u64(len(out)) + bytes(out)


def pack_imports_compiled(target):
    """An ``fpack_imports`` for ``export_library`` that embeds device code instead of CUDA source."""

    def pack(module, is_system_lib: bool, prefix: str, workspace_dir: str) -> str:
        import tvm_ffi

        if is_system_lib:
            raise AutotuneError("CUDA artifacts are exported as shared libraries, not system libs")
        sources = [m.inspect_source("cuda") for m in
                   module._collect_from_import_tree(lambda m: m.kind == "cuda")]
        blob = tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")(module).numpy().tobytes()
        blob = _rewrite_library_bin(blob, sources, target)
        symbol = tvm_ffi.get_global_func("runtime.ModuleImportsBlobName")()
        path = os.path.join(workspace_dir, f"{prefix}devc.c")
        rows = (",".join(str(b) for b in blob[i:i + 64]) for i in range(0, len(blob), 64))
        with open(path, "w", encoding="ascii") as out:
            out.write('#ifdef __cplusplus\nextern "C" {\n#endif\n'
                      f"__attribute__((visibility(\"default\"))) const unsigned char "
                      f"{symbol}[{len(blob)}] = {{\n" + ",\n".join(rows) + "\n};\n"
                      "#ifdef __cplusplus\n}\n#endif\n")
        return path

    return pack


def embedded_device_code(artifact: str | os.PathLike | bytes) -> dict:
    """What an artifact embeds: counts of CUDA modules by format (fatbin, cubin, ptx, cuda_source).

    Reads the library binary from the file (or bytes), without loading it: works without a GPU.
    """
    if isinstance(artifact, bytes):
        data = artifact
    else:
        with open(artifact, "rb") as handle:
            data = handle.read()
    counts = {"fatbin": 0, "cubin": 0, "ptx": 0, "cuda_source": 0}
    marker = _u64(4) + b"cuda"
    start = 0
    while (start := data.find(marker, start)) >= 0:
        reader = _Reader(data, start + len(marker))
        try:
            payload = reader.chunk()
            fmt = _Reader(payload).chunk().decode()
        except (struct.error, UnicodeDecodeError):
            start += 1
            continue
        key = "cuda_source" if fmt == "cuda" else fmt
        if key in counts:
            counts[key] += 1
            start = reader.pos
        else:
            start += 1
    return counts
