"""The production loader refuses artifacts it cannot verify or run."""

from __future__ import annotations

import json
import shutil

import pytest

import autotune
from autotune import AutotuneError

from .conftest import TINY_SHAPES
from .faults import chaos_record


@pytest.fixture(scope="module")
def artifact(tuned, tmp_path_factory):
    folder = tmp_path_factory.mktemp("artifact")
    so_path = folder / "tiny.so"
    autotune.compile(tuned["model"], so_path, TINY_SHAPES, "host", tuned["db"], validate=False)
    return so_path


def _copy(artifact, tmp_path):
    so_path = tmp_path / "copy.so"
    shutil.copy(artifact, so_path)
    shutil.copy(f"{artifact}.json", f"{so_path}.json")
    return so_path


def test_one_tampered_byte_is_refused(artifact, tmp_path):
    so_path = _copy(artifact, tmp_path)
    data = bytearray(so_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    so_path.write_bytes(bytes(data))
    with pytest.raises(AutotuneError, match="does not match its manifest: sha256"):
        autotune.load(so_path)


def test_missing_manifest_is_refused_unless_trusted(artifact, tmp_path):
    so_path = tmp_path / "bare.so"
    shutil.copy(artifact, so_path)
    with pytest.raises(AutotuneError, match="no manifest .* refusing to load an unverified artifact"):
        autotune.load(so_path)
    model = autotune.load(so_path, trust_unverified=True)
    assert model.manifest is None


def test_manifest_for_a_cpu_this_host_lacks_is_refused(artifact, tmp_path):
    so_path = _copy(artifact, tmp_path)
    manifest = json.loads(so_path.with_name("copy.so.json").read_text())
    manifest["mcpu"], manifest["required_features"] = "imaginary", ["avx1024x"]
    so_path.with_name("copy.so.json").write_text(json.dumps(manifest))
    with pytest.raises(AutotuneError, match="compiled for mcpu=imaginary, which needs avx1024x"):
        autotune.load(so_path)


def test_wrong_input_shape_is_named(artifact):
    import numpy as np

    model = autotune.load(artifact)
    with pytest.raises(AutotuneError, match="input 'input_ids': got int64\\[1, 4\\]"):
        model(input_ids=np.zeros((1, 4), np.int64), decoder_input_ids=np.zeros((1, 8), np.int64))


def test_threads_share_one_loaded_model(artifact):
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    model = autotune.load(artifact)
    rng = np.random.default_rng(3)
    batches = [{"input_ids": rng.integers(0, 64, (1, 16)), "decoder_input_ids": rng.integers(0, 64, (1, 8))}
               for _ in range(8)]
    expected = [model(b)["logits"] for b in batches]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(lambda b: model(b)["logits"], batches))
            for want, have in zip(expected, got):
                np.testing.assert_array_equal(want, have)


def _retamper(so_path):
    """Flip a byte of the .so and rewrite its manifest's sha256 to match, as an attacker would."""
    import hashlib

    data = bytearray(so_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    so_path.write_bytes(bytes(data))
    manifest_file = so_path.with_name(so_path.name + ".json")
    manifest = json.loads(manifest_file.read_text())
    manifest["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    manifest_file.write_text(json.dumps(manifest))


def test_a_pinned_hash_refuses_a_tampered_artifact_with_a_recomputed_manifest(artifact, tmp_path):
    import hashlib

    so_path = _copy(artifact, tmp_path)
    pinned = hashlib.sha256(so_path.read_bytes()).hexdigest()
    autotune.load(so_path, expected_sha256=pinned)
    _retamper(so_path)
    autotune.load(so_path)  # the manifest alone cannot tell: it was rewritten to match
    with pytest.raises(AutotuneError, match="is not the pinned artifact"):
        autotune.load(so_path, expected_sha256=pinned)
    chaos_record("tampered .so with a recomputed manifest, pinned hash")


def test_signatures_verify_and_refuse_tampering(artifact, tmp_path, monkeypatch, capsys):
    from autotune.cli import main

    so_path = _copy(artifact, tmp_path)
    assert main(["keygen", "-o", str(tmp_path / "deploy")]) == 0
    assert oct((tmp_path / "deploy.key").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(AutotuneError, match="has no signature"):
        autotune.load(so_path, public_key=tmp_path / "deploy.pub")
    assert main(["sign", str(so_path), "--key", str(tmp_path / "deploy.key")]) == 0
    autotune.load(so_path, public_key=tmp_path / "deploy.pub")
    assert main(["verify", str(so_path), "--public-key", str(tmp_path / "deploy.pub")]) == 0
    capsys.readouterr()
    monkeypatch.setenv("AUTOTUNE_PUBLIC_KEY", str(tmp_path / "deploy.pub"))
    autotune.load(so_path)  # the environment makes the signature mandatory: it is there
    _retamper(so_path)
    with pytest.raises(AutotuneError, match="does not carry a valid signature"):
        autotune.load(so_path)
    assert main(["verify", str(so_path)]) == 2
    assert "does not carry a valid signature" in capsys.readouterr().err
    monkeypatch.delenv("AUTOTUNE_PUBLIC_KEY")
    (tmp_path / "fresh").mkdir()
    signed = _copy(artifact, tmp_path / "fresh")
    assert main(["sign", str(signed), "--key", str(tmp_path / "deploy.key")]) == 0
    assert main(["keygen", "-o", str(tmp_path / "other")]) == 0
    with pytest.raises(AutotuneError, match="does not carry a valid signature of the key"):
        autotune.load(signed, public_key=tmp_path / "other.pub")  # signed, but not by this key
    chaos_record("tampered .so with a recomputed manifest, signature", injected=2)


def test_trust_unverified_warns_loudly(artifact, tmp_path, capsys):
    so_path = tmp_path / "bare.so"
    shutil.copy(artifact, so_path)
    with pytest.warns(UserWarning, match="trust_unverified=True"):
        autotune.load(so_path, trust_unverified=True)
    assert "WARNING" in capsys.readouterr().err


MAPS = """
import sys
import autotune
model = autotune.load(sys.argv[1])
maps = open("/proc/self/maps").read()
print(sys.argv[1] in maps, "autotune-load-" in maps)
"""


def test_the_loaded_code_is_the_private_copy_that_was_hashed(artifact):
    """The bytes hashed are the bytes run: the module is mapped from a copy only this process had,
    not from the artifact's path, which may change after it was read."""
    import subprocess
    import sys

    from .conftest import run_env

    proc = subprocess.run([sys.executable, "-c", MAPS, str(artifact)], capture_output=True, text=True,
                          env=run_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]


THREADS = """
import sys, tvm  # a service that imported TVM first
import autotune
model = autotune.load(sys.argv[1])
import os
print(os.environ.get("TVM_NUM_THREADS"), tvm.get_global_func("runtime.NumThreads")())
"""


@pytest.mark.parametrize("preset", [None, "1"])
def test_a_loaded_model_runs_on_the_threads_it_was_tuned_for_even_after_tvm_was_imported(artifact, preset):
    """TVM alone sizes its pool to half the cores on x86 (one of two here) and reads sysfs at every
    parallel launch; ``load`` gives it the artifact's thread count unless the caller chose one."""
    import subprocess
    import sys

    from autotune.targets.host import usable_cores

    from .conftest import run_env

    env = {k: v for k, v in run_env().items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    if preset:
        env["TVM_NUM_THREADS"] = preset
    proc = subprocess.run([sys.executable, "-c", THREADS, str(artifact)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    tuned_for = json.loads(open(f"{artifact}.json").read())["target"]["num-cores"]
    expected = preset or str(min(int(tuned_for), usable_cores()))
    assert proc.stdout.split() == [expected, expected]


def test_outputs_stay_the_callers_after_later_calls(artifact):
    """Outputs are handed out without a copy; a later call never writes into an earlier call's."""
    import numpy as np

    model = autotune.load(artifact)
    rng = np.random.default_rng(5)
    calls = [{"input_ids": rng.integers(0, 64, (1, 16)), "decoder_input_ids": rng.integers(0, 64, (1, 8))}
             for _ in range(3)]
    first = model(calls[0])["logits"]
    kept = first.copy()
    for call in calls[1:]:
        model(call)
    np.testing.assert_array_equal(first, kept)
    assert not np.array_equal(model(calls[1])["logits"], kept)


def test_an_output_that_is_an_input_is_not_overwritten_by_the_next_call(tmp_path):
    """A model returning its input unchanged: the output is copied out of the input tensor that the
    loader reuses from call to call."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", ["x"], ["same"]), helper.make_node("Relu", ["x"], ["relu"])]
    graph = helper.make_graph(nodes, "passthrough", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("same", TensorProto.FLOAT, [2, 8]),
                               helper.make_tensor_value_info("relu", TensorProto.FLOAT, [2, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "passthrough.onnx")
    autotune.compile(tmp_path / "passthrough.onnx", tmp_path / "passthrough.so", {"x": (2, 8)}, "host",
                     f"sqlite:///{tmp_path / 'p.db'}")
    model = autotune.load(tmp_path / "passthrough.so")
    first_input, second_input = (np.random.default_rng(i).standard_normal((2, 8)).astype(np.float32) for i in (1, 2))
    first = model(x=first_input)
    model(x=second_input)
    np.testing.assert_array_equal(first["same"], first_input)
    np.testing.assert_array_equal(first["relu"], np.maximum(first_input, 0))
