"""Model start-up (issue 31): how long `sbsconv.models.load` takes in a fresh process, per
precision, and the int8 load's first time (quantized at load, then cached beside the checkpoint:
Note [Prepared int8 weights]) against its later times (read from that cache).

Depth-Anything-V2 Small, Base and Large in their published layout (original .pth, the full
architectures with random weights: load time does not depend on the values), written once to a
temporary folder. Each figure is one fresh process (the checkpoint in the page cache, as on a
second run), the median of --rounds; `import torch, sbsconv` is timed apart.

    uv run python benchmarks/bench_model_load.py [--rounds 3] [--models small,base,large]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent / "tests" / "python"))

WORKER = r"""
import json, sys, time
start = time.perf_counter()
import torch, sbsconv.models as models
imported = time.perf_counter()
name, path, precision = sys.argv[1:4]
model = models.load(name, checkpoint=path, device="cpu", precision=precision)
loaded = time.perf_counter()
print(json.dumps({"import": imported - start, "load": loaded - imported, "precision": model.precision}))
"""


def write_checkpoint(folder: Path, size: str) -> Path:
    import hubcache
    from sbsconv.models.depth_anything_v2 import PRESETS

    encoder = {"small": "vits", "base": "vitb", "large": "vitl"}[size]
    p = PRESETS[encoder]
    path = folder / f"depth_anything_v2_{encoder}.pth"
    state = hubcache.dinov2_dpt(width=p["embed_dim"], depth=p["depth"], mlp_hidden=4 * p["embed_dim"],
                                out_channels=p["out_channels"], features=p["features"], head_hidden=32)
    torch.save(state, path)
    return path


def run(name: str, path: Path, precision: str) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, name, str(path), precision],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="small,base,large")
    args = parser.parse_args()
    from sbsconv.models.precision import cpu_flags, cpu_name

    bf16 = "avx512_bf16" in cpu_flags() or "amx_bf16" in cpu_flags()
    print(f"CPU: {cpu_name()}, torch {torch.__version__}")
    print("| model | checkpoint MB | import s | fp32 load s | bf16 load s | int8 first load s | int8 later loads s | later/first |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.models.split(","):
            folder = Path(tmp) / size
            folder.mkdir()
            path = write_checkpoint(folder, size)
            name = f"depth-anything-v2-{size}"
            times: dict[str, list[float]] = {"fp32": [], "bf16": [], "first": [], "later": []}
            imports = []
            for _ in range(args.rounds):
                for precision in ("fp32", "bf16") if bf16 else ("fp32",):
                    r = run(name, path, precision)
                    times[precision].append(r["load"])
                    imports.append(r["import"])
                shutil.rmtree(folder / ".sbsconv-prepared", ignore_errors=True)
                times["first"].append(run(name, path, "int8")["load"])
                times["later"].append(run(name, path, "int8")["load"])
            med = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
            mb = path.stat().st_size / 2**20
            print(f"| {name} | {mb:.0f} | {statistics.median(imports):.2f} | {med['fp32']:.2f} | "
                  f"{med['bf16']:.2f} | {med['first']:.2f} | {med['later']:.2f} | {med['later'] / med['first']:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
