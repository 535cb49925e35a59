"""The command line users expect: --version, -q/-v, bare database paths, tvmc's spellings, a
configuration file, shell completion, ``run``, and one documented exit code per kind of outcome."""

from __future__ import annotations

import json
import signal
import subprocess

import numpy as np
import pytest

from autotune.cli import main
from autotune.cli.main import build_parser

from .conftest import TINY_SHAPE_FLAGS, TINY_SHAPES, run_env
from .faults import cli, start, tune_command, wait_for_records


def test_version_names_autotune_and_its_tvm(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("autotune 0.1.0 (apache-tvm 0.27")


def test_quiet_and_verbose_before_or_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["-v", "tasks", "m.onnx"]).verbose == 1
    assert parser.parse_args(["tasks", "m.onnx", "-vv"]).verbose == 2
    assert parser.parse_args(["tune", "m.onnx", "-q"]).quiet is True
    assert parser.parse_args(["tune", "m.onnx", "--rpc-tracker", "h:9190"]).rpc == "h:9190"  # tvmc's name


def test_a_bare_path_is_a_sqlite_database(tuned, tmp_path, capsys):
    from .conftest import copy_database

    path = tmp_path / "plain.db"
    copy_database(tuned["db"], path)
    assert main(["history", "jobs", "--db", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["job_id"] == tuned["summary"]["job_id"]


def test_the_configuration_file_gives_defaults_and_a_flag_overrides_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "autotune.toml").write_text('db = "from-file.db"\nrepeat = 5\ntime-budget = "2m"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["config", "--repeat", "7", "--json"]) == 0
    settings = {row["setting"]: row for row in json.loads(capsys.readouterr().out)["settings"]}
    assert settings["repeat"]["value"] == 7 and settings["repeat"]["source"] == "flag"
    assert settings["db"]["value"] == "from-file.db" and settings["db"]["source"].endswith("autotune.toml")
    assert settings["time_budget"]["value"] == 120.0
    assert settings["builders"] == {"setting": "builders", "value": 2, "source": "default"}
    assert build_parser().parse_args(["tune", "m.onnx"]).repeat is None  # not applied: only by main
    (tmp_path / "autotune.toml").write_text('repaet = 5\n')
    assert main(["config"]) == 2
    assert "unknown setting 'repaet'" in capsys.readouterr().err


def test_the_completion_script_completes_subcommands_and_flags(capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    probe = ('source /dev/stdin; COMP_WORDS=(autotune be); COMP_CWORD=1; _autotune; echo "${COMPREPLY[@]}"; '
             'COMP_WORDS=(autotune bench --str); COMP_CWORD=2; _autotune; echo "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", probe], input=script, capture_output=True, text=True, timeout=60)
    assert done.stdout.split("\n")[:2] == ["bench", "--stream-duration --streams"], done.stderr


def test_run_takes_inputs_and_saves_outputs(tuned, tmp_path, capsys):
    import autotune

    built = autotune.compile(tuned["model"], tmp_path / "m.so", TINY_SHAPES, "host", tuned["db"], validate=False)
    ids = {"input_ids": np.arange(16).reshape(1, 16), "decoder_input_ids": np.arange(8).reshape(1, 8)}
    np.savez(tmp_path / "x.npz", **ids)
    assert main(["run", built["artifact"], "--inputs", str(tmp_path / "x.npz"), "--outputs",
                 str(tmp_path / "y.npz"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["outputs"][0]
    saved = np.load(tmp_path / "y.npz")["logits"]
    assert summary["shape"] == list(saved.shape) and summary["max"] == pytest.approx(float(saved.max()))
    np.testing.assert_array_equal(saved, autotune.load(built["artifact"])(ids)["logits"])
    assert main(["run", built["artifact"], "--random", "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["run", built["artifact"]]) == 2
    assert "--inputs X.npz" in capsys.readouterr().err


def test_bench_reports_what_perf_test_and_benchmark_app_users_read(tuned, tmp_path, capsys):
    import autotune

    built = autotune.compile(tuned["model"], tmp_path / "m.so", TINY_SHAPES, "host", tuned["db"], validate=False)
    assert main(["bench", built["artifact"], "--count", "30", "--streams", "2", "--stream-duration", "2s",
                 "--untuned-runs", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    stats = result["systems"]["autotune"]
    assert stats["min_ms"] <= stats["p50_ms"] <= stats["p99_ms"] <= stats["p999_ms"] <= stats["max_ms"]
    assert stats["std_ms"] >= 0 and stats["runs"] == 30 and result["peak_rss_mb"] > 0
    assert set(result["streams"]) == {"autotune", "onnxruntime"}
    assert all(s["streams"] == 2 and s["throughput_per_s"] > 0 for s in result["streams"].values())


def test_exit_codes_are_documented_and_distinct(tmp_path, tiny_translation, capsys):
    """0 ok, 2 bad input, 3 validation failed, 4 database or environment, 130 interrupted."""
    assert main(["tasks", str(tiny_translation), *TINY_SHAPE_FLAGS, "--json"]) == 0
    assert main(["tasks", str(tmp_path / "missing.onnx")]) == 2
    assert main(["compile", str(tiny_translation), *TINY_SHAPE_FLAGS, "--db", str(tmp_path / "e.db"),
                 "-o", str(tmp_path / "m.so"), "--rtol", "0", "--atol", "0"]) == 3
    stages = [line.split("] ", 1)[-1] for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    assert [s.split(" ")[0] for s in stages] == ["imported;", "validating"], stages  # progress
    assert main(["history", "jobs", "--db", "sqlite:////proc/nope/x.db"]) == 4
    capsys.readouterr()
    help_text = build_parser().format_help()
    assert all(f"{code} " in help_text for code in (2, 3, 4, 130, 143))
    db_path = tmp_path / "int.db"
    proc = start(tune_command(tiny_translation, f"sqlite:///{db_path}", 60, TINY_SHAPE_FLAGS))
    wait_for_records(db_path, 4, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130


def test_a_loader_only_install_says_what_to_install_for_the_tuner(tmp_path):
    """Where the tuner's packages are missing, a tuning command names the extra (exit 4)."""
    blocker = tmp_path / "sitecustomize.py"  # hides sqlalchemy, as a loader-only install lacks it
    blocker.write_text("import sys\nclass Block:\n    def find_spec(self, name, *a):\n"
                       "        if name.split('.')[0] == 'sqlalchemy':\n"
                       "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
                       "sys.meta_path.insert(0, Block())\n")
    env = {**run_env(), "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(cli("history", "jobs", "--db", str(tmp_path / "x.db")), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 4 and "pip install 'autotune[tuner]'" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1
