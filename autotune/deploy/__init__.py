"""Deploy: tuned records made into an artifact users can ship.

Takes the fused module (``frontend``) and a database choosing one record per task (``store``);
gives a validated ``.so`` and its manifest (``runtime.manifest``): ``build`` applies the records
(heuristic defaults for tasks without one), ``export`` stages the files beside the destination,
``validate`` compares the staged artifact with ONNX Runtime through the production loader, and
only then are the files renamed over the destination.
"""
