"""autotune: automated tuning of Transformer inference on Apache TVM.

``tune`` and ``compile`` drive the compiler; ``load`` is the production loader and imports only
TVM's runtime. Heavy modules load on first use, so ``import autotune`` stays cheap.
"""

from __future__ import annotations

from .errors import AutotuneError
from .runtime import load

__all__ = ["AutotuneError", "compile", "load", "tune"]
__version__ = "0.1.0"


def tune(*args, **kwargs) -> dict:
    """Tune an ONNX model; see ``autotune.jobs.tune``."""
    from .jobs import tune as _tune

    return _tune(*args, **kwargs)


def compile(*args, **kwargs) -> dict:  # noqa: A001 - the verb users know
    """Compile an ONNX model with its best records; see ``autotune.jobs.compile``."""
    from .jobs import compile as _compile

    return _compile(*args, **kwargs)
