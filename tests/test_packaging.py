"""The loader installs alone: a fresh environment with only ``pip install autotune`` (TVM and numpy)
loads and runs a ``.so`` the full install built, and imports nothing of the tuner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import autotune

from .conftest import TINY_SHAPES

ROOT = Path(__file__).resolve().parent.parent
CHECK = """
import sys
import numpy as np
import autotune.runtime
heavy = {'optuna', 'xgboost', 'matplotlib', 'scipy', 'sqlalchemy', 'onnx', 'onnxruntime'}
print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))
model = autotune.load(sys.argv[1])
out = model(dict(np.load(sys.argv[2])))["logits"]
np.save(sys.argv[3], out)
print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))
"""


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


@pytest.mark.slow
def test_the_loader_alone_runs_an_artifact_the_full_install_built(tuned, tmp_path):
    built = autotune.compile(tuned["model"], tmp_path / "m.so", TINY_SHAPES, "host", tuned["db"], validate=False)
    env_dir = tmp_path / "loader-env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    install = subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt"),
                              str(ROOT)], capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, install.stderr[-2000:]
    inputs = {"input_ids": np.arange(16).reshape(1, 16), "decoder_input_ids": np.arange(8).reshape(1, 8)}
    np.savez(tmp_path / "x.npz", **inputs)
    done = subprocess.run([str(env_dir / "bin" / "python"), "-c", CHECK, built["artifact"], str(tmp_path / "x.npz"),
                           str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["[]", "[]"]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), autotune.load(built["artifact"])(inputs)["logits"])
    print(f"loader-only environment: {_size_mb(env_dir):.0f} MB; this one: {_size_mb(Path(sys.prefix)):.0f} MB")
