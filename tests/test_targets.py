"""Named targets, and a clear error where the host cannot run one."""

import pytest

from autotune import AutotuneError
from autotune.targets import check_runnable_here, host_cpu_flags, missing_host_features, parse_target


def test_host_target_runs_here():
    target = parse_target("host")
    assert target.kind.name == "llvm" and int(target.attrs["num-cores"]) >= 1
    assert missing_host_features(target) == []
    check_runnable_here(target, "run")


def test_avx512_target_names_its_features():
    target = parse_target("avx512")
    assert str(target.attrs["mcpu"]) == "sapphirerapids"
    if "avx512f" in host_cpu_flags():
        pytest.skip("this host has AVX-512: the refusal cannot be shown here")
    with pytest.raises(AutotuneError, match="cannot measure candidates on this host .* lacks avx512f"):
        check_runnable_here(target, "measure candidates")


def test_json_target_and_cuda_names():
    assert str(parse_target('{"kind": "llvm", "mcpu": "haswell"}').attrs["mcpu"]) == "haswell"
    assert str(parse_target("cuda-sm90").attrs["arch"]) == "sm_90a"
