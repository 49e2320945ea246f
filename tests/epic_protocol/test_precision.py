"""The precision rule: bf16 is native on CUDA GPUs with bf16 and on CPUs with AVX-512 BF16 or
AMX, unless ONEDNN_MAX_CPU_ISA caps oneDNN below AVX512_CORE_BF16. Every branch is forced by
monkeypatching the detection, so the tests mean the same on every CPU."""

from __future__ import annotations

import warnings

import pytest
import torch

from epic_protocol import precision


@pytest.fixture
def cpu(monkeypatch):
    """cpu(avx512_bf16, amx, cap): fake CPU features and oneDNN ISA cap."""

    def fake(avx512_bf16: bool, amx: bool, cap: str | None = None) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
        if cap is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        monkeypatch.setattr(precision, "_warned", set())

    return fake


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "native"),
    [(True, False, True), (False, True, True), (True, True, True), (False, False, False)],
)
def test_cpu_bf16_native_follows_avx512_bf16_or_amx(cpu, avx512_bf16, amx, native):
    cpu(avx512_bf16, amx)
    assert precision.cpu_bf16_native() is native
    assert precision.bf16_native("cpu") is native
    assert precision.auto_precision("cpu") == ("bf16-mixed" if native else "32-true")


@pytest.mark.parametrize("cap", ["AVX2", "avx2", "AVX512_CORE", "AVX512_CORE_VNNI", "SSE41"])
def test_onednn_isa_cap_below_bf16_means_not_native(cpu, cap):
    cpu(True, True, cap)
    assert not precision.cpu_bf16_native()
    assert precision.auto_precision("cpu") == "32-true"


def test_older_dnnl_name_is_honoured(cpu, monkeypatch):
    cpu(True, False)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    assert not precision.cpu_bf16_native()


@pytest.mark.parametrize("cap", ["AVX512_CORE_BF16", "AVX512_CORE_AMX", "ALL", "DEFAULT"])
def test_a_cap_at_or_above_bf16_keeps_the_hardware_answer(cpu, cap):
    cpu(True, False, cap)
    assert precision.cpu_bf16_native()
    cpu(False, False, cap)
    assert not precision.cpu_bf16_native()


@pytest.mark.parametrize(
    ("available", "bf16", "native"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_cuda_is_native_when_the_gpu_computes_bf16(monkeypatch, available, bf16, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert precision.bf16_native("cuda") is native
    assert precision.bf16_native(torch.device("cuda", 0)) is native
    assert precision.auto_precision("cuda") == ("bf16-mixed" if native else "32-true")


def test_other_devices_are_not_native():
    assert not precision.bf16_native("mps")
    assert precision.auto_precision("meta") == "32-true"


def test_explicit_bf16_on_an_emulating_cpu_warns_once(cpu):
    cpu(False, False)
    with pytest.warns(precision.EmulatedBf16Warning, match="emulated.*slower"):
        assert precision.warn_if_emulated("cpu", what="--trainer.precision bf16-mixed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.warn_if_emulated("cpu", what="--trainer.precision bf16-mixed")


def test_no_warning_where_bf16_is_native(cpu):
    cpu(True, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not precision.warn_if_emulated("cpu")
        assert not precision.warn_if_emulated("cuda")


def test_cpu_description_names_the_capability_and_the_answer(cpu):
    cpu(True, False, "AVX2")
    line = precision.cpu_description()
    assert torch.backends.cpu.get_cpu_capability() in line
    assert "bf16 native: no" in line and "ONEDNN_MAX_CPU_ISA=AVX2" in line
    cpu(False, True)
    assert "bf16 native: yes (AMX)" in precision.cpu_description()
