"""Which precision DHNS really runs in: ``dhns.precision: bf16`` only where the device has native bf16.

On a CPU without bf16 instructions (AVX2 only, for example) PyTorch emulates bf16 matrix products: a
bf16 matmul measured 0.6 GFLOP/s there against about 120 GFLOP/s in fp32, so a bf16 run would be two
orders of magnitude slower for no gain.  :func:`resolve_precision` falls back to fp32 and says why.

Detection (each piece is a small function, so tests can replace it):

* CPU: the ``avx512_bf16`` or ``amx_bf16`` flag (x86) or ``bf16`` feature (aarch64) in
  ``/proc/cpuinfo``; where that file is absent (macOS, Windows), PyTorch's
  ``torch.backends.cpu.get_cpu_capability()`` naming an AMX or BF16 level.  Unknown means no.
* CUDA: compute capability 8.0 or newer (Ampere and later have bf16 tensor cores; older GPUs only
  emulate it, which ``torch.cuda.is_bf16_supported()`` may count as support); on ROCm,
  ``torch.cuda.is_bf16_supported()``.
* any other device: no.
"""

from __future__ import annotations

from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16")
#: /proc/cpuinfo flags that mean native bf16 arithmetic
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags() -> set[str] | None:
    """The CPU feature flags of ``/proc/cpuinfo`` (x86 ``flags``, aarch64 ``Features``), or None when
    the file cannot be read (not Linux)."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_has_native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes in bf16 natively, and the evidence in words (for messages)."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    if flags is not None:
        found = sorted(f for f in CPU_BF16_FLAGS if f in flags)
        if found:
            return True, f"CPU flags {', '.join(found)}"
        return False, f"no avx512_bf16 or amx_bf16 flag in {CPUINFO}; PyTorch CPU capability {capability}"
    if any(level in capability.upper() for level in ("BF16", "AMX")):
        return True, f"PyTorch CPU capability {capability}"
    return False, f"PyTorch CPU capability {capability} (no {CPUINFO} to read the flags from)"


def cuda_has_native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether the CUDA (or ROCm) device computes in bf16 natively, and the evidence in words."""
    if torch.version.hip:
        supported = bool(torch.cuda.is_bf16_supported())
        return supported, f"ROCm torch.cuda.is_bf16_supported() is {supported}"
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    return (major, minor) >= (8, 0), f"{name} has compute capability {major}.{minor} (bf16 needs 8.0)"


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str | None]:
    """The precision to train in on ``device`` for ``dhns.precision: requested``, and a warning.

    Returns ``(precision, warning)``: ``("fp32", None)`` for fp32; ``("bf16", None)`` where the device
    has native bf16; ``("fp32", message)`` otherwise, the message saying why it fell back.

    Raises:
        ValueError: ``requested`` is not one of :data:`PRECISIONS` (the configuration model already
            refuses it, so this is a programming error).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return "fp32", None
    if device.type == "cpu":
        native, evidence = cpu_has_native_bf16()
        if native:
            return "bf16", None
        return "fp32", (
            f"dhns.precision: bf16 falls back to fp32: this CPU has no native bf16 ({evidence}), so bf16 "
            "matrix products would be emulated, about 200 times slower than fp32 (0.6 against 120 GFLOP/s "
            "measured on an AVX2 machine); set dhns.precision: fp32 to silence this"
        )
    if device.type == "cuda":
        native, evidence = cuda_has_native_bf16(device)
        if native:
            return "bf16", None
        return "fp32", (
            f"dhns.precision: bf16 falls back to fp32: {evidence}, so bf16 would be emulated and slower "
            "than fp32; set dhns.precision: fp32 to silence this"
        )
    return "fp32", (
        f"dhns.precision: bf16 falls back to fp32: bf16 support is not checked on device type "
        f"{device.type!r}; set dhns.precision: fp32 to silence this"
    )
