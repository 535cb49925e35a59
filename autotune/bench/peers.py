"""The peers an artifact is timed against, on the same inputs: ONNX Runtime (fp32, and int8 by its
``quantize_dynamic``), OpenVINO (its CPU default precision, and fp32) and TVM's stock build."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import AutotuneError

TURN_PEERS = ("onnxruntime", "onnxruntime_int8", "openvino", "openvino_fp32")  # take turns with autotune
PEERS_ALL = (*TURN_PEERS, "untuned")


def onnxruntime_runner(model_path: Path, inputs: dict[str, np.ndarray], threads: int):
    from ..frontend.onnx_file import onnxruntime_session

    session = onnxruntime_session(model_path, threads)
    return lambda: session.run(None, inputs)


def onnxruntime_int8_runner(model_path: Path, inputs: dict[str, np.ndarray], threads: int):
    """ONNX Runtime on ``quantize_dynamic``'s output (int8 weights per tensor, activations
    quantized per call), the int8 a user of ONNX Runtime gets in one call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="autotune-ort-int8-") as work:
        quantized = Path(work) / "model.int8.onnx"
        quantize_dynamic(str(model_path), str(quantized), weight_type=QuantType.QInt8)
        return onnxruntime_runner(quantized, inputs, threads)


def openvino_runner(model_path: Path, inputs: dict[str, np.ndarray], threads: int, precision: str | None):
    """OpenVINO's CPU plugin on the ONNX file, latency mode, ``threads`` threads; ``precision``
    None keeps the plugin's default (bf16 on AVX512-BF16 CPUs), ``"f32"`` forces fp32."""
    try:
        import openvino
    except ImportError:
        raise AutotuneError("the openvino peer needs OpenVINO: pip install -c constraints.txt "
                            "-e '.[peers]'") from None
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = openvino.Core().compile_model(str(model_path), "CPU", config)
    request = compiled.create_infer_request()
    return lambda: request.infer(inputs)


def turn_runner(peer: str, model_path: Path, inputs: dict[str, np.ndarray], threads: int):
    """The callable of a peer that takes turns with the artifact (one of ``TURN_PEERS``)."""
    if peer == "onnxruntime":
        return onnxruntime_runner(model_path, inputs, threads)
    if peer == "onnxruntime_int8":
        return onnxruntime_int8_runner(model_path, inputs, threads)
    if peer in ("openvino", "openvino_fp32"):
        return openvino_runner(model_path, inputs, threads, "f32" if peer == "openvino_fp32" else None)
    raise ValueError(f"unknown peer {peer!r}")


def untuned_runner(model_path: Path, manifest: dict, inputs: dict[str, np.ndarray]):
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from ..deploy.build import build_untuned
    from ..frontend.importer import load_model

    shapes = {spec["name"]: inputs[spec["name"]].shape for spec in manifest["inputs"]}
    model = load_model(model_path, shapes)
    target = tvm.target.Target(manifest["target"])
    vm = VirtualMachine(build_untuned(model.relax_mod, target), tvm.cpu())
    args = [tvm.runtime.tensor(inputs[spec["name"]]) for spec in manifest["inputs"]]
    return lambda: vm["main"](*args)
