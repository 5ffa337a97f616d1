"""Temporal stability: flicker, scene cuts on joined real clips, resets, state, comfort."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sbsconv import media, temporal
from sbsconv.errors import OptionError

from helpers import data, run

SEGMENT_FPS = 24


def static_scene(h=72, w=128) -> torch.Tensor:
    """A relative inverse depth: a ground plane with two nearer objects."""
    y = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    d = 0.2 + 0.5 * y
    d = d.clone()
    d[10:40, 20:50] = 0.9
    d[30:60, 80:110] = 0.75
    return d


def variation(seq: torch.Tensor) -> float:
    """Mean absolute frame-to-frame change."""
    return float((seq[1:] - seq[:-1]).abs().mean())


def minmax(seq: torch.Tensor) -> torch.Tensor:
    flat = seq.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    return (seq - lo) / (hi - lo)


def flicker_sequence(n=40, *, noise=0.01, outliers=True, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = static_scene()
    frames = []
    for _ in range(n):
        scale = 0.7 + 0.6 * torch.rand((), generator=g)
        offset = -0.3 + 0.6 * torch.rand((), generator=g)
        d = base * scale + offset + noise * torch.randn(base.shape, generator=g)
        if outliers:  # speckles at random places with random values, as models make at edges
            idx = torch.randint(0, d.numel(), (6,), generator=g)
            d.view(-1)[idx] = (torch.rand(6, generator=g) - 0.5) * 6
        frames.append(d)
    return torch.stack(frames).unsqueeze(1)


def test_flicker_is_at_least_five_times_lower_than_minmax_normalisation():
    seq = flicker_sequence()
    ours = temporal.DepthStabilizer().process(seq)
    baseline = minmax(seq)
    assert ours.min() >= 0 and ours.max() <= 1
    assert variation(ours) * 5 <= variation(baseline), (variation(ours), variation(baseline))


def test_pure_scale_and_shift_jitter_is_removed():
    seq = flicker_sequence(noise=0.0, outliers=False)
    ours = temporal.DepthStabilizer().process(seq)
    assert variation(ours) < 1e-3
    # ... and the normalised depth keeps the scene's order and spread.
    assert float(ours[0, 0, 20, 30]) > float(ours[0, 0, 5, 5])
    assert float(ours.amax()) - float(ours.amin()) > 0.9


def test_range_smoothing_without_alignment_still_beats_minmax_on_outliers():
    seq = flicker_sequence(n=30, noise=0.0)
    seq = static_scene().expand(30, 1, -1, -1).clone()
    g = torch.Generator().manual_seed(1)
    for i in range(30):  # outliers only: per-frame min/max pumps, percentiles do not
        idx = torch.randint(0, seq[i].numel(), (4,), generator=g)
        seq[i].view(-1)[idx] = (torch.rand(4, generator=g) - 0.5) * 8
    ours = temporal.DepthStabilizer(align=False).process(seq)
    assert variation(ours) * 5 <= variation(minmax(seq))


def test_deterministic_and_state_restores_bit_identically():
    seq = flicker_sequence(n=24)
    frames = torch.randint(0, 256, (24, 3, 72, 128), dtype=torch.uint8)
    a = temporal.DepthStabilizer(alpha=0.5)
    whole = a.process(seq, frames)
    again = temporal.DepthStabilizer(alpha=0.5).process(seq, frames)
    assert torch.equal(whole, again)
    first = temporal.DepthStabilizer(alpha=0.5)
    head = first.process(seq[:10], frames[:10])
    saved = first.state()
    resumed = temporal.DepthStabilizer(alpha=0.5)
    resumed.load_state(saved)
    tail = resumed.process(seq[10:], frames[10:])
    assert torch.equal(torch.cat([head, tail]), whole)


def test_a_cut_starts_afresh_within_one_frame():
    shot_a = flicker_sequence(n=12, seed=2)
    shot_b = static_scene().flip(1).expand(12, 1, -1, -1) * 40 + 100  # another range entirely
    seq = torch.cat([shot_a, shot_b])
    flags = [False] * 24
    flags[12] = True
    out = temporal.DepthStabilizer().process(seq, starts_shot=flags)
    fresh = temporal.DepthStabilizer().process(shot_b)
    assert torch.equal(out[12:], fresh)
    inherited = temporal.DepthStabilizer().process(seq)  # without the cut flag
    assert not torch.allclose(inherited[12], fresh[0], atol=0.05)


def test_motion_adaptive_smoothing_calms_still_areas_without_trails():
    n, h, w = 16, 72, 128
    g = torch.Generator().manual_seed(4)
    base = static_scene(h, w)
    frames = torch.full((n, 3, h, w), 90, dtype=torch.uint8)
    depth = []
    for i in range(n):
        d = base + 0.05 * torch.randn(base.shape, generator=g)  # model noise everywhere
        x = 8 * i  # an object moving right, seen in the picture and in the depth
        d[20:44, x:x + 16] = 1.2
        frames[i, :, 20:44, x:x + 16] = 230
        depth.append(d)
    depth = torch.stack(depth).unsqueeze(1)
    plain = temporal.DepthStabilizer(align=False, range_decay=0.0).process(depth, frames)
    smooth = temporal.DepthStabilizer(align=False, range_decay=0.0, alpha=0.8).process(depth, frames)
    still = (slice(None), slice(None), slice(50, 70), slice(0, 128))
    assert variation(smooth[still]) < 0.5 * variation(plain[still])
    # Where the object is now, the output follows the current depth (no trail).
    last = n - 1
    obj = (last, 0, slice(20, 44), slice(8 * last, 8 * last + 16))
    assert float((smooth[obj] - plain[obj]).abs().max()) < 0.05


def test_stabiliser_options_are_validated():
    for kwargs in ({"percentiles": (99, 1)}, {"range_decay": 1.0}, {"alpha": -0.1}, {"kind": "absolute"}):
        with pytest.raises(OptionError):
            temporal.DepthStabilizer(**kwargs)
    with pytest.raises(OptionError, match="frames"):
        temporal.DepthStabilizer(alpha=0.5).process(torch.rand(2, 1, 8, 8))
    with pytest.raises(OptionError, match="flags"):
        temporal.DepthStabilizer().process(torch.rand(2, 1, 8, 8), starts_shot=[True])


# ---- scene cuts on real clips ----------------------------------------------------------------

SEGMENTS = [
    ("Tokyo-Walk_rgb.mp4", 0.0, 3.0),
    ("davis_rollercoaster.mp4", 0.0, 2.9),
    ("nasa_13013.mp4", 2.0, 3.0),
    ("bt601_limited_range.mp4", 0.0, 2.0),
    ("Tokyo-Walk_rgb.mp4", 6.0, 3.0),
    ("bt709_full_range.mp4", 0.0, 1.0),
    ("davis_rollercoaster.mp4", 1.0, 1.5),
]


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    """Real clips cut together (320x180, 24 fps) and the index of each cut."""
    folder = tmp_path_factory.mktemp("joined")
    parts = []
    for i, (name, start, length) in enumerate(SEGMENTS):
        part = folder / f"part{i}.mp4"
        run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-t", str(length), "-i", str(data(name)),
             "-map", "0:v:0", "-vf", f"scale=320:180,fps={SEGMENT_FPS},setsar=1", "-c:v", "libx264",
             "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-an", str(part)])
        parts.append(part)
    lengths = [sum(len(b) for b in media.read_frames(p)) for p in parts]
    listing = folder / "list.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    out = folder / "joined.mp4"
    run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)])
    cuts = []
    total = 0
    for n in lengths[:-1]:
        total += n
        cuts.append(total)
    return out, cuts, total + lengths[-1]


def test_every_cut_is_found_within_one_frame_and_nothing_else(joined):
    path, expected, frames = joined
    found = temporal.detect_scene_cuts(path)
    assert len(found) == len(expected), (found, expected)
    assert all(abs(f - e) <= 1 for f, e in zip(found, expected, strict=True)), (found, expected)


@pytest.mark.parametrize("name", ["Tokyo-Walk_rgb.mp4", "davis_rollercoaster.mp4"])
def test_no_false_cuts_on_continuous_shots(name):
    assert temporal.detect_scene_cuts(data(name)) == []


def test_a_flash_is_not_a_cut():
    frames = next(iter(media.read_frames(data("Tokyo-Walk_rgb.mp4"), batch_size=40))).data
    frames = F.interpolate(frames.float(), (180, 320), mode="area").to(torch.uint8)
    flashed = frames.clone()
    flashed[20] = 255  # one white frame
    flashed[21] = (flashed[21].int() + 120).clamp(max=255).to(torch.uint8)  # fading out
    assert temporal.detect_scene_cuts(flashed) == []


def test_detector_streams_in_batches_and_restores_its_state(joined):
    path, expected, _ = joined
    batches = [b.data for b in media.read_frames(path, batch_size=7)]
    whole = temporal.detect_scene_cuts(batches)
    first = temporal.SceneCutDetector()
    cuts = []
    for b in batches[:20]:
        cuts += first.push(b)
    resumed = temporal.SceneCutDetector()
    resumed.load_state(first.state())
    for b in batches[20:]:
        cuts += resumed.push(b)
    cuts += resumed.flush()
    assert cuts == whole


def test_sensitivity_moves_the_threshold(joined):
    path, expected, _ = joined
    frames = torch.cat([b.data for b in media.read_frames(path)])
    lenient = temporal.detect_scene_cuts(frames, sensitivity=0.0)
    strict = temporal.detect_scene_cuts(frames, sensitivity=1.0)
    assert len(lenient) <= len(expected) <= len(strict)
    with pytest.raises(OptionError):
        temporal.SceneCutDetector(sensitivity=2)


def test_stabiliser_resets_within_one_frame_of_a_detected_cut(joined):
    """The engine's wiring in miniature: the detector's cuts reset the stabiliser."""
    path, expected, _ = joined
    frames = torch.cat([b.data for b in media.read_frames(path)])[: expected[1] + 5]
    cuts = temporal.detect_scene_cuts(frames)
    flags = [i in cuts for i in range(len(frames))]
    # A fake depth whose range differs per shot: luma scaled by the shot number.
    shot = torch.cumsum(torch.tensor(flags, dtype=torch.float32), 0)
    depth = frames.float().mean(1, keepdim=True) * (1 + 10 * shot.view(-1, 1, 1, 1))
    out = temporal.DepthStabilizer().process(depth, starts_shot=flags)
    first_of_second = expected[0]
    fresh = temporal.DepthStabilizer().process(depth[first_of_second:first_of_second + 1])
    matches = [torch.equal(out[i:i + 1], fresh) for i in (first_of_second - 1, first_of_second, first_of_second + 1)]
    assert any(matches)


# ---- comfort budget ----------------------------------------------------------------------


def test_comfort_report_per_scene_and_automatic_strength():
    w = 200
    calm = torch.full((5, 1, 10, w), 2.0)  # 1 % of the width
    wild = torch.full((5, 1, 10, w), 16.0)  # 8 %
    flags = [False] * 5 + [True] + [False] * 4
    budget = temporal.ComfortBudget(limit_percent=3.0)
    out = budget.process(torch.cat([calm, wild]), flags)
    assert torch.equal(out, torch.cat([calm, wild]))
    report = budget.report()
    assert report.frames_over_limit == 5 and report.max_percent == pytest.approx(8.0)
    assert [s["first_frame"] for s in report.scenes] == [0, 5]
    assert report.scenes[1]["p99_percent"] == pytest.approx(8.0)
    auto = temporal.ComfortBudget(limit_percent=3.0, auto_strength=True)
    scaled = auto.process(torch.cat([calm, wild]), flags)
    assert torch.equal(scaled[:5], calm)
    assert float(scaled[5:].abs().amax()) <= 0.03 * w + 1e-4
    assert auto.report().scenes[1]["min_scale"] == pytest.approx(3.0 / 8.0)
