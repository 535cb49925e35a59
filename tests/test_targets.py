"""Named targets, and a clear error where the host cannot run one."""

import pytest

from autotune import AutotuneError
from autotune.backends import backend_for
from autotune.backends.cpu import required_features
from autotune.targets.host import host_cpu_flags, lacking_on_host
from autotune.targets.names import parse_target


def test_host_target_runs_here():
    target = parse_target("host")
    assert target.kind.name == "llvm" and int(target.attrs["num-cores"]) >= 1
    assert lacking_on_host(required_features(target)) == []
    backend_for(target).check_runnable(target, "run")


def test_avx512_target_names_its_features():
    target = parse_target("avx512")
    assert str(target.attrs["mcpu"]) == "sapphirerapids"
    if "avx512f" in host_cpu_flags():
        pytest.skip("this host has AVX-512: the refusal cannot be shown here")
    with pytest.raises(AutotuneError, match="cannot measure candidates on this host .* lacks avx512f"):
        backend_for(target).check_runnable(target, "measure candidates")


def test_json_target_and_cuda_names():
    assert str(parse_target('{"kind": "llvm", "mcpu": "haswell"}').attrs["mcpu"]) == "haswell"
    assert str(parse_target("cuda-sm90").attrs["arch"]) == "sm_90a"


def test_features_are_looked_up_under_cpuinfos_spelling(monkeypatch):
    # /proc/cpuinfo of a Sapphire Rapids: LLVM's avx512vnni is cpuinfo's avx512_vnni, amx-tile amx_tile.
    sapphire_rapids = frozenset("avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 "
                                "avx512_fp16 amx_tile amx_bf16 amx_int8".split())
    monkeypatch.setattr("autotune.targets.host.host_cpu_flags", lambda: sapphire_rapids)
    assert lacking_on_host(required_features(parse_target("avx512"))) == []
    assert lacking_on_host(["avx512vnni", "amx-int8", "avx512bf16", "avx512fp16"]) == []
    assert lacking_on_host(["avx512vnni", "avx512vp2intersect"]) == ["avx512vp2intersect"]
