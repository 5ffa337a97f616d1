"""convergence="subject" on clips with a known subject depth (issue 30): the subject's
disparity on every frame (goal: within 1 % of the eye width of zero) and the flicker of the
screen plane, for relative and metric depth, with exact depth and exact masks given as files
(so that only the plane is judged).

    uv run python benchmarks/bench_subject.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import sbsconv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
import test_subject as clips  # noqa: E402  (the tests' clip: a textured subject before a wall)


def main() -> None:
    divergence = 2.0  # the default
    print("| depth | subject's depth over 24 frames | max subject disparity (% of eye width) | "
          "plane flicker: mean abs frame-to-frame change, over the subject's own |")
    print("|---|---|---|---|")
    for metric in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            video, depth, masks, subject = clips.make_clip(Path(tmp), metric=metric)
            result = sbsconv.convert(video, Path(tmp) / "out.mp4", depth=depth, masks=masks,
                                     convergence="subject", progress=False, resume=False)
            plane = np.array(result.screen_plane)
            if metric:
                focal = (clips.W / 2) / np.tan(np.radians(30.0))
                shift = focal * 0.063 * (1 / subject - 1 / plane) / clips.W * 100
                change = np.abs(np.diff(1 / plane)).mean() / np.abs(np.diff(1 / subject)).mean()
                span = f"{subject[0]:.1f} -> {subject[-1]:.1f} m"
            else:
                shift = divergence * (subject - plane)
                change = np.abs(np.diff(plane)).mean() / np.abs(np.diff(subject)).mean()
                span = f"{subject[0]:.2f} -> {subject[-1]:.2f} (inverse depth)"
            print(f"| {'metric' if metric else 'relative'} | {span} | {np.abs(shift).max():.3f} % | {change:.2f} |")


if __name__ == "__main__":
    main()
