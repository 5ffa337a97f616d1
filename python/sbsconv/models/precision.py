"""The CPU's instruction sets, and what ``precision="auto"`` picks for the CPU (Note [int8
linear layers] and Note [int8 attention] in cpp/sbsconv/depth/Int8Linear.h).

On a GPU, auto is fp16. On the CPU it is "int8" (the encoder's linear layers and attention as
int8 GEMMs) where the processor has int8 dot products (AVX-512 VNNI, AVX-VNNI, AMX-INT8):
1.5-1.6x fp32 on an AMD EPYC with two cores (benchmarks/RESULTS.md). Elsewhere fp32: without
those instructions int8 GEMMs are emulated, and bf16 without avx512_bf16 is slower than fp32.
On a CPU with AMX-BF16 (Intel Xeon since Sapphire Rapids) auto is "bf16" for the families whose
registry entry says bf16_on_amx (Depth-Anything-V2): its matrix unit ran Depth-Anything-V2-Small
at input 518 2.1x faster than int8 on two cores (2.35 against 1.12 frames/s at batch 1, 2.49
against 1.18 at batch 4; a whole conversion 1.44x), with the same error against fp32 on the
random network (1.45 % against int8's 1.46 %); the depth's last convolutions stay float32
(Note [bf16 on the CPU: the depth in float32] in cpp/sbsconv/depth/DepthAnythingV2.h).

Quality (benchmarks/RESULTS.md, "CPU precision"): within the budget (relative depth error
<= 1 % after each frame's own normalisation, the eye >= 40 dB) on the tests' models of every
family; on Depth-Anything-V2-Small's full architecture with random weights int8's error equals
bf16's (0.6-1.4 %), and rounding the weights alone to bf16 moves that network by 0.5-0.9 %: a
random network of that depth amplifies any rounding, so it cannot settle the budget, and trained
weights were not reachable here. ``precision="fp32"`` keeps the exact path.
"""

from __future__ import annotations

import functools
import platform

INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
AMX_BF16 = "amx_bf16"


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


def auto_cpu_precision(flags: frozenset[str] | None = None, *, bf16_on_amx: bool = False) -> tuple[str, str]:
    """(precision, why) for ``precision="auto"`` on this CPU; ``bf16_on_amx``: the family's
    bf16 path is the faster one on CPUs with AMX-BF16 (its registry entry says so)."""
    flags = cpu_flags() if flags is None else flags
    if bf16_on_amx and AMX_BF16 in flags:
        return "bf16", ("bf16: this CPU has AMX-BF16 (amx_bf16), whose matrix unit ran this model "
                        "2x faster than int8 where measured (precision='fp32' for the exact path)")
    int8 = [f for f in INT8_FLAGS if f in flags]
    if int8:
        return "int8", (f"int8: this CPU has int8 dot products ({', '.join(int8)}); 2-4x as fast as "
                        "fp32 where measured (precision='fp32' for the exact path)")
    return "fp32", "fp32: the CPU has no int8 dot-product instructions (VNNI, AMX)"
