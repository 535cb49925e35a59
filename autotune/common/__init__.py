"""Leaf helpers every stage may use; they import nothing else of autotune but ``errors``.

``text`` (one-line error text), ``files`` (hashes, atomic writes), ``records`` (provenance, a
record's latency, a model's estimated latency), ``tolerances`` (accuracy defaults), ``threads``
(TVM's runtime thread count), ``turns`` (the rotation that systems taking turns follow),
``relax`` (a Relax mutator as a module pass), ``results`` (the base of the typed results).
"""
