"""Runtime: the production loader. Takes a ``.so`` and its manifest; gives a callable model.

Imports only TVM's runtime, numpy and autotune's own leaf modules, never the compiler. The compile
side (``deploy``) validates every artifact through this same loader, so it sits before ``deploy``
in the import order.
"""

from __future__ import annotations

from .generator import Translator, load
from .loader import CompiledModel, verify_artifact
from .manifest import Manifest, manifest_path, read_manifest

__all__ = ["CompiledModel", "Manifest", "Translator", "load", "manifest_path", "read_manifest", "verify_artifact"]
