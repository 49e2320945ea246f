"""Where bf16 is native: the one precision rule shared by training, extraction and the apps.

bf16 is *native* on

* a CUDA GPU that computes bf16 (``torch.cuda.is_bf16_supported()``: Ampere and later);
* a CPU with AVX-512 BF16 or AMX (``torch.cpu._is_avx512_bf16_supported()`` or
  ``torch.cpu._is_amx_tile_supported()``), unless ``ONEDNN_MAX_CPU_ISA`` (or its older name
  ``DNNL_MAX_CPU_ISA``) caps oneDNN below ``AVX512_CORE_BF16``: oneDNN then has no bf16
  kernels even though the CPU has the instructions.

``torch.backends.cpu.get_cpu_capability()`` is not enough: it says ``AVX512`` on CPUs with and
without AVX-512 BF16.

Elsewhere (AVX2-only CPUs: most laptops and many servers) PyTorch emulates bf16: a training
step under bf16 autocast measured 18 times slower than float32 there, and ``nn.LSTM`` /
``nn.GRU`` have no bf16 kernel at all (oneDNN refuses the primitive). ``"auto"`` precision
therefore picks bf16 only where it is native (:func:`auto_precision`), and an explicit bf16 on
a CPU without it warns once (:func:`warn_if_emulated`).

The rule reads the hardware on every call (cheap; tests monkeypatch :func:`cpu_bf16_native`
or the environment to cover both branches on any machine).
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import torch

#: oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) below ``AVX512_CORE_BF16``: no bf16 kernels.
_ISA_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)

#: Lightning precision names of the two outcomes of the rule.
Bf16OrFp32 = Literal["bf16-mixed", "32-true"]


class EmulatedBf16Warning(UserWarning):
    """bf16 was asked for on a CPU that emulates it (correct, but much slower than float32)."""


def onednn_isa_cap() -> str | None:
    """The ISA cap oneDNN runs under (``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA``, upper
    case), or ``None`` when neither is set."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(name, "").strip()
        if value:
            return value.upper()
    return None


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX) and oneDNN may use it."""
    cap = onednn_isa_cap()
    if cap is not None and cap in _ISA_WITHOUT_BF16:
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_native(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU with bf16, or a CPU as in
    :func:`cpu_bf16_native`. Other device types (MPS, ...) count as not native."""
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return cpu_bf16_native()
    return False


def auto_precision(device: torch.device | str = "cpu") -> Bf16OrFp32:
    """What ``precision: auto`` means on ``device``: ``"bf16-mixed"`` where bf16 is native,
    else ``"32-true"``."""
    return "bf16-mixed" if bf16_native(device) else "32-true"


def cpu_description() -> str:
    """One line for benchmarks and logs: the CPU capability and whether bf16 is native, e.g.
    ``"CPU capability AVX512, bf16 native: yes (AVX-512 BF16)"``."""
    capability = torch.backends.cpu.get_cpu_capability()
    features = [
        name
        for name, present in (
            ("AVX-512 BF16", torch.cpu._is_avx512_bf16_supported()),
            ("AMX", torch.cpu._is_amx_tile_supported()),
        )
        if present
    ]
    native = cpu_bf16_native()
    detail = ", ".join(features) or "no AVX-512 BF16 or AMX"
    cap = onednn_isa_cap()
    if cap is not None:
        detail += f"; ONEDNN_MAX_CPU_ISA={cap}"
    return f"CPU capability {capability}, bf16 native: {'yes' if native else 'no'} ({detail})"


def device_description(device: torch.device | str) -> str:
    """:func:`cpu_description`, plus whether ``device`` computes bf16 natively when it is not
    the CPU (what every benchmark prints first)."""
    device = torch.device(device)
    line = cpu_description()
    if device.type != "cpu":
        line += f"; {device.type} bf16 native: {'yes' if bf16_native(device) else 'no'}"
    return line


_warned: set[str] = set()


def warn_if_emulated(device: torch.device | str, *, what: str = "bf16") -> bool:
    """Warn once per process (per ``what``) when bf16 is asked for on a CPU that emulates it.

    Returns whether bf16 is emulated there (``False`` on GPUs and native CPUs)."""
    if torch.device(device).type != "cpu" or cpu_bf16_native():
        return False
    if what not in _warned:
        _warned.add(what)
        warnings.warn(
            f"{what} on a CPU without native bf16 ({cpu_description()}): bf16 is emulated, "
            "which is correct but much slower than float32 (use precision auto or 32 here); "
            "LSTM/GRU layers run in float32",
            EmulatedBf16Warning,
            stacklevel=2,
        )
    return True
