"""Cores come from the cgroup CPU quota where one is set, then affinity: a container limited to fewer
CPUs than the host has does not start a thread per host core. Tested in a real cgroup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.targets.host import CGROUP_ROOT, cgroup_cpu_quota, usable_cores

from .conftest import run_env

CHILD = ("import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); "
         "from autotune.targets.host import usable_cores; print(usable_cores())")


def _limited_cgroup(tmp_name: str) -> tuple[Path, Path]:
    """A new cgroup allowed one CPU: (its folder, the file a process joins it through)."""
    v1 = CGROUP_ROOT / "cpu"
    try:
        if (v1 / "cpu.cfs_quota_us").exists():
            folder = v1 / tmp_name
            folder.mkdir()
            (folder / "cpu.cfs_period_us").write_text("100000")
            (folder / "cpu.cfs_quota_us").write_text("100000")
        else:
            folder = CGROUP_ROOT / tmp_name
            folder.mkdir()
            (folder / "cpu.max").write_text("100000 100000")
    except OSError as err:
        pytest.skip(f"cannot make a cgroup with a CPU quota here: {err}")
    return folder, folder / "cgroup.procs"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups are Linux's")
def test_a_one_cpu_cgroup_gets_one_core():
    if usable_cores() < 2:
        pytest.skip("this host gives this process one core: a quota of one cannot be told apart")
    folder, procs = _limited_cgroup(f"autotune-test-{os.getpid()}")
    try:
        launcher = f"echo $$ > {procs} && exec {sys.executable} -c \"{CHILD}\" /dev/null"
        proc = subprocess.run(["sh", "-c", launcher], capture_output=True, text=True, env=run_env(),
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "1"
    finally:
        folder.rmdir()


def test_no_quota_is_no_limit():
    assert cgroup_cpu_quota(Path("/nonexistent/cgroup")) is None
    assert usable_cores() >= 1
