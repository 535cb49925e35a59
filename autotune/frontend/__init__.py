"""Frontend: ONNX in, the fused Relax module and its tasks out.

Takes an ONNX file and frozen input shapes; gives an ``importer.ImportedModel`` (``onnx_file``
checks the file, ``importer`` freezes, simplifies and imports it, ``specs`` describes its inputs and
outputs), then the graph passes (``passes``: index guards, precision, fast math, attention fusion,
legalisation and operator fusion) and the ``tasks`` MetaSchedule tunes. ``inputs`` makes inputs
the model accepts, for validation and benchmarks.
"""
