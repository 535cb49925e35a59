"""Example Transformers built in code with ``onnx.helper``: no download, no torch.

Two families, both exported with dynamic ``batch``/``seq`` dims exactly as a PyTorch export
would leave them, shape subgraphs included (``Shape``/``Gather``/``Trilu`` for the causal mask):

* ``translation``: a Marian-style encoder-decoder (the headline case), inputs ``input_ids`` and
  ``decoder_input_ids``, output ``logits``;
* ``encoder``: a BERT-style encoder, inputs ``input_ids``, output ``last_hidden_state``;
* ``bert``: a BERT-family encoder as Hugging Face exports it, inputs ``input_ids``,
  ``attention_mask`` and ``token_type_ids`` (a 2-row embedding), output ``last_hidden_state``.
"""

from __future__ import annotations

import contextlib
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
TOKEN_TYPES = 2  # BERT's segment embedding: sentence A and sentence B


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of an example Transformer."""

    vocab: int = 1000
    d_model: int = 128
    heads: int = 4
    ffn: int = 512
    encoder_layers: int = 2
    decoder_layers: int = 2
    max_positions: int = 512
    seed: int = 0


TINY = ModelConfig(vocab=64, d_model=32, heads=2, ffn=64, encoder_layers=1, decoder_layers=1,
                   max_positions=64)


class _GraphBuilder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, config: ModelConfig):
        self.config = config
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._rng = np.random.default_rng(config.seed)
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, prefix: str, *shape: int, scale: float | None = None) -> str:
        std = scale if scale is not None else 1.0 / math.sqrt(shape[0])
        return self.const(prefix, (self._rng_for(prefix).standard_normal(shape) * std).astype(np.float32))

    def _rng_for(self, _prefix: str) -> np.random.Generator:
        """Where weight ``prefix`` is drawn from: the one stream, in the order weights are made."""
        return self._rng

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, d_in: int, d_out: int) -> str:
        y = self.op("MatMul", [x, self.weight("w", d_in, d_out)])
        return self.op("Add", [y, self.const("b", np.zeros(d_out, np.float32))])

    def layer_norm(self, x: str) -> str:
        d = self.config.d_model
        gamma = self.const("ln_g", np.ones(d, np.float32))
        beta = self.const("ln_b", np.zeros(d, np.float32))
        return self.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)

    def gelu(self, x: str) -> str:
        scaled = self.op("Div", [x, self.const("sqrt2", np.array(math.sqrt(2.0), np.float32))])
        erf = self.op("Erf", [scaled])
        one_plus = self.op("Add", [erf, self.const("one", np.array(1.0, np.float32))])
        half_x = self.op("Mul", [x, self.const("half", np.array(0.5, np.float32))])
        return self.op("Mul", [half_x, one_plus])

    def split_heads(self, x: str) -> str:
        c = self.config
        shape = self.const("shape", np.array([0, 0, c.heads, c.d_model // c.heads], np.int64))
        return self.op("Transpose", [self.op("Reshape", [x, shape])], perm=[0, 2, 1, 3])

    def merge_heads(self, x: str) -> str:
        shape = self.const("shape", np.array([0, 0, self.config.d_model], np.int64))
        return self.op("Reshape", [self.op("Transpose", [x], perm=[0, 2, 1, 3]), shape])

    def attention(self, query_in: str, kv_in: str, mask: str | None) -> str:
        c = self.config
        q = self.split_heads(self.linear(query_in, c.d_model, c.d_model))
        k = self.split_heads(self.linear(kv_in, c.d_model, c.d_model))
        v = self.split_heads(self.linear(kv_in, c.d_model, c.d_model))
        return self.linear(self.attend(q, k, v, mask), c.d_model, c.d_model)

    def attend(self, q: str, k: str, v: str, mask: str | None) -> str:
        """Scaled dot-product attention of heads ``[batch, heads, len, head]``, heads merged."""
        c = self.config
        kt = self.op("Transpose", [k], perm=[0, 1, 3, 2])
        scores = self.op("MatMul", [q, kt])
        scale = self.const("scale", np.array(1.0 / math.sqrt(c.d_model // c.heads), np.float32))
        scores = self.op("Mul", [scores, scale])
        if mask is not None:
            scores = self.op("Add", [scores, mask])
        probs = self.op("Softmax", [scores], axis=-1)
        return self.merge_heads(self.op("MatMul", [probs, v]))

    def feed_forward(self, x: str) -> str:
        c = self.config
        return self.linear(self.gelu(self.linear(x, c.d_model, c.ffn)), c.ffn, c.d_model)

    def embed(self, ids: str, type_ids: str | None = None) -> str:
        """Token embedding plus learned positions sliced to the dynamic sequence length (plus the
        token-type embedding of ``type_ids``, two rows, as BERT has)."""
        c = self.config
        tokens = self.op("Gather", [self.weight("tok_emb", c.vocab, c.d_model, scale=0.02), ids])
        if type_ids is not None:
            types = self.op("Gather", [self.weight("type_emb", TOKEN_TYPES, c.d_model, scale=0.02), type_ids])
            tokens = self.op("Add", [tokens, types])
        seq_len = self.op("Gather", [self.op("Shape", [ids]), self.const("one", np.array([1], np.int64))])
        positions = self.op("Slice", [self.weight("pos_emb", c.max_positions, c.d_model, scale=0.02),
                                      self.const("zero", np.array([0], np.int64)), seq_len,
                                      self.const("axis0", np.array([0], np.int64))])
        return self.layer_norm(self.op("Add", [tokens, positions]))

    def causal_mask(self, ids: str) -> str:
        """-1e9 above the diagonal, built from the input's shape as a PyTorch export does."""
        seq_len = self.op("Gather", [self.op("Shape", [ids]), self.const("one", np.array([1], np.int64))])
        square = self.op("Concat", [seq_len, seq_len], axis=0)
        ones = self.op("ConstantOfShape", [square],
                       value=numpy_helper.from_array(np.array([1.0], np.float32)))
        upper = self.op("Trilu", [ones, self.const("k1", np.array(1, np.int64))], upper=1)
        return self.op("Mul", [upper, self.const("neg", np.array(-1e9, np.float32))])

    def padding_mask(self, mask: str) -> str:
        """``attention_mask [batch, seq]`` (1 keep, 0 pad) as scores to add: 0, or float32's lowest
        for padding, broadcast over heads and query rows, as Hugging Face's BERT computes it."""
        wide = self.op("Unsqueeze", [mask, self.const("axes", np.array([1, 2], np.int64))])
        keep = self.op("Cast", [wide], to=TensorProto.FLOAT)
        dropped = self.op("Sub", [self.const("one", np.array(1.0, np.float32)), keep])
        return self.op("Mul", [dropped, self.const("lowest", np.array(np.finfo(np.float32).min, np.float32))])

    def encoder_layer(self, x: str, mask: str | None = None) -> str:
        x = self.layer_norm(self.op("Add", [x, self.attention(x, x, mask)]))
        return self.layer_norm(self.op("Add", [x, self.feed_forward(x)]))

    def decoder_layer(self, y: str, memory: str, mask: str) -> str:
        y = self.layer_norm(self.op("Add", [y, self.attention(y, y, mask)]))
        y = self.layer_norm(self.op("Add", [y, self.attention(y, memory, None)]))
        return self.layer_norm(self.op("Add", [y, self.feed_forward(y)]))


def _ids_input(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", f"{name}_seq"])


def _finish(builder: _GraphBuilder, name: str, inputs: list, output: str, out_name: str,
            out_shape: list, extra_outputs: list | None = None) -> onnx.ModelProto:
    builder.nodes.append(helper.make_node("Identity", [output], [out_name], name="output"))
    outputs = [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape), *(extra_outputs or [])]
    graph = helper.make_graph(builder.nodes, name, inputs, outputs, builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="autotune.models")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def bert_encoder(config: ModelConfig = ModelConfig()) -> onnx.ModelProto:
    """A BERT-style encoder: ``input_ids [batch, seq]`` → ``last_hidden_state``."""
    b = _GraphBuilder(config)
    x = b.embed("input_ids")
    for _ in range(config.encoder_layers):
        x = b.encoder_layer(x)
    return _finish(b, "bert_encoder", [_ids_input("input_ids")], x, "last_hidden_state",
                   ["batch", "input_ids_seq", config.d_model])


def bert(config: ModelConfig = ModelConfig()) -> onnx.ModelProto:
    """A BERT-family encoder: ``input_ids``, ``attention_mask``, ``token_type_ids`` [batch, seq]
    → ``last_hidden_state``."""
    b = _GraphBuilder(config)
    x = b.embed("input_ids", "token_type_ids")
    mask = b.padding_mask("attention_mask")
    for _ in range(config.encoder_layers):
        x = b.encoder_layer(x, mask)
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
              for name in ("input_ids", "attention_mask", "token_type_ids")]
    return _finish(b, "bert", inputs, x, "last_hidden_state", ["batch", "seq", config.d_model])


def translation(config: ModelConfig = ModelConfig()) -> onnx.ModelProto:
    """A Marian-style encoder-decoder: source and target ids → next-token ``logits``."""
    b = _GraphBuilder(config)
    memory = b.embed("input_ids")
    for _ in range(config.encoder_layers):
        memory = b.encoder_layer(memory)
    mask = b.causal_mask("decoder_input_ids")
    y = b.embed("decoder_input_ids")
    for _ in range(config.decoder_layers):
        y = b.decoder_layer(y, memory, mask)
    logits = b.op("MatMul", [y, b.weight("lm_head", config.d_model, config.vocab)])
    return _finish(b, "translation", [_ids_input("input_ids"), _ids_input("decoder_input_ids")],
                   logits, "logits", ["batch", "decoder_input_ids_seq", config.vocab])


SEQ2SEQ_TOKENS = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
EOS_LOGIT_BIAS = 2.0  # sentences of a random-weight model end at different lengths


class _KeyedBuilder(_GraphBuilder):
    """Draws each weight from its name (the ``scope`` path), so the graphs of a model in several
    parts (an encoder, two decoder steps) hold the same weights."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.prefix = ""

    @contextlib.contextmanager
    def scope(self, name: str):
        saved, self.prefix = self.prefix, f"{self.prefix}{name}."
        try:
            yield
        finally:
            self.prefix = saved

    def _rng_for(self, prefix: str) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, zlib.crc32(f"{self.prefix}{prefix}".encode())])

    def heads_of(self, x: str, name: str) -> str:
        """The projection ``name`` of ``x`` split into heads."""
        with self.scope(name):
            return self.split_heads(self.linear(x, self.config.d_model, self.config.d_model))

    def attention_out(self, q: str, k: str, v: str, mask: str | None) -> str:
        with self.scope("out"):
            return self.linear(self.attend(q, k, v, mask), self.config.d_model, self.config.d_model)

    def keyed_feed_forward(self, x: str) -> str:
        c = self.config
        with self.scope("ffn_in"):
            hidden = self.gelu(self.linear(x, c.d_model, c.ffn))
        with self.scope("ffn_out"):
            return self.linear(hidden, c.ffn, c.d_model)

    def positions_from(self, start: str | None, length: str) -> str:
        """Learned positions ``start .. start+length-1`` (``start`` None: from 0), looked up by
        ``Gather`` of a ``Range`` as a PyTorch export does."""
        c = self.config
        with self.scope("emb"):
            table = self.weight("pos_emb", c.max_positions, c.d_model, scale=0.02)
        begin = self.scalar(start) if start else self.const("zero", np.array(0, np.int64))
        end = self.op("Add", [begin, self.scalar(length)])
        indices = self.op("Range", [begin, end, self.const("step", np.array(1, np.int64))])
        return self.op("Gather", [table, indices])

    def scalar(self, x: str) -> str:
        return self.op("Squeeze", [x, self.const("axes", np.array([0], np.int64))])

    def dim_of(self, x: str, axis: int) -> str:
        return self.op("Gather", [self.op("Shape", [x]), self.const("axis", np.array([axis], np.int64))])

    def embed_at(self, ids: str, start: str | None) -> str:
        with self.scope("emb"):
            tokens = self.op("Gather", [self.weight("tok_emb", self.config.vocab, self.config.d_model,
                                                    scale=0.02), ids])
        return self.layer_norm(self.op("Add", [tokens, self.positions_from(start, self.dim_of(ids, 1))]))

    def logits(self, y: str) -> str:
        c = self.config
        bias = np.zeros(c.vocab, np.float32)
        bias[SEQ2SEQ_TOKENS["eos_token_id"]] = EOS_LOGIT_BIAS
        with self.scope("lm_head"):
            return self.op("Add", [self.op("MatMul", [y, self.weight("w", c.d_model, c.vocab)]),
                                   self.const("b", bias)])


def _seq2seq_encoder(config: ModelConfig) -> onnx.ModelProto:
    b = _KeyedBuilder(config)
    with b.scope("enc"):
        x = b.embed_at("input_ids", None)
        mask = b.padding_mask("attention_mask")
        for layer in range(config.encoder_layers):
            with b.scope(str(layer)):
                q, k, v = (b.heads_of(x, n) for n in "qkv")
                x = b.layer_norm(b.op("Add", [x, b.attention_out(q, k, v, mask)]))
                x = b.layer_norm(b.op("Add", [x, b.keyed_feed_forward(x)]))
    src = ["batch_size", "encoder_sequence_length"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, src) for n in ("input_ids", "attention_mask")]
    return _finish(b, "encoder", inputs, x, "last_hidden_state", [*src, config.d_model])


def _seq2seq_decoder(config: ModelConfig, with_past: bool) -> onnx.ModelProto:
    """The first decoder step (``with_past`` False: it writes the whole cache) or a later step (it
    reads the cache and returns its own keys and values grown by the new token)."""
    c = config
    b = _KeyedBuilder(config)
    head = c.d_model // c.heads
    past = {f"past_key_values.{i}.{side}.{kind}": helper.make_tensor_value_info(
        f"past_key_values.{i}.{side}.{kind}", TensorProto.FLOAT,
        ["batch_size", c.heads, "past_decoder_sequence_length" if side == "decoder" else "encoder_sequence_length",
         head]) for i in range(c.decoder_layers) for side in ("decoder", "encoder") for kind in ("key", "value")}
    first_past = next(iter(past))
    presents: list[tuple[str, str]] = []
    with b.scope("dec"):
        start = b.dim_of(first_past, 2) if with_past else None
        y = b.embed_at("input_ids", start)
        self_mask = None if with_past else b.causal_mask("input_ids")
        cross_mask = b.padding_mask("encoder_attention_mask")
        for layer in range(c.decoder_layers):
            with b.scope(str(layer)):
                y = _cached_decoder_layer(b, y, layer, self_mask, cross_mask, with_past, presents)
        logits = b.logits(y)
    batch = ["batch_size"]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [*batch, "decoder_sequence_length"]),
              helper.make_tensor_value_info("encoder_attention_mask", TensorProto.INT64,
                                            [*batch, "encoder_sequence_length"])]
    inputs += list(past.values()) if with_past else [helper.make_tensor_value_info(
        "encoder_hidden_states", TensorProto.FLOAT, [*batch, "encoder_sequence_length", c.d_model])]
    extra = []
    for name, tensor in presents:
        b.nodes.append(helper.make_node("Identity", [tensor], [name], name=name))
        length = ("encoder_sequence_length" if ".encoder." in name else
                  "past_decoder_sequence_length + 1" if with_past else "decoder_sequence_length")
        extra.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch_size", c.heads, length, head]))
    return _finish(b, "decoder_with_past" if with_past else "decoder", inputs, logits, "logits",
                   [*batch, "decoder_sequence_length", c.vocab], extra)


def _cached_decoder_layer(b: _KeyedBuilder, y: str, layer: int, self_mask, cross_mask, with_past: bool,
                          presents: list) -> str:
    with b.scope("self"):
        q, k, v = (b.heads_of(y, n) for n in "qkv")
        if with_past:
            k, v = (b.op("Concat", [f"past_key_values.{layer}.decoder.{kind}", new], axis=2)
                    for kind, new in (("key", k), ("value", v)))
        presents += [(f"present.{layer}.decoder.key", k), (f"present.{layer}.decoder.value", v)]
        y = b.layer_norm(b.op("Add", [y, b.attention_out(q, k, v, self_mask)]))
    with b.scope("cross"):
        q = b.heads_of(y, "q")
        if with_past:
            k, v = f"past_key_values.{layer}.encoder.key", f"past_key_values.{layer}.encoder.value"
        else:
            k, v = (b.heads_of("encoder_hidden_states", n) for n in "kv")
            presents += [(f"present.{layer}.encoder.key", k), (f"present.{layer}.encoder.value", v)]
        y = b.layer_norm(b.op("Add", [y, b.attention_out(q, k, v, cross_mask)]))
    with b.scope("ffn"):
        return b.layer_norm(b.op("Add", [y, b.keyed_feed_forward(y)]))


def write_seq2seq_example(folder: str | Path, config: ModelConfig = ModelConfig()) -> Path:
    """Write a translation model in Hugging Face Optimum's seq2seq layout to ``folder``: the encoder,
    the first decoder step and the decoder step with past keys and values (``frontend.seq2seq``),
    with a ``config.json`` naming its token ids."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(_seq2seq_encoder(config), str(folder / "encoder_model.onnx"))
    onnx.save(_seq2seq_decoder(config, with_past=False), str(folder / "decoder_model.onnx"))
    onnx.save(_seq2seq_decoder(config, with_past=True), str(folder / "decoder_with_past_model.onnx"))
    (folder / "config.json").write_text(json.dumps({"vocab_size": config.vocab, "d_model": config.d_model,
                                                    **SEQ2SEQ_TOKENS}, indent=2))
    return folder


EXAMPLES = {"translation": translation, "encoder": bert_encoder, "bert": bert}


def write_example(name: str, path: str | Path, config: ModelConfig = ModelConfig()) -> Path:
    """Write the example model ``name`` (see ``EXAMPLES``) to ``path`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(EXAMPLES[name](config), str(path))
    return path
