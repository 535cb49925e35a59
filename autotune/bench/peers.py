"""The peers an artifact is timed against, on the same inputs: ONNX Runtime (fp32, and int8 by its
``quantize_dynamic``), OpenVINO (its CPU default precision, and fp32) and TVM's stock build."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import AutotuneError

TURN_PEERS = ("onnxruntime", "onnxruntime_int8", "openvino", "openvino_fp32")  # take turns with autotune
PEERS_ALL = (*TURN_PEERS, "untuned")


def peer_model(peer: str, model_path: Path, threads: int):
    """A peer of ``TURN_PEERS`` as a callable: inputs by name → its outputs, in the model's order.

    ``onnxruntime_int8`` is ONNX Runtime on ``quantize_dynamic``'s output (int8 weights per tensor,
    activations quantized per call), the int8 a user of ONNX Runtime gets in one call. ``openvino``
    is OpenVINO's CPU plugin on the ONNX file, latency mode, at its default precision (bf16 on
    AVX512-BF16 CPUs); ``openvino_fp32`` forces fp32.
    """
    from ..frontend.onnx_file import onnxruntime_session

    if peer == "onnxruntime":
        session = onnxruntime_session(model_path, threads)
        return lambda inputs: session.run(None, inputs)
    if peer == "onnxruntime_int8":
        with tempfile.TemporaryDirectory(prefix="autotune-ort-int8-") as work:
            session = onnxruntime_session(_quantized(model_path, Path(work)), threads)
        return lambda inputs: session.run(None, inputs)
    if peer in ("openvino", "openvino_fp32"):
        compiled = _openvino_model(model_path, threads, "f32" if peer == "openvino_fp32" else None)
        request = compiled.create_infer_request()
        return lambda inputs: list(request.infer(inputs).values())
    raise ValueError(f"unknown peer {peer!r}")


def turn_runner(peer: str, model_path: Path, inputs: dict[str, np.ndarray], threads: int):
    """The callable of a peer that takes turns with the artifact, on fixed ``inputs``."""
    model = peer_model(peer, model_path, threads)
    return lambda: model(inputs)


def _quantized(model_path: Path, folder: Path) -> Path:
    """``quantize_dynamic``'s int8 copy of the model (QInt8 weights), written in ``folder``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = folder / "model.int8.onnx"
    quantize_dynamic(str(model_path), str(quantized), weight_type=QuantType.QInt8)
    return quantized


def _openvino_model(model_path: Path, threads: int, precision: str | None):
    try:
        import openvino
    except ImportError:
        raise AutotuneError("the openvino peer needs OpenVINO: pip install -c constraints.txt "
                            "-e '.[peers]'") from None
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    return openvino.Core().compile_model(str(model_path), "CPU", config)


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
