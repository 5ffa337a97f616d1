"""Scene-cut detection against PySceneDetect's content detector on the same joined clips:
precision, recall (a cut counts as found within one frame) and frames per second.

The test clip is built from the real clips in ../shared/data (320x180 and 1280x720 versions,
24 fps), cut together; the true cuts are where the parts meet. Both detectors decode the
same file; PySceneDetect with OpenCV, its default backend, and its default threshold.

    uv run python benchmarks/bench_scenecut.py
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from sbsconv import media, temporal

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEGMENTS = [
    ("Tokyo-Walk_rgb.mp4", 0.0, 3.0), ("davis_rollercoaster.mp4", 0.0, 2.9), ("nasa_13013.mp4", 2.0, 3.0),
    ("echo-hereweare.webm", 5.0, 3.0), ("bt601_limited_range.mp4", 0.0, 2.0), ("Tokyo-Walk_rgb.mp4", 6.0, 3.0),
    ("bt709_full_range.mp4", 0.0, 1.0), ("davis_rollercoaster.mp4", 1.0, 1.5), ("nasa_13013.mp4", 8.0, 3.0),
    ("Tokyo-Walk_rgb.mp4", 10.0, 2.5),
]


def build(folder: Path, size: str) -> tuple[Path, list[int]]:
    parts = []
    for i, (name, start, length) in enumerate(SEGMENTS):
        part = folder / f"{size}_{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-t", str(length), "-i", str(DATA / name),
                        "-map", "0:v:0", "-vf", f"scale={size},fps=24,setsar=1", "-c:v", "libx264", "-preset",
                        "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-an", str(part)], check=True)
        parts.append(part)
    lengths = [sum(len(b) for b in media.read_frames(p)) for p in parts]
    listing = folder / f"{size}.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    out = folder / f"joined_{size.replace(':', 'x')}.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                    str(out)], check=True)
    cuts, total = [], 0
    for n in lengths[:-1]:
        total += n
        cuts.append(total)
    return out, cuts


def score(found: list[int], truth: list[int]) -> tuple[float, float]:
    hits = sum(any(abs(f - t) <= 1 for f in found) for t in truth)
    true_found = sum(any(abs(f - t) <= 1 for t in truth) for f in found)
    precision = true_found / len(found) if found else 1.0
    return precision, hits / len(truth)


def pyscenedetect(path: Path) -> list[int]:
    from scenedetect import ContentDetector, detect

    scenes = detect(str(path), ContentDetector())
    return [getattr(start, "frame_num", None) or start.get_frames() for start, _ in scenes[1:]]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print("| clip | detector | precision | recall | frames/s | cuts found / true |")
        print("|---|---|---|---|---|---|")
        for size in ("320:180", "1280:720"):
            path, truth = build(Path(tmp), size)
            frames = sum(len(b) for b in media.read_frames(path))
            for name, fn in (("sbsconv", lambda p: temporal.detect_scene_cuts(p)), ("PySceneDetect content", pyscenedetect)):
                t0 = time.perf_counter()
                found = fn(path)
                seconds = time.perf_counter() - t0
                precision, recall = score(found, truth)
                print(f"| {size.replace(':', 'x')}, {frames} frames | {name} | {precision:.2f} | {recall:.2f} | "
                      f"{frames / seconds:.0f} | {len(found)} / {len(truth)} |")


if __name__ == "__main__":
    main()
