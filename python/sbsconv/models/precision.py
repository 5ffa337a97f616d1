"""The CPU's instruction sets, and what ``precision="auto"`` picks for the CPU (Note [int8
linear layers] in cpp/sbsconv/depth/Int8Linear.h).

On a GPU, auto is fp16. On the CPU it is fp32 for now, and says which faster precision the
processor could run: "int8" (the encoder's linear layers as int8 GEMMs) where it has int8 dot
products (AVX-512 VNNI, AVX-VNNI, AMX-INT8). int8 meets the quality budget (relative depth
error <= 1 % after each frame's own normalisation, the eye >= 40 dB) on the tests' models, but
on Depth-Anything-V2-Small's architecture with random weights it measured 0.9-1.6 % and 34-38 dB
(benchmarks/RESULTS.md): until it is shown within the budget with trained weights it is asked
for, not chosen.
"""

from __future__ import annotations

import functools
import platform

INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux: /proc/cpuinfo; elsewhere: none known)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def auto_cpu_precision(flags: frozenset[str] | None = None) -> tuple[str, str]:
    """(precision, why) for ``precision="auto"`` on this CPU."""
    flags = cpu_flags() if flags is None else flags
    int8 = [f for f in INT8_FLAGS if f in flags]
    if int8:
        return "fp32", (f"fp32; this CPU has int8 dot products ({', '.join(int8)}): precision='int8' runs "
                        "about 1.25x faster, within a small depth error")
    return "fp32", "fp32: the CPU has no int8 dot-product instructions (VNNI, AMX)"
