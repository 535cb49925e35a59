#!/usr/bin/env python3
"""What quantizing activations per tensor instead of per row costs in accuracy (JSON).

autotune's ``--precision int8`` quantizes each activation row (token) to u8 with its own scale and
zero point (``schedules.int8.quantized_rows``). The per-tensor alternative is what ONNX Runtime's
``quantize_dynamic`` writes (``DynamicQuantizeLinear``: one scale and zero point per tensor), with
exact integer products; run with int8 weights per column (as autotune's) and per tensor (its
default), it shows the cost of each choice on the shipped real sentences, against ONNX Runtime fp32
on the same file. autotune's own figures for the model are in ``compile --precision int8 --json``
(``validation.text_accuracy``).

    python scripts/activation_quantization.py tuning_logs/models/all-MiniLM-L6-v2.onnx
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

WEIGHTS = {"weights_per_column": True, "weights_per_tensor": False}  # quantize_dynamic's per_channel


def per_tensor_accuracy(model: Path, threads: int) -> dict:
    """Text accuracy of per-tensor activations, per weight granularity (``WEIGHTS``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from autotune.deploy import text_accuracy
    from autotune.frontend.importer import load_model
    from autotune.frontend.onnx_file import onnxruntime_session

    specs = load_model(model, {"input_ids": (1, 128), "attention_mask": (1, 128)}).inputs
    if not text_accuracy.applies(specs):
        raise SystemExit(f"{model}: the shipped sentences do not fit its inputs")
    reference = onnxruntime_session(model, threads)
    output = reference.get_outputs()[0].name
    result = {}
    with tempfile.TemporaryDirectory(prefix="autotune-quantized-") as folder:
        for name, per_channel in WEIGHTS.items():
            quantized = Path(folder) / f"{name}.onnx"
            quantize_dynamic(str(model), str(quantized), weight_type=QuantType.QInt8, per_channel=per_channel)
            session = onnxruntime_session(quantized, threads)
            accuracy = text_accuracy.measure(lambda x: session.run([output], x)[0],
                                             lambda x: reference.run([output], x)[0], specs)
            result[name] = accuracy.as_dict()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("model", type=Path, help="a BERT-style encoder's ONNX file (input_ids, attention_mask)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps({"model": str(args.model), "activations_per_tensor": per_tensor_accuracy(args.model, args.threads)},
                     indent=2))


if __name__ == "__main__":
    main()
