"""What the CPU is, for reading speed figures later: its name, and the INT8 dot-product instructions
that decide whether an INT8 model pays.

onnxruntime's INT8 kernels gain most where the CPU multiplies-and-adds 8-bit integers in one
instruction (x86 AVX-512 VNNI or AVX-VNNI, ARM's dot product). Without one (AVX2 only, a Cortex-A72
Raspberry Pi 4) the same INT8 file is far less ahead of its FP32 twin: an INT8/FP32 ratio means
little without this line beside it.
"""

from __future__ import annotations

import platform
from pathlib import Path

# /proc/cpuinfo flag names, strongest first.
INT8_DOT_PRODUCT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_name(lines: list[str] | None = None) -> str:
    """The CPU model (``model name``, or ARM's ``Model``/``Hardware``), else what platform says."""
    for line in _cpuinfo() if lines is None else lines:
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def int8_dot_product(lines: list[str] | None = None) -> str | None:
    """The strongest INT8 dot-product extension the CPU reports (``flags`` on x86, ``Features`` on ARM),
    or None when it has none or the kernel does not say."""
    flags: set[str] = set()
    for line in _cpuinfo() if lines is None else lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return next((flag for flag in INT8_DOT_PRODUCT_FLAGS if flag in flags), None)


def cpu_facts() -> dict[str, str | None]:
    """Name and INT8 dot-product extension, for a report or a card."""
    lines = _cpuinfo()
    return {"cpu": cpu_name(lines), "int8_dot_product": int8_dot_product(lines)}
