"""Stereo synthesis against analytically rendered scenes, the naive shortcut, and the layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sbsconv import stereo
from sbsconv._native import _core
from sbsconv.errors import OptionError

from helpers import HAS_CUDA, psnr

H, W = 96, 160
FG_ROWS = (20, 76)
FG_COLS = (60, 100)


def bg_texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth greenish background, defined everywhere (also behind the foreground)."""
    return np.stack([
        60 + 30 * np.sin(x * 0.21 + y * 0.13),
        150 + 50 * np.sin(x * 0.05) * np.cos(y * 0.07),
        90 + 40 * np.cos(x * 0.11 - y * 0.17),
    ])


def fg_texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth red foreground texture, attached to the object."""
    return np.stack([
        215 + 30 * np.sin(x * 0.31),
        50 + 25 * np.cos(y * 0.23 + x * 0.05),
        60 + 25 * np.sin((x + y) * 0.09),
    ])


def scene(d_bg: float, d_fg: float, *, slope: float = 0.0):
    """The left view, its disparity, the analytic right view (x' = x - d), and the masks of
    the pixels the right view reveals (hidden in the left view) and of the foreground's edges.

    The background plane may slant: d(x) = d_bg + slope * x."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    inside = (y >= FG_ROWS[0]) & (y < FG_ROWS[1]) & (x >= FG_COLS[0]) & (x < FG_COLS[1])
    left = np.where(inside[None], fg_texture(x, y), bg_texture(x, y))
    d_left = np.where(inside, d_fg, d_bg + slope * x)
    # Right view: a pixel at x' shows the foreground point x' + d_fg if that lies on the
    # object, else the background point x with x - d_bg - slope*x = x'.
    x_fg = x + d_fg
    on_fg = (y >= FG_ROWS[0]) & (y < FG_ROWS[1]) & (x_fg >= FG_COLS[0]) & (x_fg < FG_COLS[1])
    x_bg = (x + d_bg) / (1 - slope)
    right = np.where(on_fg[None], fg_texture(x_fg, y), bg_texture(x_bg, y))
    rows = (y >= FG_ROWS[0]) & (y < FG_ROWS[1])
    revealed = ~on_fg & rows & (x_bg >= FG_COLS[0]) & (x_bg < FG_COLS[1])
    # The right view's background also runs out at the frame's right edge.
    revealed |= x_bg > W - 1
    edges = np.zeros_like(inside)
    for col in (FG_COLS[0] - d_fg, FG_COLS[1] - d_fg):
        edges |= rows & (np.abs(x - col) <= 1.5)
    to_u8 = lambda a: torch.from_numpy(np.clip(np.floor(a + 0.5), 0, 255).astype(np.uint8))
    return (to_u8(left)[None], torch.from_numpy(d_left).float()[None, None], to_u8(right)[None],
            torch.from_numpy(revealed), torch.from_numpy(edges))


def render_right(left, disparity, **kwargs):
    return stereo.render(left, disparity=disparity, layout="separate", synthetic_view="right", **kwargs)[1]


def masked_psnr(a, b, mask) -> float:
    m = mask.numpy()
    return psnr(a[0].permute(1, 2, 0).numpy()[m], b[0].permute(1, 2, 0).numpy()[m])


@pytest.mark.parametrize(
    ("d_bg", "d_fg", "slope", "exclude_edges"),
    [(2.0, 12.0, 0.0, False), (-3.0, 9.0, 0.0, False), (2.5, 11.25, 0.0, True), (1.0, 14.0, 0.04, True)],
    ids=["integer", "behind-and-in-front", "fractional", "slanted-background"],
)
def test_synthesised_view_matches_the_analytic_one(d_bg, d_fg, slope, exclude_edges):
    left, disparity, truth, revealed, edges = scene(d_bg, d_fg, slope=slope)
    ours = render_right(left, disparity)
    keep = ~revealed
    if exclude_edges:  # a layer edge at a fractional position is ambiguous by a pixel
        keep &= ~edges
    assert masked_psnr(ours, truth, keep) >= 40


@pytest.mark.parametrize(("d_bg", "d_fg"), [(2.0, 12.0), (2.5, 11.25), (-4.0, 8.0)])
def test_revealed_regions_take_background_colours_and_beat_the_naive_shortcut(d_bg, d_fg):
    left, disparity, truth, revealed, _ = scene(d_bg, d_fg)
    ours = render_right(left, disparity)
    band = revealed & (torch.arange(W)[None] < W - 8)  # the object's revealed band
    assert band.sum() > 100
    # Background colours: the foreground is red (R > 180), the background is not (R < 95).
    red = ours[0, 0][band].float()
    assert red.max() < 120, "foreground colour leaked into a revealed region"
    naive = _core.render_eye_naive(left, disparity, -1.0)
    ours_db = masked_psnr(ours, truth, band)
    naive_db = masked_psnr(naive, truth, band)
    assert ours_db >= naive_db + 3, (ours_db, naive_db)


def test_zero_disparity_returns_the_input_exactly():
    frames = torch.randint(0, 256, (2, 3, 37, 53), dtype=torch.uint8)
    result = stereo.render(frames, disparity=torch.zeros(2, 1, 37, 53), layout="separate", full_result=True)
    assert torch.equal(result.left, frames) and torch.equal(result.right, frames)
    assert not result.left_holes.any() and not result.right_holes.any()


@pytest.mark.parametrize("shift", [1, 4, 7])
def test_constant_integer_disparity_is_an_exact_shift(shift):
    frames = torch.randint(1, 256, (1, 3, 20, 64), dtype=torch.uint8)
    d = torch.full((1, 1, 20, 64), float(2 * shift))
    left, right = stereo.render(frames, disparity=d, layout="separate")
    assert torch.equal(left[..., shift:], frames[..., : 64 - shift])
    assert torch.equal(right[..., : 64 - shift], frames[..., shift:])
    # The frame edge the content moved away from fades from its one neighbour to the mean of
    # the background beside it (Note [Depth-guided patch fill], step 6): no black, no streak.
    for impl in ("cpu", "tensor"):
        for eye, share in ((left, 0.5), (right, -0.5)):
            got = eye if impl == "cpu" else _core.render_eye_patched(frames, d, share, impl)[0]
            assert_border_fades(got, frames, shift, share, impl)


def assert_border_fades(got: torch.Tensor, frames: torch.Tensor, shift: int, share: float, label) -> None:
    """The ``shift`` columns an eye of ``share`` (+-0.5) uncovers at the frame's edge, for a
    background at one disparity, are as expected_fade says (to a level of rounding)."""
    w = frames.shape[3]
    edge, side = (0, 1) if share > 0 else (w - 1, -1)
    columns = range(shift) if side == 1 else range(w - shift, w)
    for y in range(frames.shape[2]):
        for p in columns:
            want = expected_fade(frames, y, edge, side, abs(p - share * 2 * shift - edge))
            assert (got[0, :, y, p].int() - want).abs().max() <= 1, (label, y, p)


@pytest.mark.parametrize("width", [4, 8])
def test_the_fade_reaches_the_mean_at_the_pace_of_the_strips_correlation(width):
    # a background smoothed along its rows: neighbouring pixels correlate, the fade is long
    rng = np.random.default_rng(width)
    noise = rng.uniform(0, 255, (1, 3, 20, 64 + width))
    kernel = np.ones(width) / width
    smooth = np.apply_along_axis(lambda r: np.convolve(r, kernel, "valid"), 3, noise)[..., :64]
    frames = torch.from_numpy(np.floor(smooth + 0.5).astype(np.uint8)).contiguous()
    shift = 7
    d = torch.full((1, 1, 20, 64), float(2 * shift))
    for impl in ("cpu", "tensor"):
        for share in (0.5, -0.5):
            got, holes = _core.render_eye_patched(frames, d, share, impl)
            assert int(holes.sum()) == 20 * shift
            assert_border_fades(got, frames, shift, share, impl)
    lengths = [fade_length(frames, y, edge, side) for y in range(20) for edge, side in ((0, 1), (63, -1))]
    assert min(lengths) > 2.0  # the strip's correlation, not the shortest fade


def test_too_little_background_keeps_the_streak():
    # one row of 30 pixels: fewer than the 48 background pixels the strip's mean needs
    frames = torch.randint(0, 256, (1, 3, 1, 30), dtype=torch.uint8)
    d = torch.full((1, 1, 1, 30), 8.0)
    streak, holes = _core.render_eye(frames, d, 0.5, True)
    assert int(holes.sum()) == 4
    for impl in ("cpu", "tensor"):
        patched, _ = _core.render_eye_patched(frames, d, 0.5, impl)
        assert torch.equal(patched, streak), impl


def fade_length(frames: torch.Tensor, y: int, edge: int, side: int) -> float:
    """The fade's length L (step 6) from the strip beside ``edge``, for a background at one
    disparity."""
    rows = slice(max(y - 4, 0), min(y + 4, frames.shape[2] - 1) + 1)
    cols = [edge + side * a for a in range(48) if 0 <= edge + side * a < frames.shape[3]]
    grey = frames[0][:, rows, cols].double().sum(0)
    c = grey - grey.mean()
    r = float((c[:, :-1] * c[:, 1:]).sum() / (c.shape[0] * (c.shape[1] - 1)) / (c * c).mean())
    r = min(max(r, 0.0), 0.999)
    return min(max(r / (1 - r), 1.0), 64.0)


def expected_fade(frames: torch.Tensor, y: int, edge: int, side: int, delta: float) -> torch.Tensor:
    """Step 6 of Note [Depth-guided patch fill] for a background at one disparity: the
    colour delta pixels beyond ``edge`` (the background's last pixel, extending on ``side``)."""
    rows = slice(max(y - 4, 0), min(y + 4, frames.shape[2] - 1) + 1)
    cols = [edge + side * a for a in range(48) if 0 <= edge + side * a < frames.shape[3]]
    mean = frames[0][:, rows, cols].double().mean((1, 2))
    rho = 1 / (1 + delta / fade_length(frames, y, edge, side))
    return torch.floor(mean + rho * (frames[0, :, y, edge].double() - mean) + 0.5).int()


def test_tensor_and_native_kernels_agree_exactly():
    torch.manual_seed(3)
    frames = torch.randint(0, 256, (2, 3, 48, 80), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 1, 6, 10) * 24 - 6, (48, 80), mode="bilinear")
    smooth[:, :, 10:30, 20:45] += 13.7  # an object with fractional edges
    smooth[:, :, 30:40, 50:70] -= 9.3
    for share in (0.5, -0.5, 1.0, -1.0, 0.37):
        for fill in (True, False):
            a, ha = _core.render_eye(frames, smooth, share, fill, "tensor")
            b, hb = _core.render_eye(frames, smooth, share, fill, "cpu")
            assert torch.equal(a, b), (share, fill, (a.int() - b.int()).abs().max())
            assert torch.equal(ha, hb)
            assert ha.any()


def test_no_black_and_no_nan_outside_mask_mode_and_black_holes_in_it():
    frames = torch.randint(20, 256, (1, 3, 40, 64), dtype=torch.uint8)
    d = torch.zeros(1, 1, 40, 64)
    d[..., 10:30, 20:40] = 10.0
    result = stereo.render(frames, disparity=d, layout="separate", full_result=True)
    for eye in (result.left, result.right):
        assert eye.min() >= 20  # every output pixel is an input colour or between two
    assert result.left_holes.any() and result.right_holes.any()
    masked = stereo.render(frames, disparity=d, layout="separate", infill="mask", full_result=True)
    assert torch.all(masked.left.permute(0, 2, 3, 1)[masked.left_holes[:, 0]] == 0)
    assert torch.equal(masked.left_holes, result.left_holes)
    covered = ~result.left_holes.expand(-1, 3, -1, -1)
    assert torch.equal(masked.left[covered], result.left[covered])


def test_synthetic_view_keeps_the_source_eye_unchanged():
    frames = torch.randint(0, 256, (1, 3, 30, 50), dtype=torch.uint8)
    d = torch.full((1, 1, 30, 50), 4.0)
    left, right = stereo.render(frames, disparity=d, layout="separate", synthetic_view="right")
    assert torch.equal(left, frames) and not torch.equal(right, frames)
    left, right = stereo.render(frames, disparity=d, layout="separate", synthetic_view="left")
    assert torch.equal(right, frames) and not torch.equal(left, frames)


def test_edge_dilation_carries_soft_edges_with_the_foreground():
    # The object's colour edge is two pixels wider than its depth edge (as depth models
    # draw it): without dilation those blended pixels stay behind on the background as a
    # reddish halo beside the revealed region; dilating the foreground's disparity by two
    # pixels moves them with the object.
    left, disparity, *_ = scene(2.0, 12.0)
    blend = left.clone().float()
    for col in (58, 59, 100, 101):
        blend[..., FG_ROWS[0]:FG_ROWS[1], col] = 0.5 * blend[..., FG_ROWS[0]:FG_ROWS[1], col] + 0.5 * torch.tensor(
            [215.0, 50.0, 60.0]).view(1, 3, 1)
    blend = blend.round().to(torch.uint8)
    halo_region = (slice(FG_ROWS[0], FG_ROWS[1]), slice(96, 104))  # right of the revealed band
    plain = render_right(blend, disparity)
    dilated = render_right(blend, disparity, edge_dilation=2)
    assert (plain[0, 0][halo_region] > 120).sum() > 0
    assert (dilated[0, 0][halo_region] > 120).sum() == 0


# ---- layouts -------------------------------------------------------------------------------


def two_tone():
    """A frame whose eyes differ in a known way: a constant disparity that moves a sharp edge."""
    frames = torch.zeros(1, 3, 40, 60, dtype=torch.uint8)
    frames[..., :, 30:] = 200
    return frames, torch.full((1, 1, 40, 60), 8.0)


@pytest.mark.parametrize(
    ("layout", "shape"),
    [("full-sbs", (40, 120)), ("half-sbs", (40, 60)), ("full-tb", (80, 60)), ("half-tb", (40, 60)),
     ("cross-eyed", (40, 120)), ("anaglyph", (40, 60)), ("anaglyph-color", (40, 60)),
     ("anaglyph-gray", (40, 60))],
)
def test_layout_sizes(layout, shape):
    frames, d = two_tone()
    packed = stereo.render(frames, disparity=d, layout=layout)
    assert packed.shape == (1, 3, *shape) and packed.dtype == torch.uint8
    assert tuple(_core.packed_size(layout, 40, 60)) == shape


def test_eye_order_in_each_layout():
    frames, d = two_tone()
    left, right = stereo.render(frames, disparity=d, layout="separate")
    assert not torch.equal(left, right)
    sbs = stereo.render(frames, disparity=d, layout="full-sbs")
    assert torch.equal(sbs[..., :60], left) and torch.equal(sbs[..., 60:], right)
    cross = stereo.render(frames, disparity=d, layout="cross-eyed")
    assert torch.equal(cross[..., :60], right) and torch.equal(cross[..., 60:], left)
    tb = stereo.render(frames, disparity=d, layout="full-tb")
    assert torch.equal(tb[:, :, :40], left) and torch.equal(tb[:, :, 40:], right)
    half = stereo.render(frames, disparity=d, layout="half-sbs").float()
    assert (half[..., :30].mean(-1) - left.float()[..., ::2].mean(-1)).abs().max() < 8
    color = stereo.render(frames, disparity=d, layout="anaglyph-color")
    assert torch.equal(color[:, 0], left[:, 0]) and torch.equal(color[:, 1:], right[:, 1:])


def test_dubois_anaglyph_sends_the_left_eye_to_red():
    frames = torch.full((1, 3, 8, 8), 128, dtype=torch.uint8)
    white_left = stereo.render(frames, disparity=torch.zeros(1, 1, 8, 8), layout="anaglyph")
    assert white_left[0, 0].float().mean() > 80  # grey in both eyes: red from the left ...
    assert white_left[0, 2].float().mean() > 80  # ... and blue/cyan from the right


@pytest.mark.parametrize(("eye_size", "expected"), [("1080", (1920, 1080)), (720, (1280, 720)),
                                                     ((1000, 1000), (1000, 1000)), ((333, 201), (334, 202))])
def test_output_eye_size_presets_and_even_sizes(eye_size, expected):
    frames = torch.randint(0, 256, (1, 3, 90, 160), dtype=torch.uint8)
    packed = stereo.render(frames, disparity=torch.zeros(1, 1, 90, 160), eye_size=eye_size, layout="full-sbs")
    assert packed.shape == (1, 3, expected[1], 2 * expected[0])


def test_keep_aspect_pads_with_black():
    frames = torch.full((1, 3, 90, 160), 200, dtype=torch.uint8)
    left, _ = stereo.render(frames, disparity=torch.zeros(1, 1, 90, 160), eye_size=(1000, 1000), layout="separate")
    assert left.shape == (1, 3, 1000, 1000)
    assert left[0, :, 0].max() == 0 and left[0, :, 500].min() > 150  # letterbox bars


# ---- disparity -----------------------------------------------------------------------------


def test_relative_disparity_follows_divergence_and_convergence():
    depth = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    d = stereo.disparity_from_depth(depth, eye_width=1000, divergence=2.0, convergence=0.5)
    assert d.flatten().tolist() == pytest.approx([-10.0, 0.0, 10.0])
    d = stereo.disparity_from_depth(depth, max_shift=6.0, convergence=0.0)
    assert d.flatten().tolist() == pytest.approx([0.0, 3.0, 6.0])  # everything in front


def test_metric_disparity_is_physical():
    z = torch.tensor([1.0, 2.0, 4.0, 1e6]).view(1, 1, 1, 4)
    d = stereo.disparity_from_depth(z, depth_kind="metric", eye_width=1920, ipd_mm=63, fov_degrees=90,
                                    screen_distance=2.0)
    f = 960 / math.tan(math.radians(45))
    expected = [f * 0.063 * (1 / zi - 0.5) for zi in (1.0, 2.0, 4.0, 1e6)]
    assert d.flatten().tolist() == pytest.approx(expected, rel=1e-5)
    per_frame = stereo.disparity_from_depth(z.repeat(2, 1, 1, 1), depth_kind="metric", eye_width=1920,
                                            fov_degrees=torch.tensor([90.0, 60.0]))
    assert per_frame[1, 0, 0, 0] > per_frame[0, 0, 0, 0]  # a narrower view magnifies disparity


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"layout": "over-under"}, "layout"), ({"synthetic_view": "middle"}, "synthetic_view"),
     ({"divergence": 50}, "divergence"), ({"convergence": 1.5}, "convergence"),
     ({"infill": "blur"}, "infill"), ({"eye_size": "8k"}, "eye_size"), ({"edge_dilation": -1}, "edge_dilation")],
)
def test_bad_options(kwargs, match):
    frames = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(OptionError, match=match):
        stereo.render(frames, depth=torch.zeros(1, 1, 8, 8), **kwargs)


def test_bad_inputs():
    frames = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(OptionError, match="exactly one"):
        stereo.render(frames)
    with pytest.raises(OptionError, match=r"\[N,1,H,W\]"):
        stereo.render(frames, depth=torch.zeros(1, 1, 4, 8))
    with pytest.raises(OptionError, match="NaN"):
        stereo.render(frames, disparity=torch.full((1, 1, 8, 8), float("nan")))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_matches_the_cpu_kernel():
    left, disparity, *_ = scene(2.5, 11.25)
    cpu = stereo.render(left, disparity=disparity, layout="full-sbs")
    gpu = stereo.render(left.cuda(), disparity=disparity.cuda(), layout="full-sbs")
    assert torch.equal(gpu.cpu(), cpu)


# ---- Note [Depth edges within their pixel] -------------------------------------------------------

NEAR, FAR = 40, 200  # the near block's and the background's grey
BLOCK = (12, 20)  # its columns


def edge_scene(d_near: float, width: int = 40):
    """Flat greys: a dark block at disparity ``d_near`` on a light background at 0."""
    frames = torch.full((1, 3, 4, width), FAR, dtype=torch.uint8)
    frames[..., BLOCK[0] : BLOCK[1]] = NEAR
    d = torch.zeros(1, 1, 4, width)
    d[..., BLOCK[0] : BLOCK[1]] = d_near
    return frames, d


def expected_edges(d_near: float, share: float, holes: torch.Tensor, streak: torch.Tensor) -> torch.Tensor:
    """The eye the Note describes, from the warp's own (``streak``, flat colours: every hole
    already has the background's grey) and its holes: at each of the block's two edges, the
    pixel holding the edge (its box) is FAR where it is a hole, and otherwise a of NEAR and
    1 - a of FAR, a the part of its width the block covers."""
    out = streak.clone()
    shift = np.float32(share) * np.float32(d_near)  # float32, as the warp computes it
    for x, side in ((BLOCK[1] - 1, 1), (BLOCK[0], -1)):
        e = float(np.float32(x) + shift + np.float32(0.5 * side))
        p = math.floor(e + 0.5)
        a = e + 0.5 - p if side > 0 else p + 0.5 - e
        if holes[0, 0, 0, p]:
            continue
        out[..., p] = math.floor(a * NEAR + (1 - a) * FAR + 0.5)
    return out


@pytest.mark.parametrize("d_near", [4.4, 5.0, 5.3, 6.7, 9.8])  # 5.0: a = 1/2 at +-1/2
@pytest.mark.parametrize("share", [0.5, -0.5, 1.0, -1.0])
def test_a_near_edge_within_a_pixel_blends_by_the_part_it_covers(d_near, share):
    frames, d = edge_scene(d_near)
    streak, holes = _core.render_eye(frames, d, share, True)
    assert holes.any()
    want = expected_edges(d_near, share, holes, streak)
    # an edge lands within a pixel that is not a hole, unless the shift is a whole number
    assert (want != streak).any() == (float(np.float32(share) * np.float32(d_near)) % 1 != 0)
    for impl in ("cpu", "tensor"):
        image, holes_e, blend = _core.render_eye_edges(frames, d, share, impl)
        assert torch.equal(image, streak) and torch.equal(holes_e, holes)
        got = _core.blend_depth_edges(image, blend, impl)
        assert torch.equal(got, want), (impl, got[0, 0, 0].tolist(), want[0, 0, 0].tolist())
        assert not blend[holes].any(), impl  # a disocclusion keeps its fill: no near colour in it
    # the stereo stage blends them (the default fill; both eyes, +-1/2)
    if abs(share) == 0.5:
        left, right = stereo.render(frames, disparity=d, layout="separate")
        eye = left if share > 0 else right
        assert torch.equal(eye, want), (eye[0, 0, 0].tolist(), want[0, 0, 0].tolist())
        # without a fill (holes left black for an external inpainting) nothing is blended
        bare = stereo.render(frames, disparity=d, layout="separate", infill="mask", full_result=True)
        bare_eye, bare_holes = (bare.left, bare.left_holes) if share > 0 else (bare.right, bare.right_holes)
        assert torch.equal(bare_eye, torch.where(bare_holes, torch.zeros_like(streak), streak))


def test_edges_are_blended_with_the_colours_the_fills_gave_the_holes():
    # a background of noise: the fills' colours in the holes differ from the warp's streak, so
    # the edge pixels show whether they were blended after the fills (render_stereo's order)
    rng = np.random.default_rng(5)
    frames = torch.from_numpy(rng.integers(0, 256, (1, 3, 16, 64), dtype=np.uint8))
    frames[..., 20:36] = NEAR
    d = torch.zeros(1, 1, 16, 64)
    d[..., 20:36] = 6.7
    left, right = stereo.render(frames, disparity=d, layout="separate")
    lent_a_fill = 0
    for eye, share in ((left, 0.5), (right, -0.5)):
        streak, holes, blend = _core.render_eye_edges(frames, d, share)
        b = blend[0, 0]
        ys, xs = torch.nonzero(b, as_tuple=True)
        assert len(ys) > 0
        for y, x in zip(ys.tolist(), xs.tolist()):
            other = x + (1 if b[y, x] > 0 else -1)
            weight = abs(b[y, x].item())
            want = torch.floor((1 - weight) * streak[0, :, y, x].float() + weight * eye[0, :, y, other].float() + 0.5)
            assert torch.equal(eye[0, :, y, x].float(), want), (share, y, x)
            if holes[0, 0, y, other] and not torch.equal(eye[0, :, y, other], streak[0, :, y, other]):
                lent_a_fill += 1
    assert lent_a_fill >= 8  # the hole beside the edge pixel had its fill's colour, not the streak's


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_edge_blends_match_the_native_ones():
    for d_near in (4.4, 5.0, 6.7):
        frames, d = edge_scene(d_near)
        for share in (0.5, -0.5, 1.0):
            image, holes, blend = _core.render_eye_edges(frames, d, share, "cpu")
            g_image, g_holes, g_blend = _core.render_eye_edges(frames.cuda(), d.cuda(), share)
            assert torch.equal(g_blend.cpu(), blend) and torch.equal(g_image.cpu(), image)
            blended = _core.blend_depth_edges(image, blend, "cpu")
            assert torch.equal(_core.blend_depth_edges(g_image, g_blend).cpu(), blended)


def test_edges_landing_on_one_pixel_are_left_as_the_warp_draws_them():
    # the left eye (+1/2): a near block's right edge lands at 15 + 4.6 + 0.5 = 20.1 (pixel 20,
    # which it covers by 0.6); a second block's left edge at 19 + 1.4 - 0.5 = 19.9, pixel 20 too
    frames = torch.full((1, 3, 2, 40), FAR, dtype=torch.uint8)
    d = torch.zeros(1, 1, 2, 40)
    frames[..., 10:16] = NEAR
    d[..., 10:16] = 9.2
    alone = {impl: _core.render_eye_edges(frames, d, 0.5, impl)[2] for impl in ("cpu", "tensor")}
    frames[..., 19:26] = 120
    d[..., 19:26] = 2.8
    both = {impl: _core.render_eye_edges(frames, d, 0.5, impl)[2] for impl in ("cpu", "tensor")}
    for impl in ("cpu", "tensor"):
        assert alone[impl][0, 0, 0, 20].item() == pytest.approx(0.4)  # 1 - 0.6 of pixel 21
        assert both[impl][0, 0, 0, 20].item() == 0, impl
        # the second block's right edge (25 + 1.4 + 0.5 = 26.9, over the background) still is
        assert both[impl][0, 0, 0, 27].item() == pytest.approx(-0.4), impl


# ---- Note [Depth-guided patch fill] ---------------------------------------------------------------

PATCH_FG = (slice(8, 40), slice(70, 100))  # rows, columns of the near object


def tiles(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A clean repeating background: slanted stripes, 10 pixels a period along the rows."""
    v = ((x + 0.5 * y) % 10 < 5).astype(np.float64)
    return np.stack([40 + 170 * v, 60 + 120 * v, 200 - 150 * v], -1)


def patch_scene(background, *, near_d: float = 16.0, second_object: bool = False):
    """A 48x160 still frame: ``background`` (H,W,3 from x, y) at disparity 0 behind a red
    object at ``near_d``, optionally a green one at the same depth 24 pixels right of the red
    one (within the candidates' reach, narrower than the red one's hole); the frame, its disparity and the background as it
    would be seen everywhere (the truth of the right eye's holes)."""
    y, x = np.mgrid[0:48, 0:160].astype(np.float64)
    truth = background(x, y)
    frame = truth.copy()
    d = np.zeros((48, 160), np.float32)
    frame[PATCH_FG] = [230, 20, 20]
    d[PATCH_FG] = near_d
    if second_object:
        frame[8:40, 124:130] = [20, 220, 20]
        d[8:40, 124:130] = near_d
    to_u8 = lambda a: torch.from_numpy(np.clip(np.floor(a + 0.5), 0, 255).astype(np.uint8))
    return to_u8(frame).permute(2, 0, 1)[None].contiguous(), torch.from_numpy(d)[None, None], truth


def hole_colours(image: torch.Tensor, holes: torch.Tensor) -> np.ndarray:
    return image[0].permute(1, 2, 0).numpy()[holes[0, 0].numpy()].astype(np.float64)


def test_patch_fill_continues_a_repeating_background_in_phase():
    frames, d, truth = patch_scene(tiles)
    result = stereo.render(frames, disparity=d, layout="separate", synthetic_view="right", full_result=True)
    holes = result.right_holes[0, 0].numpy()
    assert holes.sum() >= 16 * 32  # the object's revealed band, 16 pixels wide
    # the public path fills it with the stripes in phase, not the edge pixel's streak
    filled = result.right[0].permute(1, 2, 0).numpy().astype(np.float64)
    streak, _ = _core.render_eye(frames, d, -1.0, True)
    streak = streak[0].permute(1, 2, 0).numpy().astype(np.float64)
    assert psnr(filled[holes], truth[holes]) >= 40
    assert psnr(streak[holes], truth[holes]) < 15
    # and never with the object's red
    red = (np.abs(filled[holes] - [230, 20, 20]).sum(-1) < 90).sum()
    assert red == 0


def test_patch_fill_never_copies_a_nearer_object():
    frames, d, truth = patch_scene(tiles, second_object=True)
    for impl in ("cpu", "tensor"):
        image, holes = _core.render_eye_patched(frames, d, -1.0, impl)
        colours = hole_colours(image, holes)
        assert len(colours) >= 16 * 32
        for near in ([230, 20, 20], [20, 220, 20]):
            assert (np.abs(colours - near).sum(-1) < 90).sum() == 0, (impl, near)
        # the red object's revealed band is still copied, from the background between the two
        band = np.zeros((48, 160), bool)
        band[8:40, 84:100] = True
        band &= holes[0, 0].numpy()
        assert band.sum() >= 16 * 32
        assert psnr(image[0].permute(1, 2, 0).numpy()[band].astype(np.float64), truth[band]) >= 40, impl


def test_patch_fill_fades_to_the_background_where_it_does_not_repeat():
    rng = np.random.default_rng(5)
    noise = rng.uniform(30, 220, (48, 160, 3))
    frames, d, truth = patch_scene(lambda x, y: noise)
    streak, holes = _core.render_eye(frames, d, -1.0, True)
    mask = holes[0, 0].numpy()
    assert mask.sum() >= 16 * 32
    streak_db = psnr(hole_colours(streak, holes), truth[mask])
    native, _ = _core.render_eye_patched(frames, d, -1.0, "cpu")
    tensor, _ = _core.render_eye_patched(frames, d, -1.0, "tensor")
    assert (native.int() - tensor.int()).abs().max() <= 1  # the sums' rounding at most
    for impl in ("cpu", "tensor"):
        patched, _ = _core.render_eye_patched(frames, d, -1.0, impl)
        colours = hole_colours(patched, holes)
        # nothing repeats, so nothing is copied: the noise's expected colour is its mean, and
        # the fade reaches it a few pixels from the edge (step 6)
        assert psnr(colours, truth[mask]) >= streak_db + 2.0, impl
        far = patched[0, :, 8:40, 84:96].double().mean((1, 2)).numpy()
        assert np.abs(far - noise.mean((0, 1))).max() < 12, (impl, far)
        assert colours.std(0).max() < 0.5 * hole_colours(streak, holes).std(0).min(), impl


def test_patch_fill_implementations_agree():
    rng = np.random.default_rng(9)
    for share in (-1.0, -0.5, 0.5, 1.0):
        for near_d in (9.0, 16.0, 23.5):
            background = lambda x, y: tiles(x, y) + rng.normal(0, 4, (48, 160, 3))
            frames, d, _ = patch_scene(background, near_d=near_d, second_object=near_d > 20)
            native, holes = _core.render_eye_patched(frames, d, share, "cpu")
            tensor, _ = _core.render_eye_patched(frames, d, share, "tensor")
            streak, _ = _core.render_eye(frames, d, share, True)
            # the same choices (the sums' rounding may move a colour by one level)
            assert (native.int() - tensor.int()).abs().max() <= 1, (share, near_d)
            assert not torch.equal(native, streak), (share, near_d)  # the copy was made
