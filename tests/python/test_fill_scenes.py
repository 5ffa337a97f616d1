"""The synthetic stereo scenes of issue 29 (stereoscenes.py) are exact: their eyes are what
sbsconv's own geometry makes of the source at the exact depth, their disocclusion masks are
where the source hides the eye's points, and today's fill beats the naive warp there. Small
pictures: the whole file runs in a few seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stereoscenes as S
from sbsconv import stereo
from sbsconv._native import _core
from sbsconv.options import ConvertOptions

SIZE = (320, 180)


def _tensors(truth: S.Truth) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(truth.source).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(truth.depth).unsqueeze(1),
    )


def _sbsconv_eyes(scene: S.Scene, truth: S.Truth, edge_dilation: int = 0) -> stereo.StereoResult:
    frames, depth = _tensors(truth)
    return stereo.render(
        frames,
        depth=depth,
        depth_kind="metric",
        layout="separate",
        fov_degrees=scene.fov_degrees,
        ipd_mm=scene.ipd_mm,
        screen_distance=scene.screen_distance,
        edge_dilation=edge_dilation,
        full_result=True,
    )


def _hwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


def _seen(truth: S.Truth, side: str, radius: int) -> np.ndarray:
    """The eye's pixels that the source sees, away from depth edges and from the unseen."""
    _, depth, hidden, outside = truth.eye(side)
    return ~S.near_edges(depth, radius) & ~S._dilate(hidden | outside, radius)


@pytest.mark.parametrize("name", ["trucking", "panning", "dolly"])
def test_eyes_are_sbsconvs_warp_of_the_source_at_the_exact_depth(name):
    # panning: slanted planes (disparity varies along the rows); dolly: depth changes per frame
    scene = S.make_scene(name, SIZE, frames=12)
    truth = S.render(scene, [0, 11])
    frames, depth = _tensors(truth)
    disparity = stereo.disparity_from_depth(
        depth,
        depth_kind="metric",
        fov_degrees=scene.fov_degrees,
        ipd_mm=scene.ipd_mm,
        screen_distance=scene.screen_distance,
    )
    assert np.abs(disparity[:, 0].numpy() - S.disparity(scene, truth.depth)).max() < 1e-4
    result = _sbsconv_eyes(scene, truth)
    for side, image in (("left", result.left), ("right", result.right)):
        valid = _seen(truth, side, 2)
        assert valid.mean() > 0.8
        assert S.psnr(S.luma(_hwc(image)), S.luma(getattr(truth, side)), valid) > 40.0, side


def test_integer_shifts_make_the_eyes_exact_shifts_of_the_source():
    # the geometry has no sub-pixel error: where every eye shift is a whole number of pixels,
    # sbsconv's warp reproduces the truth bit for bit on every surface the source sees
    scene = S.with_integer_shifts(S.make_scene("trucking", SIZE, frames=6))
    truth = S.render(scene, [0, 5])
    result = _sbsconv_eyes(scene, truth)
    for side, image in (("left", result.left), ("right", result.right)):
        valid = _seen(truth, side, 1)
        assert valid.mean() > 0.9
        assert np.array_equal(_hwc(image)[valid], getattr(truth, side)[valid]), side


def test_masks_lie_beside_nearer_surfaces_and_match_sbsconvs_holes():
    for name in ("trucking", "thin", "large"):
        scene = S.make_scene(name, SIZE, frames=3)
        truth = S.render(scene, [2])
        result = _sbsconv_eyes(scene, truth)
        for side, holes, step in (
            ("left", result.left_holes, 1),
            ("right", result.right_holes, -1),
        ):
            _, depth, hidden, outside = truth.eye(side)
            assert 0.002 < hidden.mean() < 0.06, (name, side)
            assert not (hidden & outside).any()
            # The left eye sees round the left side of nearer things: to the right of each
            # disoccluded pixel, within the largest relative shift, lies a nearer surface (to
            # the left for the right eye); right beside the run unless the object is thinner
            # than the shift (a thin bar's disocclusion stands apart from it).
            reach = int(np.ceil(np.ptp(S.disparity(scene, depth)) / 2)) + 2
            ys, xs = np.nonzero(hidden[0])
            for y, x in zip(ys, xs, strict=True):
                window = slice(x + 1, x + reach) if step > 0 else slice(max(x - reach + 1, 0), x)
                ahead = depth[0, y, window][~hidden[0, y, window]]
                if ahead.size:
                    assert ahead.min() < depth[0, y, x], (name, side, y, x)
            # sbsconv's own holes are the pixels without a source pixel: the same regions up to
            # their boundaries
            h = holes[:, 0].numpy()
            unseen = hidden | outside
            assert (h & unseen).sum() / (h | unseen).sum() > 0.7, (name, side)


@pytest.mark.parametrize("name", ["trucking", "dolly", "thin"])
def test_edges_blended_within_their_pixel_err_less_than_the_warps_hard_edges(name):
    # Note [Depth edges within their pixel]: where a point-sampled edge lies within its pixel is
    # unknown; blending by the part covered errs less, over many edges, than the z-buffer's
    # all-or-nothing pixel; and the disocclusions only gain (the near surface's colour is never
    # spread into a hole)
    scene = S.make_scene(name, SIZE, frames=8)
    truth = S.render(scene)
    frames, _ = _tensors(truth)
    disparity = torch.from_numpy(S.disparity(scene, truth.depth)).unsqueeze(1)
    for side, share in (("left", 0.5), ("right", -0.5)):
        image, holes, blend = _core.render_eye_edges(frames, disparity, share, "cpu")
        tensor_image, _, tensor_blend = _core.render_eye_edges(frames, disparity, share, "tensor")
        assert torch.equal(tensor_image, image) and torch.equal(tensor_blend, blend), side
        blended = _core.blend_depth_edges(image, blend, "cpu")
        assert torch.equal(_core.blend_depth_edges(image, blend, "tensor"), blended), side
        marked = (blend[:, 0] != 0).numpy()
        assert marked.sum() > 500 and not (marked & holes[:, 0].numpy()).any(), side
        assert np.array_equal(_hwc(blended)[~marked], _hwc(image)[~marked])
        eye, _, hidden, _ = truth.eye(side)
        y = S.luma(eye)
        err_hard = (S.luma(_hwc(image)) - y) ** 2
        err_blend = (S.luma(_hwc(blended)) - y) ** 2
        assert err_blend[marked].sum() < 0.92 * err_hard[marked].sum(), side
        assert err_blend[hidden].sum() < err_hard[hidden].sum(), side


def test_a_zero_ipd_camera_sees_what_the_source_sees():
    scene = S.make_scene("large", SIZE, frames=3, ipd_mm=0.0)
    truth = S.render(scene, [0, 2])
    for side in ("left", "right"):
        image, depth, hidden, outside = truth.eye(side)
        assert not hidden.any() and not outside.any()
        assert np.array_equal(image, truth.source) and np.array_equal(depth, truth.depth)


def test_the_still_pair():
    scene = S.make_scene("still", SIZE)
    assert scene.frames == 1 and not scene.moving
    truth = S.render(scene)
    assert truth.source.shape == (1, SIZE[1], SIZE[0], 3)
    # every layer is seen, each at its own depth
    assert np.allclose(np.unique(truth.depth), sorted(layer.depth for layer in scene.layers))
    assert not np.array_equal(truth.left, truth.right)
    # rich texture: contrast, and detail down to the pixel scale
    y = S.luma(truth.source[0])
    assert np.abs(np.diff(y, axis=1)).mean() > 4.0 and y.std() > 20.0
    for side in ("left", "right"):
        _, _, hidden, outside = truth.eye(side)
        assert 0.005 < hidden.mean() < 0.05
        assert outside[0, :, 0].all() != outside[0, :, -1].all()  # the strip lies on one side


def test_todays_fill_beats_the_naive_warp_in_the_disocclusions_of_the_still_pair(tmp_path):
    scene = S.make_scene("still", SIZE)
    truth = S.render(scene)
    frames, depth = _tensors(truth)
    disparity = stereo.disparity_from_depth(
        depth,
        depth_kind="metric",
        fov_degrees=scene.fov_degrees,
        ipd_mm=scene.ipd_mm,
        screen_distance=scene.screen_distance,
    )
    # through the files a conversion reads, and back losslessly
    video, depth_file = S.write_scene(scene, tmp_path, truth)
    eyes = S.convert_eyes(video, depth_file, tmp_path)
    assert eyes.fov_degrees == pytest.approx(scene.fov_degrees)
    direct = _sbsconv_eyes(scene, truth, edge_dilation=ConvertOptions().edge_dilation)
    for side, share in (("left", 0.5), ("right", -0.5)):
        converted = getattr(eyes, side)
        expected = _hwc(getattr(direct, side))
        drawn = ~getattr(direct, f"{side}_holes")[:, 0].numpy()  # whatever the fill, these agree
        assert np.array_equal(converted[drawn], expected[drawn]), side
        naive = _hwc(_core.render_eye_naive(frames, disparity, share))
        image, _, hidden, _ = truth.eye(side)
        y = S.luma(image)
        for filled in (converted, expected):
            assert S.psnr(S.luma(filled), y, hidden) > S.psnr(S.luma(naive), y, hidden) + 3.0, side
