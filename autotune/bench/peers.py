"""The peers an artifact is timed against, on the same inputs: ONNX Runtime and TVM's stock build."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def onnxruntime_runner(model_path: Path, inputs: dict[str, np.ndarray], threads: int):
    from ..frontend.onnx_file import onnxruntime_session

    session = onnxruntime_session(model_path, threads)
    return lambda: session.run(None, inputs)


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
