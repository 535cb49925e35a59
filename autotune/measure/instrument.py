"""The VM instrument that times every call in place, built from ``kernel_timer.cc``.

A Python instrument costs microseconds a call and disturbs the kernels around it (on a model of
3-µs kernels the times it reports sum to 1.7× the plain inference); this one is a C++ function
the VM calls directly, a clock read before and after each call. It is built once per source and
tvm-ffi version with the C++ compiler TVM itself uses for artifacts, into the user's cache folder
(written under a temporary name and renamed, so a reader never loads half a file).
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from ..errors import AutotuneError

SOURCE = Path(__file__).with_name("kernel_timer.cc")


def _cache_folder() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "autotune"


def _build(library: Path) -> None:
    import tvm_ffi

    root = Path(tvm_ffi.__file__).parent
    compiler = os.environ.get("CXX", "g++")
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as folder:
        staged = Path(folder) / library.name
        command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", f"-I{root / 'include'}", str(SOURCE),
                   "-o", str(staged), f"-L{root / 'lib'}", "-ltvm_ffi", f"-Wl,-rpath,{root / 'lib'}"]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as err:
            raise AutotuneError(f"cannot build the kernel timer {SOURCE.name} with the C++ compiler {compiler} "
                                f"(set $CXX): {getattr(err, 'stderr', '') or err}") from None
        os.replace(staged, library)


@functools.cache
def kernel_timer():
    """The loaded timer module: ``instrument()`` makes the VM instrument, ``take()`` returns and
    clears the totals (``parse_totals`` reads them)."""
    import tvm_ffi

    key = hashlib.sha256(SOURCE.read_bytes() + tvm_ffi.__version__.encode()).hexdigest()[:16]
    library = _cache_folder() / f"kernel_timer-{key}.so"
    if not library.exists():
        _build(library)
    return tvm_ffi.load_module(str(library))


def parse_totals(text: str) -> dict[str, tuple[float, int]]:
    """``take()``'s lines as {symbol: (seconds, calls)}."""
    totals = {}
    for line in text.splitlines():
        name, seconds, calls = line.split("\t")
        totals[name] = (float(seconds), int(calls))
    return totals
