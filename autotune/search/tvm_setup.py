"""What MetaSchedule needs before searching, made cheap: the tensor intrinsics of one backend only.

``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose CUDA half defines hundreds of
``@T.prim_func`` intrinsics, each paying for ``inspect.stack()``: tens of seconds per process. Only
the backend's own intrinsics are registered here, with a cheaper ``inspect.stack`` while they parse.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import linecache
import logging
import sys
import types

PACKAGE = "tvm.s_tir.tensor_intrin"

logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)


def register_tensor_intrinsics(backend) -> None:
    """Register the tensor intrinsics ``backend``'s schedule rules need (``Backend.intrinsics``),
    under the same package name, and no more."""
    if PACKAGE not in sys.modules:  # an empty package: its submodules import one by one, on demand
        spec = importlib.util.find_spec(PACKAGE)
        package = types.ModuleType(PACKAGE)
        package.__path__ = list(spec.submodule_search_locations)
        package.__package__ = PACKAGE
        package.__spec__ = spec
        sys.modules[PACKAGE] = package
    if f"{PACKAGE}.{backend.intrinsics}" in sys.modules:
        return
    with _cheap_inspect_stack():
        importlib.import_module(f"{PACKAGE}.{backend.intrinsics}")


@contextlib.contextmanager
def _cheap_inspect_stack():
    """``inspect.stack`` without its per-frame ``getmodule`` scan, while intrinsics are parsed.

    ``inspect.stack()`` looks each frame's module up through all of ``sys.modules``: nearly all of
    the intrinsics' import time. Same frames, same one line of context (read through ``linecache``
    as ``inspect`` does).
    """
    def stack(context: int = 1):
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            line = linecache.getline(code.co_filename, frame.f_lineno) if context else ""
            frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name,
                                            [line] if line else None, 0 if line else None))
            frame = frame.f_back
        return frames

    original, inspect.stack = inspect.stack, stack
    try:
        yield
    finally:
        inspect.stack = original
