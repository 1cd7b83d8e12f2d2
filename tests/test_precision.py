"""``dhns.precision: bf16`` falls back to fp32, with a reason, where the device has no native bf16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dhns_search.training import precision
from dhns_search.training.precision import cpu_has_native_bf16, cuda_has_native_bf16, resolve_precision

CPU = torch.device("cpu")


def _cpuinfo(monkeypatch, tmp_path: Path, text: str | None, capability: str) -> None:
    path = tmp_path / "cpuinfo"
    if text is not None:
        path.write_text(text)
    monkeypatch.setattr(precision, "CPUINFO", path)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)


def test_fp32_never_asks_the_hardware(monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: pytest.fail("detected"))
    monkeypatch.setattr(precision, "cuda_has_native_bf16", lambda d: pytest.fail("detected"))
    assert resolve_precision("fp32", CPU) == ("fp32", None)
    assert resolve_precision("fp32", torch.device("cuda", 1)) == ("fp32", None)


def test_bf16_on_a_cpu_with_native_bf16(monkeypatch, tmp_path: Path) -> None:
    _cpuinfo(monkeypatch, tmp_path, "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16\n",
             "AVX512")
    assert cpu_has_native_bf16() == (True, "CPU flags amx_bf16, avx512_bf16")
    assert resolve_precision("bf16", CPU) == ("bf16", None)


def test_bf16_on_an_avx2_cpu_falls_back_with_the_reason(monkeypatch, tmp_path: Path) -> None:
    _cpuinfo(monkeypatch, tmp_path, "processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n\nprocessor\t: 1\n"
             "flags\t\t: fpu sse avx avx2 fma\n", "AVX2")
    native, evidence = cpu_has_native_bf16()
    assert not native
    assert evidence == f"no avx512_bf16 or amx_bf16 flag in {tmp_path}/cpuinfo; PyTorch CPU capability AVX2"
    chosen, warning = resolve_precision("bf16", CPU)
    assert chosen == "fp32"
    assert warning == (
        f"dhns.precision: bf16 falls back to fp32: this CPU has no native bf16 ({evidence}), so bf16 matrix "
        "products would be emulated, about 200 times slower than fp32 (0.6 against 120 GFLOP/s measured on an "
        "AVX2 machine); set dhns.precision: fp32 to silence this"
    )


def test_avx512_without_the_bf16_extension_is_not_native(monkeypatch, tmp_path: Path) -> None:
    _cpuinfo(monkeypatch, tmp_path, "flags\t: avx2 avx512f avx512bw avx512_vnni\n", "AVX512")
    assert cpu_has_native_bf16()[0] is False
    assert resolve_precision("bf16", CPU)[0] == "fp32"


def test_arm_bf16_feature_is_native(monkeypatch, tmp_path: Path) -> None:
    _cpuinfo(monkeypatch, tmp_path, "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", "SVE256")
    assert cpu_has_native_bf16() == (True, "CPU flags bf16")


@pytest.mark.parametrize(("capability", "native"), [("AVX2", False), ("AVX512", False), ("AMX_BF16", True)])
def test_without_proc_cpuinfo_the_torch_capability_decides(monkeypatch, tmp_path: Path, capability, native) -> None:
    _cpuinfo(monkeypatch, tmp_path, None, capability)
    assert precision.cpu_flags() is None
    got, evidence = cpu_has_native_bf16()
    assert got is native and capability in evidence
    assert resolve_precision("bf16", CPU)[0] == ("bf16" if native else "fp32")


def test_this_machine_gets_a_consistent_answer() -> None:
    native, _ = cpu_has_native_bf16()
    chosen, warning = resolve_precision("bf16", CPU)
    assert (chosen, warning is None) == (("bf16", True) if native else ("fp32", False))


def _fake_cuda(monkeypatch, capability: tuple[int, int], name: str, hip: str | None = None,
               supported: bool = False) -> None:
    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)


def test_cuda_before_ampere_falls_back(monkeypatch) -> None:
    _fake_cuda(monkeypatch, (7, 5), "Tesla T4", supported=True)  # supported = emulated: not enough
    chosen, warning = resolve_precision("bf16", torch.device("cuda", 0))
    assert chosen == "fp32"
    assert warning == (
        "dhns.precision: bf16 falls back to fp32: Tesla T4 has compute capability 7.5 (bf16 needs 8.0), so "
        "bf16 would be emulated and slower than fp32; set dhns.precision: fp32 to silence this"
    )


@pytest.mark.parametrize(("capability", "name"), [((8, 0), "A100"), ((9, 0), "H200")])
def test_cuda_from_ampere_on_keeps_bf16(monkeypatch, capability, name) -> None:
    _fake_cuda(monkeypatch, capability, name)
    assert cuda_has_native_bf16(torch.device("cuda"))[0] is True
    assert resolve_precision("bf16", torch.device("cuda")) == ("bf16", None)


@pytest.mark.parametrize("supported", [True, False])
def test_rocm_asks_torch(monkeypatch, supported: bool) -> None:
    _fake_cuda(monkeypatch, (9, 0), "MI250", hip="6.0", supported=supported)
    chosen, warning = resolve_precision("bf16", torch.device("cuda"))
    assert chosen == ("bf16" if supported else "fp32")
    assert (warning is None) is supported
    if not supported:
        assert "ROCm torch.cuda.is_bf16_supported() is False" in warning


def test_other_devices_fall_back_and_bad_names_are_refused() -> None:
    chosen, warning = resolve_precision("bf16", torch.device("mps"))
    assert chosen == "fp32" and "device type 'mps'" in warning
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'fp16'"):
        resolve_precision("fp16", CPU)
