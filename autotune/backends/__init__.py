"""Backends: everything that differs between target kinds, behind one interface.

Takes a ``tvm.target.Target`` (or a manifest's ``target_kind``); gives its ``Backend``: the TVM
pipeline and graph capabilities the frontend asks for, default schedules, search postprocessors
and tensor intrinsics, how finalists are re-timed, how candidates and artifacts are built and
exported, what a manifest records, and the check that this host can run the code. ``cpu`` (LLVM)
and ``cuda`` implement it; no other module branches on the target kind.
"""

from __future__ import annotations

from ..errors import AutotuneError
from .base import Backend
from .cpu import CPU
from .cuda import CUDA

BACKENDS = {backend.kind: backend for backend in (CPU, CUDA)}


def backend_named(kind: str) -> Backend:
    """The backend of TVM target kind ``kind``."""
    if kind not in BACKENDS:
        raise AutotuneError(f"targets of kind {kind!r} are not supported: use an llvm (CPU) or cuda target")
    return BACKENDS[kind]


def backend_for(target) -> Backend:
    """The backend of a ``tvm.target.Target``."""
    return backend_named(target.kind.name)


__all__ = ["Backend", "backend_for", "backend_named"]
