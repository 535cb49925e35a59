"""The bundled example models are valid ONNX with dynamic dims and run in ONNX Runtime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from autotune.models import TINY, bert_encoder, translation


@pytest.mark.parametrize("build", [translation, bert_encoder])
def test_example_is_valid_onnx_with_dynamic_dims(build):
    model = build(TINY)
    onnx.checker.check_model(model, full_check=True)
    dims = [d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim]
    assert "batch" in dims and all(dims), dims


def test_translation_runs_for_two_sequence_lengths():
    session = ort.InferenceSession(translation(TINY).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    for src, tgt in [(16, 8), (12, 5)]:
        (logits,) = session.run(None, {"input_ids": np.ones((2, src), np.int64),
                                       "decoder_input_ids": np.ones((2, tgt), np.int64)})
        assert logits.shape == (2, tgt, TINY.vocab)
        assert np.isfinite(logits).all()


def test_decoder_is_causal():
    """Changing a later target token must not change earlier positions' logits."""
    session = ort.InferenceSession(translation(TINY).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    src = np.arange(10, dtype=np.int64)[None]
    tgt = np.arange(6, dtype=np.int64)[None]
    changed = tgt.copy()
    changed[0, -1] = 40
    (a,) = session.run(None, {"input_ids": src, "decoder_input_ids": tgt})
    (b,) = session.run(None, {"input_ids": src, "decoder_input_ids": changed})
    np.testing.assert_allclose(a[:, :-1], b[:, :-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[:, -1], b[:, -1])
