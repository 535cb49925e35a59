"""TVM objects as JSON text for the database, read back exactly; workload keys."""

from __future__ import annotations

import hashlib
import json


def _plain_json(value):
    """A TVM JSON tree as Python values; an object (a layout's IndexMap) as its JSON string."""
    import tvm
    from tvm.tirx import FloatImm, IntImm
    from tvm_ffi import Array, Map

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (IntImm, FloatImm)):
        return value.value
    if isinstance(value, (Array, list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, Map):
        return {_plain_json(k): _plain_json(v) for k, v in value.items()}
    return tvm.ir.save_json(value)  # how Trace.FromJSON reads an IndexMap input back


def record_json(record) -> str:
    """A tuning record as JSON text that ``TuningRecord.from_json`` reads back.

    Not ``record.as_json()``: in TVM 0.27 it raises on traces with ``transform_layout`` (weight
    pre-packing), whose IndexMap input it leaves as an object instead of its JSON string.
    """
    from tvm.s_tir.meta_schedule import _ffi_api

    return json.dumps(_plain_json(_ffi_api.TuningRecordAsJSON(record)))


def workload_from_json(value):
    """A MetaSchedule workload read back from its JSON (text, or the tree ``json.loads`` gives), once the
    TIR ops autotune's kernels contain are registered with TVM (``schedules.bf16.register_rounding``)."""
    from tvm.s_tir import meta_schedule as ms

    from ..schedules.bf16 import register_rounding

    register_rounding()
    return ms.database.Workload.from_json(value)


def workload_keys(mod) -> tuple[str, str, str]:
    """(structural hash, sha256 of the TIR text, TIR text) of a task's IRModule."""
    import tvm_ffi

    text = mod.script()
    return str(tvm_ffi.structural_hash(mod)), hashlib.sha256(text.encode()).hexdigest(), text
