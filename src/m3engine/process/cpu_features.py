"""Whether this CPU multiplies bf16 in hardware, and its name: what `dtype=auto` on the CPU depends on.

bf16 on the CPU pays only where the cores have bf16 dot-product or matrix units: x86's AVX512-BF16
(Cooper Lake, Sapphire Rapids, AMD Zen 4 and later) and AMX-BF16 (Sapphire Rapids and later), Arm's
BF16 extension (Neoverse V1/V2, Graviton 3 and 4). Elsewhere torch emulates bf16 with fp32 products
and conversions, which is slower than fp32 itself, so auto does not even try it. Linux lists the
flags in /proc/cpuinfo; where that file is missing or unreadable, torch's own CPU probe answers for
x86. The name keys cached precision verdicts: another CPU model rounds no differently, but its speed
ratio between dtypes differs.
"""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# the flag names of /proc/cpuinfo: x86's "flags" line, Arm's "Features" line
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")


def _cpuinfo(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _first(text: str, keys: tuple[str, ...]) -> str | None:
    """The value of the first line whose key is one of `keys` (the first core's)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in keys:
            return value.strip()
    return None


def bf16_units(cpuinfo: Path | None = None) -> list[str]:
    """The bf16 flags this CPU has, best first; empty when it has none (or none can be found)."""
    text = _cpuinfo(cpuinfo or CPUINFO)
    if text is not None:
        flags = set((_first(text, ("flags", "features")) or "").split())
        return [f for f in BF16_FLAGS if f in flags]
    import torch  # no /proc (not Linux): torch's cpuinfo probe knows the x86 extensions

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return ["avx512_bf16"] if probe is not None and probe() else []


def cpu_name(cpuinfo: Path | None = None) -> str:
    """The CPU model as /proc/cpuinfo names it, else what the platform module knows."""
    text = _cpuinfo(cpuinfo or CPUINFO)
    name = _first(text, ("model name", "cpu model", "hardware")) if text is not None else None
    return name or platform.processor() or platform.machine() or "unknown CPU"
