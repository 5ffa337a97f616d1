"""The int8 attention's blocks of query rows (Note [int8 attention]): one layer's attention at the
default input's token count, timed for several block sizes and for the size the model uses.

Each block's two GEMMs pack the group's keys and values afresh, so few rows repack them often;
many rows leave the cache. Rounds alternate the sizes; the medians are printed as a Markdown
table (milliseconds a call, and against 64 rows, the size before 2026-12-07).

    uv run --no-sync python benchmarks/bench_attention.py [--tokens 2443] [--batch 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from sbsconv import _core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2443, help="518x924 input: 37x66 patches and the class token")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", default="64,128,256,512,1024")
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.heads, args.tokens, args.head_dim)
    q, k, v = (torch.randn(*shape, generator=g) * s for s in (2.0, 2.0, 1.0))
    _, bf16, chosen = _core._int8_attention(q, k, v)
    sizes = sorted({int(r) for r in args.rows.split(",")} | {chosen})
    times: dict[int, list[float]] = {r: [] for r in sizes}
    for r in sizes:  # warm-up: each size's GEMM kernels built once
        _core._int8_attention(q, k, v, block_rows=r)
    for _ in range(args.rounds):
        for r in sizes:
            t0 = time.perf_counter()
            _core._int8_attention(q, k, v, block_rows=r)
            times[r].append(time.perf_counter() - t0)

    print(f"CPU, {torch.get_num_threads()} threads ({os.cpu_count()} cores), torch {torch.__version__}; "
          f"q, k, v {list(shape)}, probabilities in {'bfloat16' if bf16 else 'float32'}; "
          f"medians of {args.rounds} alternated rounds")
    print("| block rows | ms a call | against 64 rows |")
    print("|---|---|---|")
    base = statistics.median(times[64]) if 64 in times else None
    for r in sizes:
        m = statistics.median(times[r])
        against = f"{base / m:.2f}x" if base else ""
        print(f"| {r}{' (chosen)' if r == chosen else ''} | {m * 1000:.1f} | {against} |")


if __name__ == "__main__":
    main()
