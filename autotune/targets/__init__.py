"""Targets: what to compile for, and what this host can run.

Takes a ``--target`` name, JSON or tag; gives a ``tvm.target.Target`` (``names``), this host's CPU
features and cores (``host``) and its CUDA GPU's arch (``gpu``). Nothing here imports the compiler
at module level: the production loader uses ``host`` and ``gpu``.
"""
