"""The production loader refuses artifacts it cannot verify or run."""

from __future__ import annotations

import json
import shutil

import pytest

import autotune
from autotune import AutotuneError

from .conftest import TINY_SHAPES


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
