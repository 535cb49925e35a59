#!/usr/bin/env python3
"""Tuned autotune vs ONNX Runtime vs untuned TVM over batch sizes and sequence lengths (JSON + PNG).

Each model is compiled once for the whole grid: one range artifact (``--shape input_ids=1..B x
L..S``) serves every ``batch x seq`` configuration. Where padding the sequence would change the
model's outputs (no attention mask: the bundled ``encoder`` and ``translation``'s source), the
sequence cannot be ranged widely, and each sequence length gets its own artifact with the batch
ranged. For each configuration, in one run:

* ``autotune_heuristic``: the range artifact compiled with no search at all (heuristic defaults);
* ``autotune``: the range artifact compiled after one range job tuned the configurations named by
  ``--tune`` within ``--trials``/``--minutes`` (other buckets reuse whatever the model's database
  holds for their workloads, or keep the heuristics);
* ``onnxruntime``: the same ONNX file, same thread count, taking turns with autotune;
* ``autotune_heuristic_bf16``, ``autotune_heuristic_int8`` (``--precisions bf16 int8``): the heuristic
  range artifact in that precision, with its accuracy check;
* ``untuned_tvm``: TVM's stock build at that shape, timed for a few runs only (tens of times slower).

Models: ``translation`` (the bundled Marian-style encoder-decoder at one target token: encoder plus a
decoder step), ``encoder`` (the bundled BERT-style encoder), and ONNX files written by
``scripts/export_models.py`` (``minilm``: all-MiniLM-L6-v2 with its real weights; ``albert``).
Prints one JSON document; writes ``latency_vs_batch.png`` and ``throughput_vs_seq.png`` per model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))

import autotune  # noqa: E402
from autotune.bench.bench import bench  # noqa: E402
from autotune.bench.plots import latency_and_throughput  # noqa: E402
from autotune.bench.timing import BenchConfig  # noqa: E402
from autotune.errors import AutotuneError  # noqa: E402
from autotune.models import ModelConfig, write_example  # noqa: E402

BUNDLED = {"translation": ModelConfig(), "encoder": ModelConfig(encoder_layers=1, decoder_layers=0)}
EXPORTED = {"minilm": "all-MiniLM-L6-v2.onnx", "albert": "albert.onnx"}


def model_path(name: str, out_dir: Path, exported_dir: Path) -> Path:
    """The ONNX file of ``name``: a bundled model written here, or an exported one."""
    if name in BUNDLED:
        return write_example(name, out_dir / f"{name}.onnx", BUNDLED[name])
    path = exported_dir / EXPORTED[name]
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run scripts/export_models.py {name} -o {exported_dir}")
    return path


def range_shapes(name: str, batches: list[int], seqs: list[int] | None) -> dict[str, str]:
    """The ranges one artifact serves: every batch of the grid, and its sequences (``seqs``) or the
    single length given; a translation model decodes one target token."""
    batch = f"1..{max(batches)}"
    seq = f"{min(seqs)}..{max(seqs)}" if len(seqs) > 1 else str(seqs[0])
    if name == "translation":
        return {"input_ids": f"{batch}x{seq}", "decoder_input_ids": f"{batch}x1"}
    if name in ("minilm", "albert"):
        return {"input_ids": f"{batch}x{seq}", "attention_mask": f"{batch}x{seq}"}
    return {"input_ids": f"{batch}x{seq}"}


def sizes_of(artifact: Path, batch: int, seq: int) -> dict[str, int] | None:
    """The ranged dims of a configuration, by the names the model gives them (None: the artifact
    serves one shape)."""
    plan = autotune.load(artifact).plan
    if plan is None:
        return None
    batch_dim, *seq_dims = [d for d in plan.inputs["input_ids"] if isinstance(d, str)]
    return {batch_dim: batch, **{d: seq for d in seq_dims}}


def measure(so_path: Path, others: dict[str, Path], model: Path, sizes: dict[str, int], seconds: float,
            untuned_runs: int, extra_peers: tuple[str, ...] = ()) -> dict:
    """p50/p90/p99 and throughput of every build and ONNX Runtime (and ``extra_peers``: OpenVINO,
    ONNX Runtime int8) taking turns, then untuned TVM."""
    peers = ("onnxruntime", *extra_peers, "untuned") if untuned_runs else ("onnxruntime", *extra_peers)
    config = BenchConfig(duration_s=seconds, warmup=3, untuned_runs=untuned_runs)
    return bench(so_path, config, model, peers=peers, others=others, sizes=sizes).as_dict()["systems"]


def build_artifacts(name: str, model: Path, shapes: dict[str, str], tune: list[str], args, db: str,
                    out_dir: Path, tag: str) -> dict:
    """The heuristic and tuned range artifacts (and the bf16 one) for ``shapes``, with what built them."""
    heuristic_db = f"sqlite:///{out_dir / (tag + '_empty.db')}"
    built: dict = {"shapes": shapes, "paths": {}}
    started = time.monotonic()
    compiled = autotune.compile(model, out_dir / f"{tag}_heuristic.so", shapes=shapes, db=heuristic_db)
    built["heuristic_compile_s"] = round(time.monotonic() - started, 1)
    built["heuristic_validation"] = compiled["validation"]
    built["paths"]["autotune_heuristic"] = out_dir / f"{tag}_heuristic.so"
    if tune:
        summary = autotune.tune(model, shapes, db=db, trials=args.trials, tune_shapes=",".join(tune),
                                time_budget_s=args.minutes * 60 if args.minutes else None)
        built["tuning"] = {k: summary[k] for k in ("trials_measured", "tuning_seconds", "time_split_s", "confirmed")}
    compiled = autotune.compile(model, out_dir / f"{tag}.so", shapes=shapes, db=db)
    built["validation"] = compiled["validation"]
    built["tasks_tuned"] = f"{compiled['tasks_tuned']}/{compiled['tasks']}"
    built["paths"]["autotune"] = out_dir / f"{tag}.so"
    for precision in args.precisions:  # heuristic schedules in reduced precision, beside the fp32 ones
        compiled = autotune.compile(model, out_dir / f"{tag}_heuristic_{precision}.so", shapes=shapes,
                                    db=heuristic_db, precision=precision)
        built[f"heuristic_{precision}_validation"] = compiled["validation"]
        built["paths"][f"autotune_heuristic_{precision}"] = out_dir / f"{tag}_heuristic_{precision}.so"
    return built


def artifacts_for(name: str, model: Path, args, db: str, out_dir: Path) -> list[tuple[list[int], dict]]:
    """``(sequence lengths served, artifacts)``: one range artifact for the grid, or one per
    sequence length where padding the sequence would change the outputs."""
    tune = [t for t in args.tune]
    try:
        return [(args.seqs, build_artifacts(name, model, range_shapes(name, args.batches, args.seqs), tune,
                                            args, db, out_dir, f"{name}_range"))]
    except AutotuneError as err:
        if "padding it changes" not in str(err):
            raise
        print(json.dumps({"model": name, "one artifact per sequence length": str(err)}), file=sys.stderr)
    return [([seq], build_artifacts(name, model, range_shapes(name, args.batches, [seq]),
                                    [t for t in tune if t.endswith(f"x{seq}")], args, db, out_dir,
                                    f"{name}_s{seq}")) for seq in args.seqs]


def run_config(name: str, model: Path, batch: int, seq: int, built: dict, args) -> dict:
    """Benchmark one configuration on its range artifacts."""
    paths = built["paths"]
    sizes = sizes_of(paths["autotune"], batch, seq)
    untuned_runs = args.untuned_runs if batch * seq <= args.untuned_max_tokens else 0
    others = {k: v for k, v in paths.items() if k != "autotune"}
    row: dict = {"model": name, "batch": batch, "seq": seq, "artifact": str(paths["autotune"])}
    row["systems"] = measure(paths["autotune"], others, model, sizes, args.seconds, untuned_runs, args.peers)
    reference = row["systems"]["onnxruntime"]["p50_ms"]
    row["p50_vs_onnxruntime"] = {system: round(stats["p50_ms"] / reference, 3)
                                 for system, stats in row["systems"].items()}
    row["turns_vs_onnxruntime"] = {system: stats["turns_vs_onnxruntime"]
                                   for system, stats in row["systems"].items() if stats.get("turns_vs_onnxruntime")}
    fp32 = row["turns_vs_onnxruntime"].get("autotune")
    if fp32:  # each system's per-turn ratio over autotune fp32's, both taken against the same turns
        row["speedup_over_autotune_fp32"] = {
            system: round(fp32["median"] / ratios["median"], 3) for system, ratios in row["turns_vs_onnxruntime"].items()}
    print(json.dumps({"done": f"{name}_b{batch}_s{seq}", "p50_vs_onnxruntime": row["p50_vs_onnxruntime"],
                      "per_turn_median": {s: round(r["median"], 3) for s, r in row["turns_vs_onnxruntime"].items()}}),
          file=sys.stderr)
    return row


def peer_text_accuracy(model: Path, peers: tuple[str, ...]) -> dict:
    """Each peer's embeddings of the shipped real sentences against ONNX Runtime fp32's (as compile
    reports autotune's), where the sentences fit the model."""
    import numpy as np

    from autotune.bench.peers import TURN_PEERS, peer_model
    from autotune.deploy import text_accuracy
    from autotune.frontend.importer import load_model
    from autotune.frontend.onnx_file import onnxruntime_session

    try:
        specs = load_model(model, {"input_ids": (1, 128), "attention_mask": (1, 128)}).inputs
    except AutotuneError:  # not a BERT-style encoder taking these two
        return {}
    if not peers or not text_accuracy.applies(specs):
        return {}
    threads = int(os.environ["TVM_NUM_THREADS"])
    reference = onnxruntime_session(model, threads)
    first = reference.get_outputs()[0].name
    result = {}
    for peer in (p for p in peers if p in TURN_PEERS and p != "onnxruntime"):
        run = peer_model(peer, model, threads)
        accuracy = text_accuracy.measure(lambda x: np.asarray(run(x)[0]),
                                         lambda x: reference.run([first], x)[0], specs)
        result[peer] = accuracy.as_dict() if accuracy else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("models", nargs="+", choices=[*BUNDLED, *EXPORTED])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seqs", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--tune", nargs="*", default=["1x128"],
                        help="BATCHxSEQ configurations the range job tunes")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--minutes", type=float, default=30.0, help="search time budget of each range job")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing window per configuration")
    parser.add_argument("--untuned-runs", type=int, default=3)
    parser.add_argument("--precisions", nargs="*", choices=["bf16", "int8"], default=[],
                        help="also time heuristic builds in these precisions (native dot products)")
    parser.add_argument("--peers", type=lambda text: tuple(text.split(",")), default=(),
                        help="more peers taking turns: openvino (its default precision), openvino_fp32, "
                             "onnxruntime_int8 (quantize_dynamic); their accuracy on the shipped real "
                             "sentences is reported where those fit the model")
    parser.add_argument("--untuned-max-tokens", type=int, default=128,
                        help="time untuned TVM only where batch*seq is at most this (it is slow)")
    parser.add_argument("--exported-dir", type=Path, default=Path("tuning_logs/models"))
    parser.add_argument("-o", "--out-dir", type=Path, default=Path("tuning_logs/bench_models"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report = {"threads": int(os.environ["TVM_NUM_THREADS"]), "models": {}}
    for name in args.models:
        model = model_path(name, args.out_dir, args.exported_dir)
        db = f"sqlite:///{args.out_dir / (name + '.db')}"
        artifacts = artifacts_for(name, model, args, db, args.out_dir)
        rows = [run_config(name, model, b, s, built, args) for seqs, built in artifacts for s in seqs
                for b in args.batches]
        report["models"][name] = {"artifacts": [{**built, "paths": {k: str(v) for k, v in built["paths"].items()}}
                                                for _, built in artifacts],
                                  "configs": rows, "plots": latency_and_throughput(name, rows, args.out_dir),
                                  "peer_text_accuracy": peer_text_accuracy(model, args.peers)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
