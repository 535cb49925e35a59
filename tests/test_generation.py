"""Generation for translation models: the seq2seq export layout, and the greedy and beam search
loop (``runtime.generation``) driving ONNX Runtime, checked against a loop that recomputes every
position without a cache and, where torch is installed, against transformers' own ``generate``."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autotune.errors import AutotuneError
from autotune.frontend.seq2seq import PARTS, OnnxRuntimeSteps, read_seq2seq
from autotune.models import SEQ2SEQ_TOKENS, TINY, write_seq2seq_example
from autotune.runtime.generation import GenerationConfig, check_source, generate
from autotune.targets.host import lacking_on_host

SMALL = replace(TINY, vocab=200, d_model=32, heads=4, decoder_layers=2)
EOS = (SEQ2SEQ_TOKENS["eos_token_id"],)


@pytest.fixture(scope="module")
def seq2seq_folder(tmp_path_factory) -> Path:
    return write_seq2seq_example(tmp_path_factory.mktemp("seq2seq") / "model", SMALL)


def _config(max_new_tokens: int = 12, beams: int = 1, **more) -> GenerationConfig:
    return GenerationConfig(max_new_tokens, SEQ2SEQ_TOKENS["decoder_start_token_id"], EOS,
                            SEQ2SEQ_TOKENS["pad_token_id"], num_beams=beams, **more)


def _source_batch(rng: np.random.Generator, vocab: int, batch: int, length: int):
    """Token ids of sentences of different lengths, padded at the end, and their mask."""
    ids = rng.integers(2, vocab, (batch, length))
    mask = np.ones_like(ids)
    for row in range(batch):
        used = int(rng.integers(1, length + 1))
        ids[row, used:], mask[row, used:] = SEQ2SEQ_TOKENS["pad_token_id"], 0
    return ids, mask


def _sentences(tokens: np.ndarray) -> list[list[int]]:
    """Each row's tokens up to and including its first end of sentence."""
    out = []
    for row in tokens.tolist():
        ends = [i for i, t in enumerate(row[1:], start=1) if t in EOS]
        out.append(row[: ends[0] + 1] if ends else row)
    return out


class _Recomputing:
    """The same model without a cache: every step runs the first-step decoder on the whole prefix
    (``Seq2SeqSteps`` with the prefix as the cache)."""

    def __init__(self, layout):
        self.inner = OnnxRuntimeSteps(layout, 1)

    def encode(self, input_ids, attention_mask):
        return self.inner.encode(input_ids, attention_mask)

    def first_step(self, tokens, encoded):
        return self._logits(tokens, encoded), tokens

    def next_step(self, tokens, encoded, prefix):
        grown = np.concatenate([prefix, tokens], axis=1)
        return self._logits(grown, encoded), grown

    def select(self, state, rows):
        return self.inner.select(state, rows) if isinstance(state, dict) else state[rows]

    def _logits(self, prefix, encoded):
        logits, *_ = self.inner._sessions["first_step"].run(None, {"input_ids": prefix, **encoded})
        return logits[:, -1]


def test_the_layout_reports_the_sizes_its_parts_agree_on(seq2seq_folder):
    layout = read_seq2seq(seq2seq_folder)
    assert (layout.vocab, layout.hidden, layout.layers, layout.heads, layout.head_dim) == (200, 32, 2, 4, 8)
    assert layout.tokens == SEQ2SEQ_TOKENS
    assert layout.past_names()[:2] == ["past_key_values.0.decoder.key", "past_key_values.0.decoder.value"]


@pytest.mark.parametrize("beams", [1, 3])
def test_the_cached_loop_gives_the_tokens_of_recomputing_every_position(seq2seq_folder, beams):
    layout = read_seq2seq(seq2seq_folder)
    cached, recomputing = OnnxRuntimeSteps(layout, 1), _Recomputing(layout)
    rng = np.random.default_rng(beams)
    lengths = set()
    for _ in range(6):
        ids, mask = _source_batch(rng, layout.vocab, int(rng.integers(1, 5)), int(rng.integers(2, 12)))
        ours = generate(cached, ids, mask, _config(beams=beams))
        assert _sentences(ours) == _sentences(generate(recomputing, ids, mask, _config(beams=beams)))
        lengths |= {len(s) for s in _sentences(ours)}
    assert len(lengths) > 1  # sentences ended at different steps: stopping was exercised


def test_beam_search_differs_from_greedy_and_scores_at_least_as_well(seq2seq_folder):
    layout = read_seq2seq(seq2seq_folder)
    steps, scorer = OnnxRuntimeSteps(layout, 1), _Recomputing(layout)
    ids, mask = _source_batch(np.random.default_rng(7), layout.vocab, 8, 10)
    greedy = _sentences(generate(steps, ids, mask, _config()))
    beams = _sentences(generate(steps, ids, mask, _config(beams=4)))
    assert greedy != beams
    for row, (g, b) in enumerate(zip(greedy, beams)):
        source = (ids[row:row + 1], mask[row:row + 1])
        assert _score(scorer, source, b) >= _score(scorer, source, g) - 1e-4


def _score(scorer: _Recomputing, source, sentence: list[int]) -> float:
    """Length-normalised log-probability of ``sentence`` (transformers' beam score, penalty 1)."""
    encoded = scorer.encode(*source)
    total = 0.0
    for position in range(1, len(sentence)):
        logits = scorer._logits(np.array([sentence[:position]]), encoded)[0].astype(np.float64)
        total += logits[sentence[position]] - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    return total / (len(sentence) - 1)


@pytest.mark.parametrize("damage, message", [
    ("missing", "missing decoder_with_past_model.onnx (the decoder step with past keys and values)"),
    ("vocabulary", "disagree on the vocabulary"),
    ("hidden", "disagree on the hidden size"),
    ("cache", "cache entry"),
])
def test_a_folder_whose_parts_do_not_fit_is_refused_naming_the_part(tmp_path, seq2seq_folder, damage, message):
    folder = tmp_path / "model"
    shutil.copytree(seq2seq_folder, folder)
    other = write_seq2seq_example(tmp_path / "other", {
        "missing": SMALL, "vocabulary": replace(SMALL, vocab=300), "hidden": replace(SMALL, d_model=64, heads=8),
        "cache": replace(SMALL, heads=2)}[damage])
    if damage == "missing":
        (folder / PARTS["next_step"]).unlink()
    elif damage == "hidden":
        shutil.copy(other / PARTS["encoder"], folder / PARTS["encoder"])
    else:
        shutil.copy(other / PARTS["next_step"], folder / PARTS["next_step"])
    with pytest.raises(AutotuneError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_seq2seq(folder)


@pytest.mark.parametrize("ids, mask, message", [
    (np.array([[5, 200]]), None, r"input_ids\[0, 1\] is 200, outside the vocabulary \[0, 199\]"),
    (np.array([[5, -1]]), None, r"input_ids\[0, 1\] is -1"),
    (np.array([5, 6]), None, r"input_ids must be integer token ids \[batch, length\]"),
    (np.array([[0.5, 1.0]]), None, "input_ids must be integer token ids"),
    (np.array([[5, 6]]), np.ones((1, 3), np.int64), "attention_mask must be integers shaped like input_ids"),
])
def test_a_bad_source_batch_gets_one_clear_error(ids, mask, message):
    with pytest.raises(AutotuneError, match=message):
        check_source(ids, mask, 200)


@pytest.mark.parametrize("settings, message", [
    (dict(max_new_tokens=0), "max_new_tokens must be at least 1"),
    (dict(num_beams=0), "num_beams must be at least 1"),
    (dict(eos_token_id=(900,)), r"eos_token_id \[900\] is outside the vocabulary"),
    (dict(early_stopping="sometimes"), "early_stopping must be"),
])
def test_generation_settings_the_model_cannot_take_are_refused(settings, message):
    with pytest.raises(AutotuneError, match=message):
        replace(_config(), **settings).check(200)


def test_max_new_tokens_beyond_the_compiled_past_range_is_refused():
    with pytest.raises(AutotuneError, match="beyond the past length this model was compiled for: at most 16"):
        _config(max_new_tokens=17).check(200, max_new_tokens_limit=16)


TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None


@pytest.mark.skipif(not TORCH, reason="needs the export extra (torch, transformers): pip install -e '.[export]'")
def test_tokens_match_transformers_generate_greedy_and_beam(tmp_path):
    import torch

    export = _export_script()
    model = export.marian_model(vocab=500, d_model=64, layers=2, heads=4, ffn=128)
    layout = read_seq2seq(export.export_marian(tmp_path, 12, model=model))
    steps = OnnxRuntimeSteps(layout, 1)
    rng = np.random.default_rng(0)
    counts = {1: [0, 0], 4: [0, 0]}
    for _ in range(16):
        ids, mask = _source_batch(rng, layout.vocab, int(rng.integers(1, 5)), int(rng.integers(2, 16)))
        for beams, count in counts.items():
            ours = _sentences(generate(steps, ids, mask, _config(16, beams)))
            with torch.no_grad():
                theirs = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                        max_new_tokens=16, num_beams=beams, do_sample=False).numpy()
            same = [a == b for a, b in zip(ours, _sentences(theirs))]
            count[0] += sum(same)
            count[1] += len(same)
    assert counts[1][0] >= 0.99 * counts[1][1], counts
    assert counts[4][0] >= 0.95 * counts[4][1], counts


def _export_script():
    path = Path(__file__).parent.parent / "scripts" / "export_models.py"
    spec = importlib.util.spec_from_file_location("export_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tuned_generator(tmp_path_factory, seq2seq_folder):
    """``tune --task seq2seq`` for a handful of trials: the database and the job's summary."""
    import autotune

    out = tmp_path_factory.mktemp("generator")
    db = f"sqlite:///{out / 'tuning.db'}"
    return db, autotune.tune(seq2seq_folder, {"input_ids": "1..4x1..8"}, db=db, trials=10, confirm=False,
                             task="seq2seq", max_new_tokens=6)


@pytest.fixture(scope="module")
def compiled_generator(tmp_path_factory, seq2seq_folder, tuned_generator):
    import autotune

    out = tmp_path_factory.mktemp("generator")
    result = autotune.compile(seq2seq_folder, out / "translator.json", {"input_ids": ((1, 4), (1, 8))},
                              db=tuned_generator[0], task="seq2seq", max_new_tokens=6)
    return Path(result.manifest), result


def test_one_tuning_job_covers_the_three_parts_with_the_budget_where_generation_spends_its_time(
        tuned_generator, compiled_generator):
    summary = tuned_generator[1]
    shares = summary.budget_shares
    assert set(summary.parts) == {"encoder", "first_step", "next_step"}
    assert abs(sum(shares.values()) - 1) <= 0.02 and min(shares.values()) >= 0.09
    assert shares["next_step"] > shares["encoder"]  # 5 cached steps a generation against 1 encoder call
    assert summary.trials_measured == sum(p["trials_measured"] for p in summary.parts.values()) > 0
    assert all(p["trials_measured"] >= 1 for p in summary.parts.values())
    assert sum(p["tasks_tuned"] for p in compiled_generator[1].parts.values()) > 0  # compile found the records


@pytest.mark.parametrize("flags, message", [
    (["--shape", "input_ids=1..4x1..8", "--shape", "attention_mask=1..4x1..8"], "takes one --shape, the source's"),
    (["--shape", "input_ids=1..4x1..8", "--tune-shapes", "1x4"], "--tune-shapes names shapes of one model"),
    (["--shape", "input_ids=1..4x1..8", "--max-new-tokens", "0"], "--max-new-tokens"),
])
def test_tune_seq2seq_refuses_what_it_cannot_take_in_one_line(seq2seq_folder, tmp_path, flags, message):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "autotune.cli", "tune", str(seq2seq_folder), "--task", "seq2seq",
                           "--trials", "2", "--db", f"sqlite:///{tmp_path / 't.db'}", *flags],
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_compiled_generator_gives_the_tokens_of_onnx_runtime_greedy_and_beam(compiled_generator, seq2seq_folder):
    import autotune

    path, result = compiled_generator
    assert result.validation["passed"] and result.validation["same_tokens"] == result.validation["sentences"]
    translator = autotune.load(path)
    reference = OnnxRuntimeSteps(read_seq2seq(seq2seq_folder), 1)
    rng = np.random.default_rng(3)
    for beams in (1, 2):
        ids, mask = _source_batch(rng, SMALL.vocab, 2, 7)
        ours = translator.generate(ids, mask, max_new_tokens=6, num_beams=beams)
        assert _sentences(ours) == _sentences(generate(reference, ids, mask, _config(6, beams)))


@pytest.mark.parametrize("call, message", [
    (dict(max_new_tokens=7), "beyond the past length this model was compiled for: at most 6"),
    (dict(input_ids=np.array([[3, 200]])), r"outside the vocabulary \[0, 199\]"),
    (dict(input_ids=np.ones((1, 9), np.int64)), "outside the source length range 1..8"),
    (dict(input_ids=np.ones((3, 4), np.int64), num_beams=2), "batch × num_beams is 6, outside the batch range 1..4"),
])
def test_a_bad_generation_request_gets_one_clear_error_and_the_model_keeps_serving(compiled_generator, call, message):
    import autotune

    translator = autotune.load(compiled_generator[0])
    request = {"input_ids": np.array([[3, 4, 5]]), "max_new_tokens": 4, **call}
    with pytest.raises(AutotuneError, match=message):
        translator.generate(**request)
    assert translator.generate(np.array([[3, 4, 5]]), max_new_tokens=4).shape[0] == 1


def test_a_tampered_part_is_refused_at_load(tmp_path, compiled_generator):
    import json

    import autotune

    path = compiled_generator[0]
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    shutil.copytree(path.with_suffix(".parts"), copy.with_suffix(".parts"))
    part = copy.parent / json.loads(copy.read_text())["parts"]["next_step"]["file"]
    part.write_bytes(part.read_bytes() + b"\0")
    with pytest.raises(AutotuneError, match="is not the pinned artifact"):
        autotune.load(copy)


def test_the_steps_read_their_keys_transposed_and_the_cache_they_write(seq2seq_folder, tmp_path):
    """No step transposes, scales or concatenates a cache: each scores matmul reads the keys as the
    step receives or writes them, and the first step writes its keys transposed."""
    import onnx

    from autotune.jobs.generator_parts import part_models

    layout = read_seq2seq(seq2seq_folder)
    paths = part_models(layout, tmp_path)
    step = onnx.load(str(paths["next_step"])).graph
    scores = {node.input[1] for node in step.node if node.op_type == "MatMul"}
    for layer in range(layout.layers):
        assert {f"present.{layer}.decoder.key", f"past_key_values.{layer}.encoder.key"} <= scores
    assert not [n for n in step.node if n.op_type == "Concat" and any(i.startswith("past_key_values") for i in n.input)]
    first = onnx.load(str(paths["first_step"])).graph
    head = layout.head_dim
    for output in first.output:
        if output.name.endswith(".key"):
            assert [d.dim_value or d.dim_param for d in output.type.tensor_type.shape.dim][2] == head


def test_a_generator_compiled_for_one_source_shape_serves_it(tmp_path, seq2seq_folder):
    import autotune

    result = autotune.compile(seq2seq_folder, tmp_path / "fixed.json", {"input_ids": ((2, 2), (7, 7))},
                              db=f"sqlite:///{tmp_path / 'g.db'}", task="seq2seq", max_new_tokens=6)
    assert result.validation["passed"]
    assert sorted(p.suffix for p in (tmp_path / "fixed.parts").glob("*step*.onnx")) == [".onnx", ".onnx"]  # for profile
    ids, mask = _source_batch(np.random.default_rng(5), SMALL.vocab, 2, 7)
    ours = autotune.load(tmp_path / "fixed.json").generate(ids, mask, max_new_tokens=6)
    reference = OnnxRuntimeSteps(read_seq2seq(seq2seq_folder), 1)
    assert _sentences(ours) == _sentences(generate(reference, ids, mask, _config(6)))


def test_max_new_tokens_defaults_to_the_most_the_generator_was_compiled_for(compiled_generator):
    import autotune

    tokens = autotune.load(compiled_generator[0]).generate(np.array([[3, 4, 5]]))
    assert tokens.shape[1] <= 1 + 6


def test_bench_generate_times_the_generator_beside_onnx_runtime_on_the_same_tokens(compiled_generator, tmp_path):
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "autotune.cli", "bench", str(compiled_generator[0]), "--generate",
                           "--batches", "1", "3", "--src-lens", "5", "--new-tokens", "6", "--count", "3",
                           "--plot", str(tmp_path), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [(p["batch"], p["source_length"]) for p in result["points"]] == [(1, 5), (3, 5)]
    for point in result["points"]:
        assert point["same_tokens"] == 1.0
        ours, theirs = point["systems"]["autotune"], point["systems"]["onnxruntime"]
        assert ours["runs"] == theirs["runs"] == 3
        # every sentence generated exactly 6 tokens (no end before them), in p50-sized calls
        assert ours["tokens_per_s"] == pytest.approx(ours["sentences_per_s"] * 6)
        assert ours["tokens_per_s_vs_onnxruntime"] == pytest.approx(ours["tokens_per_s"] / theirs["tokens_per_s"])
    overhead = result["overhead"]
    assert 0 < overhead["kernels_ms"] <= overhead["step_ms"] and 0 <= overhead["overhead_share"] < 1
    assert sorted(Path(p).name for p in result["plots"]) == ["translator_latency_vs_batch.png",
                                                             "translator_throughput_vs_seq.png"]


@pytest.mark.parametrize("flags, message", [
    (["--generate", "--batches", "5", "--src-lens", "5", "--new-tokens", "6"], "outside the batch range 1..4"),
    (["--generate", "--batches", "1", "--src-lens", "5", "--new-tokens", "7"], "beyond the past length this model was compiled for: at most 6"),
    ([], "is a translation generator: time it with bench --generate"),
])
def test_bench_of_a_generator_outside_what_it_serves_is_one_line(compiled_generator, flags, message):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "autotune.cli", "bench", str(compiled_generator[0]), *flags],
                          capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_min_new_tokens_keeps_every_sentence_going_as_transformers_processor_does(seq2seq_folder):
    steps = OnnxRuntimeSteps(read_seq2seq(seq2seq_folder), 1)
    ids, mask = _source_batch(np.random.default_rng(5), SMALL.vocab, 3, 6)
    for beams in (1, 2):
        free = generate(steps, ids, mask, _config(10, beams))
        held = generate(steps, ids, mask, _config(10, beams, min_new_tokens=10))
        assert held.shape == (3, 11)
        assert not np.isin(held[:, 1:10], EOS).any()
        assert free.shape[1] < 11 or np.isin(free[:, 1:], EOS).any()  # the model does end early on its own
    with pytest.raises(AutotuneError, match="min_new_tokens must be in"):
        _config(4, min_new_tokens=5).check(SMALL.vocab)


def _generator_copy(path: Path, folder: Path) -> Path:
    folder.mkdir()
    copy = folder / path.name
    shutil.copy(path, copy)
    shutil.copytree(path.with_suffix(".parts"), copy.with_suffix(".parts"))
    return copy


def test_a_signed_generator_loads_with_its_key_and_a_rewritten_manifest_or_part_manifest_does_not(
        tmp_path, compiled_generator, monkeypatch, capsys):
    import json

    import autotune
    from autotune.cli import main

    assert main(["keygen", "-o", str(tmp_path / "deploy")]) == 0
    path = _generator_copy(compiled_generator[0], tmp_path / "signed")
    with pytest.raises(AutotuneError, match="has no signature"):
        autotune.load(path, public_key=tmp_path / "deploy.pub")
    assert main(["sign", str(path), "--key", str(tmp_path / "deploy.key")]) == 0
    capsys.readouterr()
    assert main(["verify", str(path), "--public-key", str(tmp_path / "deploy.pub"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["signed"] is True
    monkeypatch.setenv("AUTOTUNE_PUBLIC_KEY", str(tmp_path / "deploy.pub"))
    assert autotune.load(path).generate(np.array([[3, 4, 5]]), max_new_tokens=3).shape[0] == 1  # parts: by their pins
    manifest = json.loads(path.read_text())
    part_manifest = path.parent / (manifest["parts"]["encoder"]["file"] + ".json")
    part_manifest.write_text(part_manifest.read_text().replace('"passed": true', '"passed": true '))
    with pytest.raises(AutotuneError, match="is not the pinned manifest"):
        autotune.load(path)
    manifest["parts"]["encoder"]["manifest_sha256"] = __import__("hashlib").sha256(part_manifest.read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest))  # re-pinned by whoever rewrote it: the signature no longer holds
    with pytest.raises(AutotuneError, match="does not carry a valid signature"):
        autotune.load(path)
    assert main(["verify", str(path)]) == 2
    assert "does not carry a valid signature" in capsys.readouterr().err


def test_a_greedy_difference_is_located_and_judged_by_the_reference_logits(seq2seq_folder):
    from autotune.runtime.generation import divergences, forced_logits

    steps = OnnxRuntimeSteps(read_seq2seq(seq2seq_folder), 1)
    ids, mask = _source_batch(np.random.default_rng(7), SMALL.vocab, 2, 6)
    theirs = generate(steps, ids, mask, _config(8, min_new_tokens=8))
    assert divergences(steps, ids, mask, theirs, theirs, SEQ2SEQ_TOKENS["pad_token_id"]) == []
    ours = theirs.copy()
    logits = forced_logits(steps, ids[1:], mask[1:], theirs[1:, :4])[0]
    ours[1, 4] = int(np.argsort(logits)[0])  # the least likely token at position 4
    (found,) = divergences(steps, ids, mask, ours, theirs, SEQ2SEQ_TOKENS["pad_token_id"])
    assert (found.sentence, found.position, found.ours, found.theirs) == (1, 4, ours[1, 4], theirs[1, 4])
    assert logits.argmax() == theirs[1, 4]  # the forced prefix gives the logits greedy chose by
    assert found.logit_gap > 0 and not found.near_tie


@pytest.mark.skipif(bool(lacking_on_host(["avx512vnni"])), reason="this CPU lacks AVX512-VNNI (vpdpbusd)")
def test_an_int8_generator_is_judged_by_its_share_of_identical_sentences(tmp_path, seq2seq_folder):
    """Every part in int8 (weights per column, activations per row through vpdpbusd): the compile
    check holds its greedy tokens to ONNX Runtime fp32's on the share of identical sentences (int8
    moves logits by more than a near tie), and the generator serves."""
    import autotune
    from autotune.jobs.seq2seq import MIN_SAME_SENTENCES_REDUCED

    result = autotune.compile(seq2seq_folder, tmp_path / "int8.json", {"input_ids": ((1, 2), (1, 8))},
                              db=f"sqlite:///{tmp_path / 'g.db'}", task="seq2seq", max_new_tokens=6,
                              precision="int8")
    check = result.validation
    assert check["passed"] and check["min_same"] == MIN_SAME_SENTENCES_REDUCED
    assert check["same_tokens"] >= MIN_SAME_SENTENCES_REDUCED * check["sentences"] > 0
    ids, mask = _source_batch(np.random.default_rng(5), SMALL.vocab, 2, 7)
    tokens = autotune.load(result.manifest).generate(ids, mask, max_new_tokens=6)
    assert tokens.shape[0] == 2 and tokens.shape[1] <= 7
    assert (tokens[:, 0] == SEQ2SEQ_TOKENS["decoder_start_token_id"]).all()
