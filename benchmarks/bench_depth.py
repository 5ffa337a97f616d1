"""Depth model speed against the reference implementation, measured in the same run.

Depth-Anything-V2-Small architecture (random weights: speed does not depend on the values)
at input 518 for a 1280x720 frame (a 518x924 network input), batch 1 and 4, on the CPU with
the same thread count: sbsconv's C++ forward vs the transformers PyTorch model. Peak memory
is the process's resident-set growth during each measured call (the two run in separate
processes so that one's allocations do not hide the other's).

    uv run python benchmarks/bench_depth.py [--rounds 3] [--repeat 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))  # measure.py, for the workers

WORKER = r"""
import sys, torch
sys.path.insert(0, sys.argv[-1])
from measure import report
which, folder, batch, repeat, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
x = torch.randn(batch, 3, 518, 924)
if which == "sbsconv":
    import sbsconv.models as models
    model = models.load(folder, device="cpu", precision="fp32")
    run = lambda: model.forward(x)
else:
    from transformers import DepthAnythingForDepthEstimation
    ref = DepthAnythingForDepthEstimation.from_pretrained(folder).eval()
    def run():
        with torch.inference_mode():
            return ref(pixel_values=x).predicted_depth
report(run, repeat)
"""


def make_checkpoint(folder: str, seed: int | None = None) -> None:
    """Depth-Anything-V2-Small's architecture with random weights (from `seed` when given)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                            image_size=518, patch_size=14, out_indices=[3, 6, 9, 12],
                            apply_layernorm=True, reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384],
                                 fusion_hidden_size=64, head_hidden_size=32, reassemble_hidden_size=384)
    if seed is not None:
        torch.manual_seed(seed)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)


def measure(which: str, folder: str, batch: int, repeat: int, threads: int) -> dict:
    args = [which, folder, str(batch), str(repeat), str(threads), BENCHMARKS]
    out = subprocess.run([sys.executable, "-c", WORKER, *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=3, help="processes per side, alternated")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        make_checkpoint(folder)
        print(f"CPU, {args.threads} threads, torch {torch.__version__}; Depth-Anything-V2-Small, 518x924 input")
        print("| batch | sbsconv s/batch | transformers s/batch | speed-up | sbsconv peak MB | transformers peak MB |")
        print("|---|---|---|---|---|---|")
        for batch in (1, 4):
            # Alternate the two processes so that a busy moment on a shared machine does not
            # land on one side only; keep the best time and the largest peak of each.
            ours: dict = {}
            ref: dict = {}
            for _ in range(args.rounds):
                for which, acc in (("sbsconv", ours), ("transformers", ref)):
                    m = measure(which, folder, batch, args.repeat, args.threads)
                    acc["seconds"] = min(acc.get("seconds", float("inf")), m["seconds"])
                    acc["peak_mb"] = max(acc.get("peak_mb", 0.0), m["peak_mb"])
            print(f"| {batch} | {ours['seconds']:.3f} | {ref['seconds']:.3f} | "
                  f"{ref['seconds'] / ours['seconds']:.2f}x | {ours['peak_mb']:.0f} | {ref['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
