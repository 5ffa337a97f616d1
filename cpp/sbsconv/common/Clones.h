#pragma once

// Note [Instruction-set clones]
// A plain loop marked SBSCONV_CLONES is built once per instruction set (AVX-512, AVX2, the
// x86-64 baseline) and the widest the CPU has is chosen when the program starts (GCC's and
// Clang's target_clones), so one binary runs everywhere and vectorises as wide as it can. The
// marked function is called through that choice, never inlined: mark a loop over a row, not a
// per-pixel helper.
// The AVX-512 clone may fuse a multiply and an add (FMA): a file whose results must be the same
// bits on every CPU (the warp, tested bit-exact against its tensor version) is compiled with
// -ffp-contract=off (CMakeLists.txt).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__APPLE__)
#define SBSCONV_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SBSCONV_CLONES
#endif
