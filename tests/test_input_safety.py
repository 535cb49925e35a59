"""Caller input cannot read out of bounds: every table index is checked in the artifact itself.

The calls run in a subprocess: before the guards, an id of 10**9 killed the process with SIGSEGV.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import autotune
from autotune.cli import main
from autotune.frontend.inputs import random_inputs
from autotune.models import TINY, write_example

from .conftest import TINY_SHAPES, run_env
from .faults import chaos_record

BERT_SHAPES = {"input_ids": (2, 16), "attention_mask": (2, 16), "token_type_ids": (2, 16)}
# A real export with token_type_ids (``scripts/export_models.py bert``), where scripts/chaos.py has one.
REAL_BERT = os.environ.get("AUTOTUNE_REAL_BERT")
FAMILIES = ["translation", "bert", *(["real_bert"] if REAL_BERT else [])]


@pytest.fixture(scope="module")
def tiny_bert(models_dir):
    return write_example("bert", models_dir / "tiny_bert.onnx", TINY)


@pytest.fixture(scope="module")
def builds(tmp_path_factory, tiny_translation, tiny_bert) -> dict:
    """Heuristic-only artifacts of both bundled families (compile validates each)."""
    folder = tmp_path_factory.mktemp("guarded")
    db = f"sqlite:///{folder / 'empty.db'}"
    out = {}
    real = [("real_bert", REAL_BERT, {k: (1, 32) for k in BERT_SHAPES})] if REAL_BERT else []
    for name, model, shapes in [("translation", tiny_translation, TINY_SHAPES),
                                ("bert", tiny_bert, BERT_SHAPES), *real]:
        built = autotune.compile(model, folder / f"{name}.so", shapes, "host", db)
        assert built["validation"]["passed"]
        out[name] = {"so": folder / f"{name}.so", "model": model, "shapes": shapes}
    return out


CALLER = """
import json, sys
import numpy as np
import autotune
import tvm
from tvm.runtime.vm import VirtualMachine

so, model_path, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = autotune.load(so)
raw = VirtualMachine(tvm.runtime.load_module(so), tvm.cpu())  # a caller that skips autotune.load
names = [spec["name"] for spec in model.inputs]
results = []
for case in cases:
    inputs = {k: np.array(v, dtype=np.int64) for k, v in case.items()}
    entry = {}
    try:
        entry["logits"] = next(iter(model(inputs).values())).tolist()
    except autotune.AutotuneError as err:
        entry["load_error"] = str(err)
    try:
        raw["main"](*[tvm.runtime.tensor(inputs[n]) for n in names])
        entry["raw_error"] = None
    except RuntimeError as err:
        entry["raw_error"] = str(err).splitlines()[0]
    results.append(entry)
print(json.dumps(results))
"""


def _call(build: dict, cases: list[dict]) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", CALLER, str(build["so"]), str(build["model"]),
                           json.dumps(cases)], capture_output=True, text=True, env=run_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _valid(build: dict) -> dict:
    specs = autotune.load(build["so"]).inputs
    from autotune.frontend.specs import TensorSpec

    return {k: v.tolist() for k, v in random_inputs([TensorSpec.from_dict(s) for s in specs]).items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_out_of_range_ids_are_refused_and_the_process_keeps_serving(builds, family):
    build = builds[family]
    specs = {s["name"]: s for s in autotune.load(build["so"]).inputs}
    indexed = [name for name, spec in specs.items() if "index_range" in spec]
    assert indexed == (["input_ids", "decoder_input_ids"] if family == "translation"
                       else ["input_ids", "token_type_ids"])  # every embedding input
    valid = _valid(build)
    cases, expect = [], []
    for name in indexed:
        low, high = specs[name]["index_range"]
        for value in (high + 1, low - 1, 10**9, -10**12):
            case = json.loads(json.dumps(valid))
            case[name][0][3] = value
            cases.append(case)
            expect.append((name, value, low, high))
    cases.append(valid)  # and the next request is served
    results = _call(build, cases)
    for (name, value, low, high), result in zip(expect, results):
        assert "logits" not in result
        assert result["load_error"].startswith(f"input {name!r} holds {value} at [0, 3], outside [{low}, {high}]")
        assert result["raw_error"] == (f"input '{name}' holds an index outside [{low}, {high}], the rows "
                                       "of the table it indexes")
    assert results[-1]["raw_error"] is None and "logits" in results[-1]
    chaos_record(f"out-of-range ids ({family})", injected=len(expect), completed=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_boundary_and_negative_ids_give_onnxruntimes_answer(builds, family):
    build = builds[family]
    specs = {s["name"]: s for s in autotune.load(build["so"]).inputs}
    case = _valid(build)
    for name, spec in specs.items():
        if "index_range" in spec:
            low, high = spec["index_range"]
            case[name][0][:4] = [low, high, -1, 0]
    (result,) = _call(build, [case])
    assert result["raw_error"] is None
    session = ort.InferenceSession(str(build["model"]), providers=["CPUExecutionProvider"])
    (reference,) = session.run(None, {k: np.array(v, np.int64) for k, v in case.items()})
    np.testing.assert_allclose(np.array(result["logits"]), reference, rtol=1e-4, atol=1e-4)


def test_validation_inputs_index_within_the_tables_and_masks_pad(builds):
    from autotune.frontend.specs import TensorSpec

    specs = [TensorSpec.from_dict(s) for s in autotune.load(builds["bert"]["so"]).inputs]
    inputs = random_inputs(specs)
    assert inputs["token_type_ids"].max() <= 1 and inputs["input_ids"].max() < TINY.vocab
    mask = inputs["attention_mask"]
    assert mask[0].all() and 0 < mask[1].sum() < mask.shape[1] and mask[1, 0] == 1


def test_compile_validates_on_the_users_inputs(builds, tmp_path, capsys):
    build = builds["bert"]
    args = ["compile", str(build["model"]), *[f"--shape={k}={'x'.join(map(str, v))}" for k, v in
                                               build["shapes"].items()],
            "--db", f"sqlite:///{tmp_path / 'e.db'}", "-o", str(tmp_path / "mine.so")]
    good = {k: np.array(v, np.int64) for k, v in _valid(build).items()}
    np.savez(tmp_path / "good.npz", **good)
    assert main([*args, "--inputs", str(tmp_path / "good.npz")]) == 0
    capsys.readouterr()
    np.savez(tmp_path / "bad.npz", **{**good, "token_type_ids": np.full((2, 16), 4, np.int64)})
    assert main([*args, "--inputs", str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"autotune: error: --inputs {tmp_path / 'bad.npz'}: array 'token_type_ids' holds 4 "
                   "at [0, 0], outside [-2, 1], the rows of the table it indexes (32 such values)"]
    np.savez(tmp_path / "names.npz", input_ids=good["input_ids"])
    assert main([*args, "--inputs", str(tmp_path / "names.npz")]) == 2
    assert "holds arrays ['input_ids'], the model takes" in capsys.readouterr().err


def test_a_failed_validation_leaves_the_deployed_artifact_untouched(builds, tmp_path, capsys):
    import shutil

    build = builds["translation"]
    deployed = tmp_path / "model.so"
    shutil.copy(build["so"], deployed)
    shutil.copy(f"{build['so']}.json", f"{deployed}.json")
    before = (deployed.read_bytes(), (tmp_path / "model.so.json").read_text())
    code = main(["compile", str(build["model"]), "--shape", "input_ids=1x16", "--shape",
                 "decoder_input_ids=1x8", "--db", f"sqlite:///{tmp_path / 'e.db'}", "-o", str(deployed),
                 "--rtol", "0", "--atol", "0"])
    assert code == 3
    err = capsys.readouterr().err
    assert "does not match ONNX Runtime" in err and "the artifact already there is untouched" in err
    assert (deployed.read_bytes(), (tmp_path / "model.so.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("e.db")) == \
        ["model.rejected.so", "model.rejected.so.json", "model.so", "model.so.json"]
    with pytest.raises(autotune.AutotuneError, match="failed its validation"):
        autotune.load(tmp_path / "model.rejected.so")
    autotune.load(deployed)
    chaos_record("failed validation over a good artifact", completed=1)


def test_every_table_read_with_a_callers_index_also_clips(tiny_bert):
    """The second line of defence: no take with non-constant indices keeps TVM's unchecked mode."""
    from autotune.frontend.guards import guard_indices
    from autotune.frontend.importer import load_model
    from autotune.targets.names import parse_target

    model = load_model(tiny_bert, BERT_SHAPES)
    text = guard_indices(parse_target("host"))(model.relax_mod)["main"].script()
    takes = [line for line in text.splitlines() if "R.take(" in line and "metadata" in line.split("R.take(")[1][:20]]
    assert len(takes) == 2  # token and token-type embeddings (positions are a constant slice)
    assert all('mode="clip"' in line for line in takes), takes
    assert text.count("R.call_tir(autotune_index_guard") == 2  # input_ids and token_type_ids
