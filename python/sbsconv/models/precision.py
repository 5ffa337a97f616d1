"""The CPU's instruction sets, and the precision ``precision="auto"`` picks for the CPU
(Note [int8 linear layers] in cpp/sbsconv/depth/Int8Linear.h).

On a GPU, auto is fp16. On the CPU it is chosen per machine, at run time, from what the
processor executes natively (measured in benchmarks/bench_cpu_precision.py, figures in
benchmarks/RESULTS.md):
- int8 dot products (AVX-512 VNNI, AVX-VNNI, AMX-INT8): "int8", the encoder's linear layers as
  int8 GEMMs (within the quality budget: AbsRel <= 1 % against fp32, the eye >= 40 dB);
- otherwise "fp32".
bf16 is left to be asked for: on the AMD EPYC measured here (avx512_bf16, no AMX) the whole
model in bf16 was slower than int8 and less accurate.
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
        return "int8", f"int8 linear layers: the CPU has int8 dot products ({', '.join(int8)})"
    return "fp32", "fp32: the CPU has no int8 dot-product instructions (VNNI, AMX)"
