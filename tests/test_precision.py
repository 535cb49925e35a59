"""Reduced precision on CPU: bf16 and int8 with native dot products (AVX512-BF16 ``vdpbf16ps``,
AVX512-VNNI ``vpdpbusd``), fp16 as TVM lowers it; every build checked against fp32 ONNX Runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import autotune
from autotune.cli import main
from autotune.deploy import text_accuracy
from autotune.models import ModelConfig, write_example
from autotune.schedules import bf16, int8
from autotune.schedules.dot import has_dot_block
from autotune.targets.host import lacking_on_host

from .conftest import run_env

SHAPES = {"input_ids": (1, 16)}
needs_bf16 = pytest.mark.skipif(bool(lacking_on_host([bf16.FEATURE])),
                                reason="this CPU lacks AVX512-BF16 (vdpbf16ps)")
needs_vnni = pytest.mark.skipif(bool(lacking_on_host([int8.FEATURE])),
                                reason="this CPU lacks AVX512-VNNI (vpdpbusd)")
# each native precision, its kernel module, and the CPU it needs
NATIVE = [pytest.param("bf16", bf16, marks=needs_bf16, id="bf16"),
          pytest.param("int8", int8, marks=needs_vnni, id="int8")]


def _instructions(so_path, mnemonic: str) -> int:
    disassembly = subprocess.run(["objdump", "-d", str(so_path)], capture_output=True, text=True, check=True)
    return disassembly.stdout.count(mnemonic)


@pytest.mark.parametrize("precision, instruction, size_ratio, feature", [
    pytest.param("bf16", "vdpbf16ps", 0.65, "avx512bf16", marks=needs_bf16, id="bf16"),  # every weight in 2 bytes
    pytest.param("int8", "vpdpbusd", 0.5, "avx512vnni", marks=needs_vnni, id="int8")])  # projections in 1, tables in 2
def test_native_precision_computes_projections_with_its_instruction_and_stores_fewer_weight_bytes(
        tmp_path, precision, instruction, size_ratio, feature):
    # weights (2 MB in fp32) well above the code's size, so the artifact's size shows their bytes
    model = write_example("encoder", tmp_path / "encoder.onnx", ModelConfig(
        vocab=2000, d_model=128, heads=4, ffn=512, encoder_layers=1, decoder_layers=0, max_positions=64))
    db = f"sqlite:///{tmp_path / 'e.db'}"
    fp32 = autotune.compile(model, tmp_path / "fp32.so", SHAPES, "host", db)
    summary = autotune.compile(model, tmp_path / "native.so", SHAPES, "host", db, precision=precision)
    valid = summary["validation"]
    assert valid["passed"] and valid["min_cosine"] >= 0.999
    assert valid["max_rel_err"] > 1e-4  # fp32 builds match to ~1e-7: the precision took effect
    manifest = json.loads((tmp_path / "native.so.json").read_text())
    assert manifest["precision"] == precision and manifest["validation"]["min_cosine"] == valid["min_cosine"]
    assert feature in manifest["required_features"]
    if shutil.which("objdump"):
        assert _instructions(tmp_path / "native.so", instruction) > 0
        assert _instructions(tmp_path / "fp32.so", instruction) == 0
    assert (tmp_path / "native.so").stat().st_size < size_ratio * (tmp_path / "fp32.so").stat().st_size
    assert fp32["validation"]["max_rel_err"] < 1e-4


@pytest.mark.parametrize("precision, kernel", NATIVE)
def test_search_tensorizes_the_dot_products(tiny_encoder, tmp_path, precision, kernel):
    """The search's candidates of bf16 and int8 tasks build (no vectorised loop around the
    intrinsic) and some use the instruction."""
    import sqlalchemy

    db = f"sqlite:///{tmp_path / 'e.db'}"
    summary = autotune.tune(tiny_encoder, SHAPES, "host", db, trials=40, precision=precision, confirm=False)
    assert summary["trials_measured"] > 0
    with sqlalchemy.create_engine(db).connect() as connection:
        rows = connection.execute(sqlalchemy.text(
            "select r.record_json, r.latency_s, r.error_msg from tuning_records r join job_tasks t "
            "on t.workload_id = r.workload_id where r.provenance = 'search' "
            "and t.task_name like :kernel"), {"kernel": f"%{kernel.KERNEL}%"}).all()
    assert rows, f"no {precision} task was searched"
    assert not [r.error_msg for r in rows if r.error_msg], f"{precision} candidates failed to build"
    assert any(kernel.INTRINSIC in r.record_json for r in rows), "no candidate tensorized"
    # a fresh process (no schedule rule has run in it) replays the tensorized records
    built = subprocess.run([sys.executable, "-m", "autotune.cli", "compile", str(tiny_encoder), "--shape",
                            "input_ids=1x16", "--precision", precision, "--db", db, "-o",
                            str(tmp_path / "tuned.so"), "--json"], capture_output=True, text=True, env=run_env(),
                           timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    assert json.loads(built.stdout)["validation"]["passed"]


def test_bf16_bits_round_to_nearest_even():
    values = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -2.5, np.inf, np.nan], np.float32)
    assert bf16.bf16_values(bf16.bf16_bits(values))[:5].tolist() == [1.0, 1.0, 1.0 + 2 ** -6, -2.5, np.inf]
    assert np.isnan(bf16.bf16_values(bf16.bf16_bits(values))[5])
    weight = np.arange(8 * 64, dtype=np.float32).reshape(8, 64)  # small integers: exact in bf16
    packed = bf16.packed_weight(weight)  # panel-major: [N / 32, K / 2, 32, 2]
    assert packed.shape == (2, 4, 32, 2)
    assert bf16.bf16_values(packed[1, 1, 3]).tolist() == [2 * 64 + 35, 3 * 64 + 35]
    assert bf16.packed_weight(weight[:, :48]).shape == (3, 4, 16, 2)  # 48 columns: panels of one vector


@needs_bf16
@pytest.mark.parametrize("lanes", [1, 4, 8, 16, 32])
def test_bf16_rounding_runs_on_vcvtneps2bf16_and_matches_round_to_nearest_even_at_any_vector_width(lanes):
    """The activations' rounding (``bf16.rounded_bits``) lowers to ``vcvtneps2bf16`` on vectors of 8,
    16 or a multiple of 16 lanes and to integer rounding otherwise; every width gives the bits of
    ``bf16.bf16_bits``, ties to even included."""
    import tvm
    from tvm import s_tir, te

    from autotune.targets.names import parse_target

    n = 4096
    x = te.placeholder((n,), "float32", name="x")
    sch = s_tir.Schedule(te.create_prim_func([x, bf16.rounded_bits(x)]))
    block = sch.get_sblock("bf16_bits")
    _, inner = sch.split(sch.get_loops(block)[0], [None, lanes])
    if lanes > 1:
        sch.vectorize(inner)
    built = tvm.tirx.build(sch.mod, target=parse_target("host"))
    rng = np.random.default_rng(lanes)
    ties = np.float32(1.0) + np.float32(2.0 ** -8) * np.arange(1, 9, dtype=np.float32)  # halfway cases, both parities
    values = np.concatenate([ties, -ties, [np.inf, -np.inf, 3.0e38, -0.0],
                             rng.standard_normal(n - 20).astype(np.float32) * 100]).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros(n, np.uint16))
    built(tvm.runtime.tensor(values), out)
    assert (out.numpy() == bf16.bf16_bits(values)).all()
    assert ("vcvtneps2bf16" in built.inspect_source("asm")) == (lanes >= 8)


def test_bf16_softmax_exponential_is_within_1e5_of_exp_and_keeps_its_special_values():
    """bf16's softmax exponential (``bf16.exponential``): 1e-5 relative over fp32's normal range,
    exactly 1 at 0, 0 at -inf and far below, inf far above, NaN kept (a fully masked row's ``-inf -
    -inf``, which the exporters' ``where(isnan(...))`` zeroes)."""
    import tvm
    from tvm import s_tir, te

    from autotune.targets.names import parse_target

    n = 1 << 14
    x = te.placeholder((n,), "float32", name="x")
    sch = s_tir.Schedule(te.create_prim_func([x, bf16.exponential(x)]))
    _, lanes = sch.split(sch.get_loops(sch.get_sblock("T_fast_exp"))[0], [None, 16])
    sch.vectorize(lanes)
    built = tvm.tirx.build(sch.mod, target=parse_target("host"))
    special = [0.0, -np.inf, -200.0, -3.4e38, 100.0, np.inf, np.nan]
    values = np.concatenate([np.linspace(-87.0, 88.0, n - len(special)), special]).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros(n, np.float32))
    built(tvm.runtime.tensor(values), out)
    got, exact = out.numpy(), np.exp(values[:-len(special)].astype(np.float64))
    assert (np.abs(got[:-len(special)] - exact) / exact).max() < 1e-5
    assert got[-len(special):-1].tolist() == [1.0, 0.0, 0.0, 0.0, np.inf, np.inf] and np.isnan(got[-1])


@pytest.mark.parametrize("precision, instruction", [("bf16", "AVX512-BF16"), ("int8", "AVX512-VNNI")])
def test_native_precision_is_refused_for_a_target_without_its_instruction(tiny_encoder, tmp_path, capsys,
                                                                         precision, instruction):
    code = main(["compile", str(tiny_encoder), "--shape", "input_ids=1x16", "--precision", precision,
                 "--target", "avx2", "--db", f"sqlite:///{tmp_path / 'e.db'}", "-o", str(tmp_path / "x.so")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and instruction in err[0] and "haswell" in err[0]
    assert not (tmp_path / "x.so").exists()


def test_fp16_compiles_and_passes_a_loose_check(tiny_encoder, tmp_path):
    summary = autotune.compile(tiny_encoder, tmp_path / "encoder_fp16.so", SHAPES, "host",
                               f"sqlite:///{tmp_path / 'e.db'}", precision="fp16", max_rel_err=0.2,
                               min_cosine=0.98)
    valid = summary["validation"]
    assert valid["passed"] and 0.98 <= valid["min_cosine"] <= 1.0 and valid["max_rel_err"] > 1e-4


@needs_bf16
def test_too_strict_tolerance_is_refused_with_exit_3(tiny_encoder, tmp_path, capsys):
    code = main(["compile", str(tiny_encoder), "--shape", "input_ids=1x16", "--precision", "bf16",
                 "--db", f"sqlite:///{tmp_path / 'e.db'}", "-o", str(tmp_path / "strict.so"),
                 "--max-rel-err", "1e-9", "--min-cosine", "0.9999999999"])
    assert code == 3
    err = capsys.readouterr().err
    assert "(bf16) does not match ONNX Runtime fp32" in err and "min cosine" in err
    assert not (tmp_path / "strict.so").exists()


def test_real_sentences_ship_tokenized_and_compare_embeddings():
    vocab, sentences = text_accuracy.tokenized_sentences()
    assert vocab == 30522 and len(sentences) >= 30
    assert all(ids[0] == 101 and ids[-1] == 102 for ids in sentences)  # [CLS] ... [SEP]
    rng = np.random.default_rng(0)
    reference = [rng.standard_normal((len(ids), 8)) for ids in sentences]
    same = text_accuracy.compare_embeddings(reference, reference)
    assert same.sentence_cosine_min == pytest.approx(1.0) and same.similarity_spearman == pytest.approx(1.0)
    noisy = text_accuracy.compare_embeddings([r + 0.3 * rng.standard_normal(r.shape) for r in reference],
                                             reference)
    assert noisy.token_cosine_min < noisy.token_cosine_mean < 0.99 and noisy.similarity_spearman < 0.99


@pytest.mark.parametrize("precision, _kernel", NATIVE)
def test_reduced_precision_is_judged_on_real_sentences_and_refused_past_the_users_limit(tmp_path, capsys,
                                                                                      precision, _kernel):
    """A BERT-style model with the sentences' vocabulary: compile reports real-text accuracy, and
    a sentence-cosine limit it cannot reach stops the deployment (exit 3, nothing written)."""
    from autotune.common.tolerances import MIN_SENTENCE_COSINE

    model = write_example("bert", tmp_path / "bert.onnx", ModelConfig(
        vocab=30522, d_model=64, heads=2, ffn=128, encoder_layers=1, decoder_layers=0, max_positions=64))
    db = f"sqlite:///{tmp_path / 'e.db'}"
    shapes = {"input_ids": (1, 32), "attention_mask": (1, 32), "token_type_ids": (1, 32)}
    summary = autotune.compile(model, tmp_path / "bert.so", shapes, "host", db, precision=precision)
    text = summary["validation"]["text_accuracy"]
    assert text["sentences"] >= 30 and MIN_SENTENCE_COSINE[precision] <= text["sentence_cosine_min"] < 1.0
    assert text["token_cosine_min"] <= text["token_cosine_mean"] and summary["validation"]["passed"]
    flags = [f"--shape={n}=1x32" for n in shapes]
    code = main(["compile", str(model), *flags, "--precision", precision, "--db", db,
                 "-o", str(tmp_path / "strict.so"), "--min-sentence-cosine", "0.99999999"])
    assert code == 3 and "real sentences" in capsys.readouterr().err
    assert not (tmp_path / "strict.so").exists()


def test_dot_product_peaks_are_measured_where_the_cpu_has_the_instruction():
    from autotune.bench.peaks import dot_product_peak
    from autotune.targets.host import host_cpu_flags

    for precision, flag in (("bf16", "avx512_bf16"), ("int8", "avx512_vnni")):
        peak = dot_product_peak(precision, 1)
        assert (peak is None) == (flag not in host_cpu_flags()) and (peak is None or peak > 0)


@pytest.mark.parametrize("flags", [["-mavx512f"], ["-mavx512f", "-mavx512bf16", "-DDOT_BF16"],
                                   ["-mavx512f", "-mavx512vnni", "-DDOT_VNNI"]], ids=["fma", "bf16", "int8"])
def test_peak_loops_keep_their_chains_in_registers(tmp_path, flags):
    """A chain spilled to the stack each step halves the measured peak (vpdpbusd's did, with 24
    chains): the loop must be nothing but the instruction on registers."""
    import re

    from autotune.bench.peaks import FMA_LOOP

    source = tmp_path / "peak.c"
    source.write_text(FMA_LOOP)
    subprocess.run(["cc", "-O3", *flags, "-S", str(source), "-o", str(tmp_path / "peak.s")], check=True)
    assembly = (tmp_path / "peak.s").read_text()
    chains = assembly[assembly.index("chains:"):assembly.index("main:")]
    loop = re.findall(r"\n(\.L\d+):\n((?:\t.*\n)+?)\t(?:dec|sub|add|cmp)", chains)
    body = max((b for _, b in loop), key=len)
    assert body.count("\n") >= 10 and "(%rsp)" not in body, body


@pytest.mark.parametrize("shape", [(1, 16), (3, 16)])
@pytest.mark.parametrize("precision, kernel", NATIVE)
def test_every_dot_product_task_gets_its_instruction_schedule_at_any_batch(tiny_encoder, shape, precision, kernel):
    """A task the rule cannot tile would run its naive loops (a hundred times slower); int8's
    quantization task gets its own rule."""
    from autotune.jobs.prepare import prepare
    from autotune.schedules.heuristics import heuristic_schedules

    prepared = prepare(tiny_encoder, {"input_ids": shape}, "host", "full", precision)
    dot_tasks = [t for t in prepared.tasks if has_dot_block(t.mod, kernel.DOT)]
    assert dot_tasks
    for task in dot_tasks:
        schedules = heuristic_schedules(task.mod, prepared.target)
        assert schedules and all(kernel.INTRINSIC in str(s.trace) for s in schedules), task.name
    if precision == "int8":
        quantize = [t for t in prepared.tasks if t.name.startswith("int8_quantized")]
        assert quantize and all(heuristic_schedules(t.mod, prepared.target) for t in quantize)


@needs_bf16
def test_bf16_attention_multiplies_on_vdpbf16ps_with_k_and_v_packed_by_their_projections(tiny_encoder):
    """Both attention products run on the instruction where the keys fill whole vectors; K and V are
    rounded and packed by the projections computing them (no task of their own), the output rounded
    by attention itself; a length that does
    not fill them keeps fp32 attention, and its tasks still get schedules."""
    from autotune.frontend.attention import FUNCTION_NAME, KEY_FUNCTION_NAME, VALUE_FUNCTION_NAME
    from autotune.jobs.prepare import prepare
    from autotune.schedules.heuristics import heuristic_schedules

    prepared = prepare(tiny_encoder, {"input_ids": (2, 16)}, "host", "full", "bf16")
    names = [t.name for t in prepared.tasks]
    assert any(n.startswith(KEY_FUNCTION_NAME) for n in names) and any(n.startswith(VALUE_FUNCTION_NAME) for n in names)
    assert not [n for n in names if bf16.PACKED_PAIRS in n or "transpose" in n], names
    attention = next(t for t in prepared.tasks if t.name.startswith(FUNCTION_NAME))
    assert bf16.has_activations_block(attention.mod)
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    output = ArgInfo.from_prim_func(attention.mod["main"])[-1]
    assert str(output.dtype) == "uint16"  # its output rounded for the projection after it
    schedules = heuristic_schedules(attention.mod, prepared.target)
    assert schedules and all(str(s.trace).count(bf16.INTRINSIC) == 2 for s in schedules)

    odd = prepare(tiny_encoder, {"input_ids": (1, 13)}, "host", "full", "bf16")
    attention = next(t for t in odd.tasks if t.name.startswith(FUNCTION_NAME))
    assert not bf16.has_activations_block(attention.mod)
    assert heuristic_schedules(attention.mod, odd.target)


@needs_bf16
def test_a_layer_norm_read_by_bf16_projections_rounds_its_output_in_the_same_task(tiny_encoder):
    """A LayerNorm whose output bf16 projections read writes both its fp32 values (for the residual)
    and their bf16 bits in one task, which the heuristic schedules row by row; no rounding task is left."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from autotune.jobs.prepare import prepare
    from autotune.schedules.heuristics import heuristic_schedules

    prepared = prepare(tiny_encoder, {"input_ids": (2, 16)}, "host", "full", "bf16")
    names = [t.name for t in prepared.tasks]
    assert not [n for n in names if n.startswith(bf16.BITS)], names
    norm = next(t for t in prepared.tasks if t.name.startswith(bf16.NORM_AND_BITS))
    assert [str(a.dtype) for a in ArgInfo.from_prim_func(norm.mod["main"])[-2:]] == ["float32", "uint16"]
    assert len(heuristic_schedules(norm.mod, prepared.target)) == 2  # serial and parallel


@needs_vnni
def test_tasks_lists_the_int8_kernels_a_tune_would_search(tiny_encoder, capsys):
    assert main(["tasks", str(tiny_encoder), "--shape", "input_ids=1x16", "--precision", "int8", "--json"]) == 0
    names = [t["name"] for t in json.loads(capsys.readouterr().out)["tasks"]]
    assert any(int8.KERNEL in n for n in names) and any(n.startswith("int8_quantized") for n in names)


def test_int8_quantization_round_trips_within_half_a_step():
    """Rows quantized by the kernel as numpy would (zero always representable, bounds widened to it),
    and weights per column within half a step of their values."""
    import tvm
    from tvm import te

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 48)).astype(np.float32)
    packed, scale, column_sums = int8.quantized_weight(weight)  # 48 columns: panels of one vector
    values = packed.transpose(1, 3, 0, 2).reshape(64, 48).astype(np.float32)  # [N/P, K/4, P, 4] -> [K, N]
    assert packed.shape == (3, 16, 16, 4) and packed.dtype == np.int8 and np.abs(values).max() == 127
    assert np.all(np.abs(values * scale - weight) <= scale / 2 + 1e-7)
    assert np.array_equal(column_sums, values.sum(axis=0))
    x = te.placeholder((3, 5, 48), "float32", name="x")
    target = tvm.target.Target({"kind": "llvm"})
    mod = tvm.IRModule({"main": te.create_prim_func([x, *int8.quantized_rows(x)])})
    lib = tvm.tirx.build(int8.quantize_rows_schedule(mod, target, parallel=True).mod, target=target)
    rows = (rng.standard_normal((3, 5, 48)) * 3 + 1).astype(np.float32)
    rows[0, 0] = np.abs(rows[0, 0])  # a row without negative values: its zero point is 0
    rows[0, 1] = 0.0  # an all-zero row
    args = [tvm.runtime.tensor(a) for a in (rows, np.zeros(rows.shape, np.uint8), np.zeros((3, 5), np.float32),
                                            np.zeros((3, 5), np.float32))]
    lib(*args)
    q, row_scale, zero_point = (a.numpy() for a in args[1:])
    low, high = np.minimum(rows.min(-1), 0), np.maximum(rows.max(-1), 0)
    assert np.allclose(row_scale[0, 2:], ((high - low) / 255)[0, 2:], rtol=1e-6)
    assert zero_point[0, 0] == 0 and q[0, 1].max() == 0
    assert np.array_equal(zero_point, np.clip(np.rint(-low / row_scale), 0, 255))
    restored = (q.astype(np.float32) - zero_point[..., None]) * row_scale[..., None]
    assert np.all(np.abs(restored - rows) <= row_scale[..., None] * 0.5 + 1e-6)


def _quantize_dynamic(model, out):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(model), str(out), weight_type=QuantType.QInt8)


def _quantize_static_qdq(model, out):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Sentences(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.feeds = iter([{"input_ids": rng.integers(0, 64, (1, 16))} for _ in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(model), str(out), Sentences(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


@needs_vnni
@pytest.mark.parametrize("quantize", [_quantize_dynamic, _quantize_static_qdq], ids=["matmulinteger", "qdq"])
def test_a_model_quantized_by_onnxruntime_keeps_integer_weights_and_computes_on_vnni(tmp_path, quantize):
    """``quantize_dynamic``'s MatMulInteger and ``quantize_static``'s QDQ pairs by int8 weights run on
    the vpdpbusd kernel: the same int32 products as ONNX Runtime's (fp32 tolerances hold on one
    layer), the weights kept in one byte."""
    model = write_example("encoder", tmp_path / "encoder.onnx", ModelConfig(
        vocab=64, d_model=128, heads=4, ffn=512, encoder_layers=1, decoder_layers=0, max_positions=64))
    quantize(model, tmp_path / "quantized.onnx")
    db = f"sqlite:///{tmp_path / 'e.db'}"
    autotune.compile(model, tmp_path / "fp32.so", SHAPES, "host", db)
    summary = autotune.compile(tmp_path / "quantized.onnx", tmp_path / "quantized.so", SHAPES, "host", db)
    assert summary["validation"]["passed"] and summary["validation"]["max_rel_err"] < 1e-4
    if shutil.which("objdump"):
        assert _instructions(tmp_path / "quantized.so", "vpdpbusd") > 0
    # the projections' weights (0.75 MB of the fp32 artifact's ~0.8 MB of weights) in a quarter
    assert (tmp_path / "quantized.so").stat().st_size < (tmp_path / "fp32.so").stat().st_size - 400_000
