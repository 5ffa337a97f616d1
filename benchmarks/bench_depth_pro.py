"""Depth Pro speed against transformers' DepthProForDepthEstimation, in the same run.

The released architecture (three ViT-L/16 at 384 px, the 35-tile pyramid of a 1536x1536
input, the decoder, the field-of-view network; random weights in the transformers layout:
speed does not depend on the values) on the CPU with the same thread count: seconds per
frame of sbsconv's C++ forward against the transformers model's, each in its own process,
and each process's peak resident-memory growth during the measured call (weights excluded:
they are loaded before the baseline is taken).

    uv run python benchmarks/bench_depth_pro.py [--rounds 1] [--repeat 1] [--threads N]
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
which, folder, repeat, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
x = torch.randn(1, 3, 1536, 1536)
if which == "sbsconv":
    import sbsconv.models as models
    from sbsconv._native import _core
    model = models.load(folder, device="cpu", precision="fp32")
    run = lambda: _core.depth_pro_forward(model._core, x)
else:
    from transformers import DepthProForDepthEstimation
    ref = DepthProForDepthEstimation.from_pretrained(folder, use_fov_model=True).eval()
    def run():
        with torch.inference_mode():
            out = ref(pixel_values=x)
            return out.predicted_depth, out.field_of_view
report(run, repeat, interval=0.01)
"""


def make_checkpoint(folder: str) -> None:
    from transformers import DepthProConfig, DepthProForDepthEstimation

    vit = {"model_type": "dinov2", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
           "patch_size": 16, "image_size": 384, "layerscale_value": 1e-5}
    config = DepthProConfig(use_fov_model=True, image_model_config=dict(vit), patch_model_config=dict(vit),
                            fov_model_config=dict(vit))
    torch.manual_seed(0)
    DepthProForDepthEstimation(config, use_fov_model=True).save_pretrained(folder)
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump({"size": {"height": 1536, "width": 1536}}, f)


def measure(which: str, folder: str, repeat: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, which, folder, str(repeat), str(threads), BENCHMARKS],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=1, help="processes per side, alternated")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        make_checkpoint(folder)
        ours: dict = {}
        ref: dict = {}
        for _ in range(args.rounds):
            for which, acc in (("sbsconv", ours), ("transformers", ref)):
                m = measure(which, folder, args.repeat, args.threads)
                acc["seconds"] = min(acc.get("seconds", float("inf")), m["seconds"])
                acc["peak_mb"] = max(acc.get("peak_mb", 0.0), m["peak_mb"])
                acc["rss_mb"] = max(acc.get("rss_mb", 0.0), m["rss_mb"])
        print(f"CPU, {args.threads} threads, torch {torch.__version__}; Depth Pro, 1536x1536 input, fp32")
        print("| implementation | s/frame | peak MB (activations) | resident MB after |")
        print("|---|---|---|---|")
        print(f"| sbsconv | {ours['seconds']:.1f} | {ours['peak_mb']:.0f} | {ours['rss_mb']:.0f} |")
        print(f"| transformers | {ref['seconds']:.1f} | {ref['peak_mb']:.0f} | {ref['rss_mb']:.0f} |")
        print(f"speed-up: {ref['seconds'] / ours['seconds']:.2f}x")


if __name__ == "__main__":
    main()
