"""Bench: how fast an artifact serves, against its peers on the same inputs and threads.

Takes a ``.so`` (and the ONNX model its manifest names); gives a ``bench.BenchResult``: each
system's latency percentiles and throughput, the systems taking turns (``timing``) so that a
shared machine's drift hits them alike, ONNX Runtime (fp32, int8), OpenVINO (its default precision,
fp32) and untuned TVM as peers (``peers``).
"""
