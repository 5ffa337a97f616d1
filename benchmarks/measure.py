"""Shared by the benchmarks' worker processes: the best time of a call and the process's
peak resident-memory growth while it runs (sampled beside it)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def report(run: Callable[[], object], repeat: int, interval: float = 0.005) -> None:
    """Warms ``run`` up, times it ``repeat`` times and prints one JSON line: the best seconds,
    the peak memory growth over the baseline taken after the warm-up, the resident size after."""
    run()  # warm-up (allocator, oneDNN kernels)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(interval)

    base = rss()
    sampler = threading.Thread(target=sample)
    sampler.start()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    stop.set()
    sampler.join()
    print(json.dumps({"seconds": best, "peak_mb": (max(peak[0], rss()) - base) / 2**20, "rss_mb": rss() / 2**20}))


def tiny_depth_anything(folder) -> str:
    """A tiny random Depth-Anything-V2 saved in the transformers layout (for the benchmarks that
    measure everything but the model: export, scheduling); returns the folder."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=1, image_size=70,
                            patch_size=14, out_indices=[1, 2, 3, 4], apply_layernorm=True,
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                                 head_hidden_size=8, reassemble_hidden_size=64)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    return str(folder)
