"""Schedules: how a task's loops run before and beside the search.

Takes a task's PrimFunc; gives ``tvm.s_tir.Schedule``s. ``heuristics`` holds the CPU rules (matmul,
attention, rows, the dot-product kernels of ``dot`` with ``bf16`` and ``int8``) and the pass that
schedules whatever no record reached; ``prefetch`` rewrites a
heuristic matmul to prefetch its next weight panel; ``manual`` is the registry of hand-written
schedules (``@autotune.manual.schedule``).
"""
