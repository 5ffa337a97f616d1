"""The temporal fill (Note [Temporal fill] in cpp/sbsconv/stereo/TemporalFill.h), the edge
snapping before the warp (Note [Depth edges snapped to colour edges]) and the optical flow
they rest on (Note [Dense optical flow]), judged against exact ground truth: the layered
synthetic scenes of stereoscenes.py, converted by sbsconv from their exact metric depth."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sbsconv
import stereoscenes as S
from sbsconv._native import _core
from sbsconv.errors import OptionError

SIZE = (320, 180)


def _luma_psnr(out: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    return S.psnr(S.luma(out), S.luma(truth), mask)


def _flicker(out: np.ndarray, truth: np.ndarray, hidden: np.ndarray) -> float:
    yo, yt = S.luma(out), S.luma(truth)
    both = hidden[1:] & hidden[:-1]
    return float(np.abs((yo[1:] - yo[:-1]) - (yt[1:] - yt[:-1]))[both].mean())


@pytest.fixture(scope="module")
def trucking(tmp_path_factory):
    """A moving scene (a trucking camera, objects moving on their own) and its truth."""
    folder = tmp_path_factory.mktemp("trucking")
    scene = S.make_scene("trucking", SIZE, frames=16)
    truth = S.render(scene)
    video, depth = S.write_scene(scene, folder, truth)
    return folder, video, depth, truth


def test_the_default_fill_takes_disocclusions_from_the_frames_that_saw_them(trucking):
    # fill is left alone: the default is the temporal fill, which beats the spatial one in the
    # disoccluded pixels of both eyes by a wide margin and flickers less there
    folder, video, depth, truth = trucking
    default = S.convert_eyes(video, depth, folder, "default")
    spatial = S.convert_eyes(video, depth, folder, "spatial", fill="spatial")
    for side in ("left", "right"):
        image, _, hidden, _ = truth.eye(side)
        ours = _luma_psnr(getattr(default, side), image, hidden)
        theirs = _luma_psnr(getattr(spatial, side), image, hidden)
        assert ours >= theirs + 4.0 and ours >= 25.0, (side, ours, theirs)
        assert _flicker(getattr(default, side), image, hidden) < _flicker(getattr(spatial, side), image, hidden)
        # pixels the source shows are not touched by the fill
        seen = ~(hidden | S.near_edges(truth.depth, 3)) & ~truth.eye(side)[3]
        assert _luma_psnr(getattr(default, side), image, seen) >= 38.0


def test_fill_none_leaves_black_holes_and_spatial_is_the_frames_own(trucking):
    folder, video, depth, truth = trucking
    none = S.convert_eyes(video, depth, folder, "none", fill="none")
    spatial = S.convert_eyes(video, depth, folder, "spatial2", fill="spatial")
    black = (none.right == 0).all(-1)
    assert black.mean() > 0.002  # the disocclusions are black
    assert not (spatial.right[black] == 0).all(-1).all()  # the spatial fill paints them
    # outside the holes the fills show the same picture, but for the pixels that a near
    # surface's edge covers in part: a fill blends those (Note [Depth edges within their
    # pixel]), the holes' colours being known; they lie on the depth edges
    differ = (none.right != spatial.right).any(-1) & ~black
    assert 0 < differ.mean() < 0.01
    assert not (differ & ~S.near_edges(truth.right_depth, 2)).any()


@pytest.mark.parametrize("name", ["panning", "trucking"])
def test_the_native_and_the_tensor_fill_agree(name):
    scene = S.make_scene(name, SIZE, frames=8)
    truth = S.render(scene)
    frames = torch.from_numpy(truth.source).permute(0, 3, 1, 2).contiguous()
    disparity = torch.from_numpy(S.disparity(scene, truth.depth)).float().unsqueeze(1)
    results = {}
    for impl in ("cpu", "tensor"):
        window = _core.TemporalFill(batch_size=4, past=4, ahead=4)
        for first in (0, 4):
            window.push(first, frames[first:first + 4], disparity[first:first + 4], [False] * 4, False)
        results[impl] = [window.render(first, frames[first:first + 4], disparity[first:first + 4], [0.5, -0.5], impl)
                         for first in (0, 4)]
    spatial = _core.render_eye(frames[:4], disparity[:4], -0.5)[0]
    filled = 0
    for batch_cpu, batch_tensor in zip(results["cpu"], results["tensor"]):
        for (image_cpu, holes, seen_cpu), (image_tensor, _, seen_tensor) in zip(batch_cpu, batch_tensor):
            differ = (image_cpu.int() - image_tensor.int()).abs()
            assert (differ > 0).float().mean() < 1e-4 and differ.max() <= 2
            assert (seen_cpu != seen_tensor).float().mean() < 1e-4  # the same pixels taken from frames
    filled = (results["cpu"][0][1][0] != spatial).any(1)
    assert filled.any()  # the fill changed hole pixels, and only those
    assert not (filled & ~results["cpu"][0][1][1][:, 0]).any()


@pytest.mark.parametrize("impl", ["cpu", "tensor"])
def test_the_hole_pixel_next_to_the_foreground_is_taken_from_the_frames_too(impl):
    # Note [Temporal fill], the edge rule of step 3 and step 5: the hole's pixel beside the
    # foreground shows a point within a pixel of the foreground's edge in every frame, so the
    # four-pixel rule alone took only about two thirds of them from other frames (0.66 here)
    scene = S.make_scene("trucking", (320, 180), frames=16)
    truth = S.render(scene)
    frames = torch.from_numpy(truth.source).permute(0, 3, 1, 2).contiguous()
    disparity = torch.from_numpy(S.disparity(scene, truth.depth)).float().unsqueeze(1)
    window = _core.TemporalFill(batch_size=4, past=4, ahead=4)
    rendered = []
    for first in range(0, 16, 4):
        window.push(first, frames[first:first + 4], disparity[first:first + 4], [first == 0] + [False] * 3, False)
        if first >= 4:
            rendered.append(window.render(first - 4, frames[first - 4:first], disparity[first - 4:first], [-0.5],
                                          impl)[0])
    holes = torch.cat([r[1] for r in rendered])[:, 0].numpy()
    from_window = torch.cat([r[2] for r in rendered])[:, 0].numpy()
    image = torch.cat([r[0] for r in rendered]).permute(0, 2, 3, 1).numpy()
    # the right eye's disocclusions lie right of the nearer objects: a run's first pixel is the
    # one beside the foreground (runs at the frame's edges left out)
    beside = np.zeros_like(holes)
    beside[:, :, 1:-1] = holes[:, :, 1:-1] & ~holes[:, :, :-2]
    assert beside.sum() > 1000
    assert from_window[beside].mean() >= 0.85
    eye, _, hidden, _ = truth.eye("right")
    n = len(holes)
    taken = beside & hidden[:n]
    assert S.psnr(S.luma(image)[taken], S.luma(eye[:n])[taken]) >= 25


@pytest.mark.parametrize("impl", ["cpu", "tensor"])
def test_a_point_whose_nearest_pixel_another_frame_saw_is_taken_from_its_background_taps(impl):
    # Note [Temporal fill], step 3's edge rule alone: a one-pixel hole (step 5 has no filled
    # neighbour to continue) right of a block moving right over a still background; the hidden
    # point lies 0.7 px right of its pixel (background disparity 1.4, right eye), so in the two
    # frames before, its nearest pixel (the next one) is the background's while the block still
    # covers the first of its four taps
    h, w, n = 48, 96, 6
    rng = np.random.default_rng(0)
    texture = rng.integers(40, 220, (h, w, 3)).astype(np.uint8)
    frames, disparity = [], []
    for t in range(n):
        right_edge = 40.5 + 0.35 * t
        image, d = texture.copy(), np.full((h, w), 1.4, np.float32)
        block = (np.arange(w) >= 20) & (np.arange(w) < right_edge)
        image[10:38, block] = (250, 20, 20)
        d[10:38, block] = 3.4
        frames.append(image)
        disparity.append(d)
    frames = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    disparity = torch.from_numpy(np.stack(disparity)).unsqueeze(1)
    window = _core.TemporalFill(batch_size=n, past=2, ahead=0)
    window.push(0, frames, disparity, [True] + [False] * (n - 1), False)
    image, holes, from_window = window.render(0, frames, disparity, [-0.5], impl)[0]
    holes, from_window = holes[:, 0].numpy(), from_window[:, 0].numpy()
    block_holes = holes.copy()
    block_holes[:, :, w - 4:] = False  # the strip at the frame's edge: nothing to see there
    assert (block_holes.sum((1, 2)) == 28).all()  # one pixel in each of the block's rows
    filled = from_window & block_holes
    assert filled.sum() >= 3 * 28  # the four-pixel rule alone takes none of them
    t, y, x = np.nonzero(filled)
    colours = image.permute(0, 2, 3, 1).numpy()[t, y, x]
    # the background's tap at weight 1 (up to the optical flow's rounding on the still background)
    assert np.abs(colours.astype(int) - texture[y, x + 1].astype(int)).max() <= 2


@pytest.mark.parametrize("impl", ["cpu", "tensor"])
def test_a_nearer_surface_between_the_hole_and_its_foreground_is_not_taken_for_the_background(impl):
    # Note [Temporal fill], step 3: a still wall (disparity 0) behind a block (12) moving right
    # 8 px a frame; the right eye's hole beside the block (eye columns 44-55 at frame 2) shows
    # the wall. In the frames just before and after, a panel at disparity 3 (a quarter of the
    # way to the block: the anchor's own tolerance, a third, would let it pass) covers that part
    # of the wall; two frames away the wall is in view. The hole takes the wall, not the panel.
    h, w, n, now = 24, 128, 5, 2
    rng = np.random.default_rng(1)
    wall = rng.integers(150, 256, (h, w, 3)).astype(np.uint8)
    frames, disparity = [], []
    for t in range(n):
        image, d = wall.copy(), np.zeros((h, w), np.float32)
        if abs(t - now) == 1:
            image[:, 42:60] = (20, 30, 120)
            d[:, 42:60] = 3.0
        block = slice(40 + 8 * (t - now), 56 + 8 * (t - now))
        image[:, block] = (230, 20, 20)
        d[:, block] = 12.0
        frames.append(image)
        disparity.append(d)
    frames = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    disparity = torch.from_numpy(np.stack(disparity)).unsqueeze(1)
    window = _core.TemporalFill(batch_size=n, past=2, ahead=2, flow_width=w)
    window.push(0, frames, disparity, [True] + [False] * (n - 1), False)
    image, holes, from_window = window.render(now, frames[now:now + 1], disparity[now:now + 1], [-1.0], impl)[0]
    hole = holes[0, 0].numpy()
    assert hole[:, 44:56].all() and not hole[:, 56:].any()
    taken = from_window[0, 0].numpy()[:, 45:56]  # (44, beside the block, is the edge's)
    assert taken.all()
    colours = image[0].permute(1, 2, 0).numpy()[:, 45:56].astype(int)
    # the wall as it was two frames away (up to the optical flow's sub-pixel error on a still
    # wall of noise); the panel's colour is over 100 levels from any of it
    error = np.abs(colours - wall[:, 45:56].astype(int))
    assert error.max() <= 8 and error.mean() < 2.5, (error.max(), error.mean())


def test_the_patch_fill_leaves_what_the_window_filled():
    # render_stereo's order: the window first, then the background's texture for the pixels no
    # frame saw (Note [Depth-guided patch fill]); the window marks what it took
    scene = S.make_scene("panning", SIZE, frames=8)
    truth = S.render(scene)
    frames = torch.from_numpy(truth.source).permute(0, 3, 1, 2).contiguous()
    disparity = torch.from_numpy(S.disparity(scene, truth.depth)).float().unsqueeze(1)
    window = _core.TemporalFill(batch_size=4, past=4, ahead=4)
    for first in (0, 4):
        window.push(first, frames[first:first + 4], disparity[first:first + 4], [False] * 4, False)
    for impl in ("cpu", "tensor"):
        plain = window.render(4, frames[4:], disparity[4:], [0.5, -0.5], impl)
        patched = window.render(4, frames[4:], disparity[4:], [0.5, -0.5], impl, patch=True)
        for (image, holes, seen), (image_p, holes_p, seen_p) in zip(plain, patched):
            assert torch.equal(seen, seen_p) and torch.equal(holes, holes_p)
            assert seen.any() and (holes & ~seen).any()  # some taken from frames, some not
            assert not (seen & ~holes).any()
            at_seen = seen[:, 0].unsqueeze(1).expand_as(image)
            assert torch.equal(image[at_seen], image_p[at_seen])  # the window's pixels stay
            outside = (~holes[:, 0]).unsqueeze(1).expand_as(image)
            assert torch.equal(image[outside], image_p[outside])


@pytest.mark.parametrize("impl", ["cpu", "tensor"])
def test_what_no_frame_saw_is_steadied_over_time_but_not_across_a_cut(impl):
    # Note [Temporal fill], step 6: a hole pixel that no frame saw, where the frame before showed
    # a hole too, shows the mean of its own fill and the previous frame's pixel as that frame was
    # shown; across batches too (the window keeps each eye's last frame), never across a cut
    scene = S.make_scene("large", SIZE, frames=12)
    truth = S.render(scene)
    frames = torch.from_numpy(truth.source).permute(0, 3, 1, 2).contiguous()
    disparity = torch.from_numpy(S.disparity(scene, truth.depth)).float().unsqueeze(1)
    cut = 6

    def run(steady: bool):
        window = _core.TemporalFill(batch_size=4, past=4, ahead=4)
        starts = [i == cut for i in range(12)]
        for first in (0, 4, 8):
            window.push(first, frames[first:first + 4], disparity[first:first + 4], starts[first:first + 4], False)
        batches = [window.render(first, frames[first:first + 4], disparity[first:first + 4], [0.5, -0.5], impl,
                                 patch=True, steady=steady) for first in (0, 4, 8)]
        return [[torch.cat([b[e][k] for b in batches]) for k in range(3)] for e in range(2)]

    blended_total = 0
    for (plain, holes, seen), (steadied, holes_s, seen_s) in zip(run(False), run(True)):
        assert torch.equal(holes, holes_s) and torch.equal(seen, seen_s)  # the same fill underneath
        unseen = (holes & ~seen)[:, 0]
        assert torch.equal(steadied[0], plain[0])  # nothing before the first frame
        for t in range(1, 12):
            both = unseen[t] & holes[t - 1, 0] if t != cut else torch.zeros_like(unseen[t])
            mean = (plain[t].int() + steadied[t - 1].int() + 1) // 2
            expected = torch.where(both.unsqueeze(0), mean.to(torch.uint8), plain[t])
            assert torch.equal(steadied[t], expected), t
            blended_total += int(both.sum())
        # at the cut the frame's own fill alone, though its unseen pixels were holes before too
        assert (unseen[cut] & holes[cut - 1, 0]).any()
        # some take the colour a frame saw a moment ago (the pixel was taken from a frame then)
        assert (unseen[1:] & seen[:-1, 0]).any()
    assert blended_total > 1000


def test_the_window_shrinks_to_the_memory_it_is_given():
    frames = torch.zeros(2, 3, 64, 96, dtype=torch.uint8)
    disparity = torch.zeros(2, 1, 64, 96)
    per_frame = 64 * 96 * 7
    window = _core.TemporalFill(batch_size=2, past=8, ahead=8, memory_bytes=per_frame * (2 * 2 + 1 + 6))
    window.push(0, frames, disparity, [False, False], False)
    assert window.ahead == 3  # (11 - 5) / 2 frames each way instead of 8
    tiny = _core.TemporalFill(batch_size=2, memory_bytes=per_frame)
    tiny.push(0, frames, disparity, [False, False], False)
    assert tiny.ahead == 0  # nothing fits: the frame's own fill
    eyes = tiny.render(0, frames, disparity + 3.0, [-0.5], "auto")
    assert eyes[0][0].shape == frames.shape
    with pytest.raises(OptionError):
        _core.TemporalFill(past=-1)


@pytest.mark.parametrize("impl", ["auto", "tensor"])
@pytest.mark.parametrize("shift", [(1.3, -0.6), (-3.7, 2.2)])
def test_dense_flow_finds_a_shift_to_a_tenth_of_a_pixel(shift, impl):
    torch.manual_seed(0)
    base = F.interpolate(torch.rand(1, 1, 60, 100), (180, 300), mode="bicubic").clamp(0, 1)
    dx, dy = shift
    ys, xs = torch.meshgrid(torch.arange(180.0), torch.arange(300.0), indexing="ij")
    grid = torch.stack([(xs - dx) * 2 / 299 - 1, (ys - dy) * 2 / 179 - 1], -1).unsqueeze(0)
    moved = F.grid_sample(base, grid, align_corners=True, padding_mode="border")
    a, b = base[..., 20:-20, 20:-20].contiguous(), moved[..., 20:-20, 20:-20].contiguous()
    flow = _core.dense_flow(a, b, impl=impl)  # auto: the native steps on the CPU
    inner = flow[0, :, 10:-10, 10:-10]
    assert abs(inner[0].median().item() - dx) < 0.1 and abs(inner[1].median().item() - dy) < 0.1
    assert (inner[0] - dx).abs().mean() < 0.15


def test_the_native_flow_and_grey_match_the_libtorch_operations():
    # Note [Dense optical flow]: on the CPU the steps and the grey reduction run natively; the
    # LibTorch operations (the GPU's path) are the reference
    scene = S.make_scene("trucking", SIZE, frames=3)
    frames = torch.from_numpy(S.render(scene).source).permute(0, 3, 1, 2).contiguous()
    for source in (frames, frames.contiguous(memory_format=torch.channels_last), frames[:, :, 1::2, 3:]):
        for width in (source.shape[3], 160, 97):
            grey = _core.flow_gray(source, width)
            rgb = source.float()
            want = ((rgb[:, 0] * 0.299 + rgb[:, 1] * 0.587 + rgb[:, 2] * 0.114) / 255).unsqueeze(1)
            if width < source.shape[3]:
                h, w = source.shape[2:]
                want = F.adaptive_avg_pool2d(want, (max(1, (h * width + w // 2) // w), width))
            assert grey.shape == want.shape and (grey - want).abs().max() < 1e-5
    grey = _core.flow_gray(frames, 240)
    a, b = grey[:-1].contiguous(), grey[1:].contiguous()
    native, tensor = _core.dense_flow(a, b, impl="cpu"), _core.dense_flow(a, b, impl="tensor")
    assert tensor.abs().mean() > 0.2  # the camera moves: there is flow to agree on
    assert (native - tensor).abs().max() < 5e-3 and (native - tensor).abs().mean() < 1e-4
    with pytest.raises(OptionError):
        _core.dense_flow(a, b, impl="gpu")


def test_edge_snapping_leaves_exact_depth_alone_and_moves_a_soft_edges_halo():
    scene = S.make_scene("trucking", SIZE, frames=2)
    truth = S.render(scene)
    frames = torch.from_numpy(truth.source).permute(0, 3, 1, 2).contiguous()
    exact = torch.from_numpy(S.disparity(scene, truth.depth)).float().unsqueeze(1)
    soft = F.avg_pool2d(exact, 5, 1, 2, count_include_pad=False)
    # edges everywhere, up to the rows' ends (the windows clipped there)
    blocks = torch.randint(0, 3, (2, 1, SIZE[1], SIZE[0] // 8), generator=torch.Generator().manual_seed(3))
    steps = blocks.float().repeat_interleave(8, dim=3) * 6.0
    for disparity in (exact, soft, steps):
        for radius in (1, 2, 4):
            native = _core.dilate_foreground(disparity, frames, radius, "cpu")
            tensor = _core.dilate_foreground(disparity, frames, radius, "tensor")
            assert (native != tensor).float().mean() < 1e-4, radius
    assert (_core.dilate_foreground(exact, frames, 2) != exact).float().mean() < 0.002
    moved = _core.dilate_foreground(soft, frames, 2) != soft
    assert moved.float().mean() > 0.005  # the soft ramps move with their objects
    assert torch.equal(_core.dilate_foreground(soft, frames, 0), soft)


def test_fill_is_an_option_with_a_clear_error():
    assert sbsconv.ConvertOptions().fill == "temporal"
    with pytest.raises(OptionError, match="fill"):
        sbsconv.ConvertOptions(fill="diffusion")
