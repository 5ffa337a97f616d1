"""Point clouds from depth, their files and pictures, and the preview's depth panels (issue 14,
"Depth as a product")."""

from __future__ import annotations

import importlib
import math
import os

import numpy as np
import pytest
import sbsconv
import torch
from helpers import data
from sbsconv import pointcloud
from sbsconv.errors import OptionError, OutputError, SbsconvError
from sbsconv.pointcloud import (
    BACKGROUND,
    PointCloud,
    depth_histogram,
    point_cloud,
    render_point_cloud,
    write_csv,
    write_ply,
)

W, H = 64, 48
TAN30 = math.tan(math.radians(30))


def _frame(seed: int = 0) -> np.ndarray:
    """A random uint8 RGB frame [H,W,3]."""
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _plane(z: float = 2.0) -> np.ndarray:
    return np.full((H, W), z, dtype=np.float32)


# --- the cloud ----------------------------------------------------------------------------------

def test_fronto_parallel_plane_has_the_pinhole_geometry():
    cloud = point_cloud(_frame(), _plane(2.0), 60)
    assert isinstance(cloud, PointCloud) and len(cloud) == W * H
    assert cloud.xyz.dtype == np.float32 and cloud.xyz.shape == (W * H, 3)
    assert cloud.rgb.dtype == np.uint8 and cloud.rgb.shape == (W * H, 3)
    x, y, z = cloud.xyz.T.astype(np.float64)
    np.testing.assert_allclose(z, 2.0, rtol=0.01)
    # planar: the smallest spread about the best-fitting plane is nothing
    centred = cloud.xyz - cloud.xyz.mean(axis=0)
    assert np.linalg.svd(centred, compute_uv=False)[-1] / math.sqrt(len(cloud)) < 1e-5
    # lateral extent: pixel centres 0.5 .. W-0.5 around the centre, fx = (W/2)/tan(30 deg)
    assert x.max() - x.min() == pytest.approx(2 * 2 * TAN30 * (W - 1) / W, rel=0.01)
    # square pixels (fy = fx): the vertical extent is (H-1) pixels at the same focal length
    assert y.max() - y.min() == pytest.approx(2 * 2 * TAN30 * (H - 1) / W, rel=0.01)
    # principal point at the centre: symmetric about the optical axis
    assert abs(x.mean()) < 1e-5 and abs(y.mean()) < 1e-5
    # row-major order, OpenCV axes: the first point is the top-left pixel, up and to the left
    fx = (W / 2) / TAN30
    np.testing.assert_allclose(cloud.xyz[0], [(0.5 - W / 2) / fx * 2, (0.5 - H / 2) / fx * 2, 2.0],
                               rtol=1e-5)


def test_colours_follow_their_pixels():
    frame = np.full((H, W, 3), 128, dtype=np.uint8)
    frame[:6, :8] = (255, 0, 0)  # top left
    frame[-6:, -8:] = (0, 0, 255)  # bottom right
    cloud = point_cloud(frame, _plane(2.0), 60)
    red = (cloud.rgb == (255, 0, 0)).all(axis=1)
    blue = (cloud.rgb == (0, 0, 255)).all(axis=1)
    assert red.sum() == blue.sum() == 48
    assert (cloud.xyz[red, 0] < 0).all() and (cloud.xyz[red, 1] < 0).all()  # x right, y down
    assert (cloud.xyz[blue, 0] > 0).all() and (cloud.xyz[blue, 1] > 0).all()


def test_relative_depth_needs_a_scale():
    inverse = np.full((H, W), 0.5, dtype=np.float32)
    with pytest.raises(OptionError, match="relative depth needs a stated scale"):
        point_cloud(_frame(), inverse, 60, relative=True)
    with pytest.raises(OptionError, match="scale applies to relative depth only"):
        point_cloud(_frame(), _plane(), 60, scale=2.0)
    inverse[:, : W // 2] = 1.0
    inverse[0, 0] = 0.0  # the farthest: clamped at 100 times the nearest
    cloud = point_cloud(_frame(), inverse, 60, relative=True, scale=3.0)
    z = cloud.xyz[:, 2].reshape(H, W)
    np.testing.assert_allclose(z[1:, : W // 2], 3.0, rtol=1e-6)  # d = 1: z = scale
    np.testing.assert_allclose(z[:, W // 2:], 6.0, rtol=1e-6)  # d = 0.5: twice as far
    assert z[0, 0] == pytest.approx(300.0)


def test_frame_layouts_and_containers_give_the_same_cloud():
    hwc = _frame(1)
    depth = np.random.default_rng(2).uniform(1, 5, (H, W)).astype(np.float32)
    reference = point_cloud(hwc, depth, 70)
    variants = [
        (np.ascontiguousarray(hwc.transpose(2, 0, 1)), depth),
        (torch.from_numpy(hwc), torch.from_numpy(depth)),
        (torch.from_numpy(hwc).permute(2, 0, 1), torch.from_numpy(depth)[None]),
        (hwc, depth[None, None]),
        (hwc, torch.from_numpy(depth).double()),
    ]
    for frame, d in variants:
        cloud = point_cloud(frame, d, 70)
        np.testing.assert_array_equal(cloud.xyz, reference.xyz)
        np.testing.assert_array_equal(cloud.rgb, reference.rgb)


def test_depth_of_another_size_is_resized_to_the_frame():
    small = np.ones((H // 2, W // 2), dtype=np.float32)
    small[:, W // 4:] = 3.0  # near on the left, far on the right
    cloud = point_cloud(_frame(), small, 60)
    assert len(cloud) == W * H
    z = cloud.xyz[:, 2].reshape(H, W)
    np.testing.assert_allclose(z[:, : W // 2 - 2], 1.0)
    np.testing.assert_allclose(z[:, W // 2 + 2:], 3.0)
    seam = z[:, W // 2 - 1: W // 2 + 1]
    assert ((seam > 1) & (seam < 3)).all()  # bilinear
    # the resized depth is still placed at the frame's pixel grid
    reference = point_cloud(_frame(), np.ones((H, W), dtype=np.float32), 60)
    np.testing.assert_allclose(cloud.xyz[:, :2].reshape(H, W, 2)[:, :8],
                               reference.xyz[:, :2].reshape(H, W, 2)[:, :8], rtol=1e-6)


def test_stride_subsamples_rows_and_columns():
    frame, depth = _frame(3), np.random.default_rng(4).uniform(1, 5, (H, W)).astype(np.float32)
    full = point_cloud(frame, depth, 60)
    sparse = point_cloud(frame, depth, 60, stride=3)
    assert len(sparse) == math.ceil(H / 3) * math.ceil(W / 3)
    np.testing.assert_array_equal(sparse.xyz, full.xyz.reshape(H, W, 3)[::3, ::3].reshape(-1, 3))
    np.testing.assert_array_equal(sparse.rgb, full.rgb.reshape(H, W, 3)[::3, ::3].reshape(-1, 3))


def test_unusable_and_distant_points_are_dropped():
    depth = np.tile(np.linspace(1, 5, W, dtype=np.float32), (H, 1))
    depth[0, :4] = [np.nan, np.inf, 0.0, -1.0]
    cloud = point_cloud(_frame(), depth, 60)
    assert len(cloud) == W * H - 4 and np.isfinite(cloud.xyz).all() and (cloud.xyz[:, 2] > 0).all()
    near = point_cloud(_frame(), depth, 60, max_distance=3.0)
    assert cloud.xyz[:, 2].max() == pytest.approx(5.0) and near.xyz[:, 2].max() <= 3.0
    assert len(near) == int(np.sum(depth[np.isfinite(depth) & (depth > 0)] <= 3.0))


@pytest.mark.parametrize("change, message", [
    ({"fov_degrees": 0}, "fov_degrees"), ({"fov_degrees": 180}, "fov_degrees"),
    ({"fov_degrees": float("nan")}, "fov_degrees"), ({"fov_degrees": True}, "fov_degrees"),
    ({"fov_degrees": "60"}, "fov_degrees"),
    ({"frame": np.zeros((H, W, 3), np.float32)}, "uint8"),
    ({"frame": np.zeros((4, H, W), np.uint8)}, r"\[3, H, W\]"),
    ({"frame": np.zeros((H, W), np.uint8)}, r"\[3, H, W\]"),
    ({"frame": [[1, 2, 3]]}, "torch tensor or a numpy array"),
    ({"depth": np.ones((H, W), np.int32)}, "floating point"),
    ({"depth": np.ones((2, H, W), np.float32)}, r"\[H, W\]"),
    ({"depth": np.ones((H, 0), np.float32)}, "empty"),
    ({"stride": 0}, "stride"), ({"stride": 1.5}, "stride"),
    ({"max_distance": 0}, "max_distance"), ({"relative": 1}, "relative"),
    ({"relative": True, "scale": -1.0}, "scale"),
])
def test_bad_arguments_say_what_is_wrong(change, message):
    arguments = {"frame": _frame(), "depth": _plane(), "fov_degrees": 60.0, **change}
    with pytest.raises(OptionError, match=message):
        point_cloud(**arguments)


def test_point_cloud_is_exported_and_checks_its_arrays():
    assert sbsconv.point_cloud is point_cloud and "point_cloud" in sbsconv.__all__
    with pytest.raises(OptionError, match="one colour per point"):
        PointCloud(np.zeros((3, 3), np.float32), np.zeros((2, 3), np.uint8))
    with pytest.raises(OptionError, match="uint8"):
        PointCloud(np.zeros((3, 3), np.float32), np.zeros((3, 3), np.int64))
    assert repr(PointCloud(np.zeros((3, 3)), np.zeros((3, 3), np.uint8))) == "PointCloud(3 points)"


# --- files --------------------------------------------------------------------------------------

PLY_PROPERTIES = ["property float x", "property float y", "property float z",
                  "property uchar red", "property uchar green", "property uchar blue"]


def _read_ply(path) -> tuple[list[str], np.ndarray]:
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                      ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    count = int(next(line for line in header if line.startswith("element vertex")).split()[2])
    assert len(raw) - end == count * dtype.itemsize, "nothing after the vertices"
    return header, np.frombuffer(raw, dtype=dtype, offset=end)


def _cloud() -> PointCloud:
    depth = np.random.default_rng(5).uniform(0.5, 20, (H, W)).astype(np.float32)
    return point_cloud(_frame(6), depth, 75)


def test_ply_round_trip(tmp_path):
    cloud = _cloud()
    assert write_ply(tmp_path / "cloud.ply", cloud) == str(tmp_path / "cloud.ply")
    header, vertices = _read_ply(tmp_path / "cloud.ply")
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert f"element vertex {len(cloud)}" in header
    assert [line for line in header if line.startswith("property")] == PLY_PROPERTIES
    assert header[-1] == "end_header"
    xyz = np.stack([vertices["x"], vertices["y"], vertices["z"]], 1)
    rgb = np.stack([vertices["red"], vertices["green"], vertices["blue"]], 1)
    np.testing.assert_array_equal(xyz, cloud.xyz)
    np.testing.assert_array_equal(rgb, cloud.rgb)
    assert os.listdir(tmp_path) == ["cloud.ply"], "no temporary file is left behind"


def test_ply_reads_back_with_plyfile(tmp_path):
    import plyfile  # a test dependency: the reference reader
    cloud = _cloud()
    vertex = plyfile.PlyData.read(str(write_ply(tmp_path / "c.ply", cloud)))["vertex"]
    np.testing.assert_array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), cloud.xyz)
    np.testing.assert_array_equal(np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1),
                                  cloud.rgb)


def test_csv_round_trip(tmp_path):
    cloud = _cloud()
    path = write_csv(tmp_path / "cloud.csv", cloud)
    with open(path) as file:
        assert file.readline() == "x,y,z,red,green,blue\n"
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    assert table.shape == (len(cloud), 6)
    np.testing.assert_array_equal(table[:, :3].astype(np.float32), cloud.xyz)  # exact for float32
    np.testing.assert_array_equal(table[:, 3:], cloud.rgb)
    assert os.listdir(tmp_path) == ["cloud.csv"]


@pytest.mark.parametrize("write", [write_ply, write_csv])
def test_failed_writes_raise_and_leave_nothing(tmp_path, monkeypatch, write):
    cloud = _cloud()
    missing = tmp_path / "missing" / "cloud.out"
    with pytest.raises(OutputError, match="does not exist") as caught:
        write(missing, cloud)
    assert isinstance(caught.value, SbsconvError | OSError) and caught.value.path == str(missing)
    assert os.listdir(tmp_path) == []
    # a failure at the rename keeps the previous file whole and removes the temporary one
    target = tmp_path / "cloud.out"
    target.write_bytes(b"previous")

    def refuse(source, destination):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pointcloud.os, "replace", refuse)
    with pytest.raises(OutputError, match="Permission denied"):
        write(target, cloud)
    assert os.listdir(tmp_path) == ["cloud.out"] and target.read_bytes() == b"previous"
    with pytest.raises(OptionError, match="PointCloud"):
        write(tmp_path / "x", {"xyz": cloud.xyz})


# --- pictures -----------------------------------------------------------------------------------

def _square(z: float, half: float, colour, n: int = 40) -> PointCloud:
    """A square of n x n points at depth z, from -half to half metres in x and y."""
    side = np.linspace(-half, half, n, dtype=np.float32)
    x, y = np.meshgrid(side, side)
    xyz = np.stack([x.ravel(), y.ravel(), np.full(n * n, z, np.float32)], 1)
    return PointCloud(xyz, np.tile(np.array(colour, np.uint8), (n * n, 1)))


def _joined(*clouds: PointCloud) -> PointCloud:
    return PointCloud(np.concatenate([c.xyz for c in clouds]),
                      np.concatenate([c.rgb for c in clouds]))


RED, BLUE = (255, 0, 0), (0, 0, 255)


def test_render_point_cloud_shape_and_background():
    image = render_point_cloud(_cloud(), width=120, height=90)
    assert image.shape == (90, 120, 3) and image.dtype == np.uint8
    assert (image[0, 0] == BACKGROUND).all()  # the framing leaves a margin
    assert (image != BACKGROUND).any(axis=2).mean() > 0.3
    empty = render_point_cloud(PointCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)),
                               width=10, height=8)
    assert empty.shape == (8, 10, 3) and (empty == BACKGROUND).all()
    with pytest.raises(OptionError, match="width"):
        render_point_cloud(_cloud(), width=0)
    with pytest.raises(OptionError, match="yaw_degrees"):
        render_point_cloud(_cloud(), yaw_degrees=float("inf"))


def test_render_point_cloud_shows_the_nearer_plane_where_they_overlap():
    near, far = _square(2.0, 0.4, RED), _square(4.0, 1.2, BLUE)
    views = {}
    for name, view in (("straight", {"yaw_degrees": 0.0, "pitch_degrees": 0.0}), ("default", {})):
        first = render_point_cloud(_joined(near, far), width=160, height=120, **view)
        views[name] = first
        last = render_point_cloud(_joined(far, near), width=160, height=120, **view)
        np.testing.assert_array_equal(first, last)  # the depth decides, not the order
        red = (first == RED).all(axis=2)
        blue = (first == BLUE).all(axis=2)
        assert red.sum() > 400 and blue.sum() > 400
        rows, cols = np.nonzero(red)
        # the near square is whole: no far point shows through its inner part
        r0, r1 = np.percentile(rows, [20, 80]).astype(int)
        c0, c1 = np.percentile(cols, [20, 80]).astype(int)
        assert red[r0:r1, c0:c1].all()
    # straight on, the near square is in the middle, the far one around it
    straight = views["straight"]
    assert (straight[60, 80] == RED).all() and (straight[60, 32] == BLUE).all()


def test_render_point_cloud_orbits_the_centre():
    near, far = _square(2.0, 0.4, RED), _square(4.0, 1.2, BLUE)
    straight = render_point_cloud(_joined(near, far), width=160, height=120, yaw_degrees=0,
                                  pitch_degrees=0)
    turned = render_point_cloud(_joined(near, far), width=160, height=120, yaw_degrees=30,
                                pitch_degrees=0)

    def red_centre(image):
        return np.nonzero((image == RED).all(axis=2))[1].mean()

    def blue_centre(image):
        return np.nonzero((image == BLUE).all(axis=2))[1].mean()

    # seen from the left (the camera turned right), the near square moves right of the far one
    assert abs(red_centre(straight) - blue_centre(straight)) < 2
    assert red_centre(turned) - blue_centre(turned) > 10


def test_depth_histogram_relative_spikes():
    depth = np.full(1000, 0.25, np.float32)
    depth[600:] = 0.75  # 60% at 0.25, 40% at 0.75
    depth[0] = np.nan  # left out
    chart = depth_histogram(torch.from_numpy(depth).reshape(1, 40, 25), relative=True)
    assert chart.shape == (160, 512, 3) and chart.dtype == np.uint8
    heights = (chart != BACKGROUND).any(axis=2).sum(axis=0)
    # 64 bins over 0..1, 8 columns each (the last one a gap): 0.25 -> bin 16, 0.75 -> bin 48
    tall = 160 - 160 // 20
    assert (heights[128:135] == tall).all() and heights[135] == 0
    assert (heights[384:391] == math.ceil(tall * 399 / 599)).all()
    assert heights.sum() == 7 * tall + 7 * math.ceil(tall * 399 / 599)


def test_depth_histogram_metric_spans_min_to_max():
    depth = np.concatenate([np.full(1000, 2.0), np.full(500, 5.0), np.full(10, 3.5)])
    depth = depth.astype(np.float32)
    chart = depth_histogram(depth, relative=False, bins=32, width=256, height=100)
    assert chart.shape == (100, 256, 3)
    heights = (chart != BACKGROUND).any(axis=2).sum(axis=0)
    tall = 100 - 100 // 20
    assert (heights[0:7] == tall).all()  # the minimum, 2 m, in the first bin
    assert (heights[248:255] == math.ceil(tall / 2)).all()  # the maximum, 5 m, in the last one
    assert (heights[128:135] == 1).all()  # 3.5 m: the middle, a few pixels
    assert heights.sum() == 7 * (tall + math.ceil(tall / 2) + 1)
    with pytest.raises(OptionError, match="relative"):
        depth_histogram(depth, relative=None)
    with pytest.raises(OptionError, match="floating-point"):
        depth_histogram(np.zeros(5, np.int32), relative=False)


# --- previews -----------------------------------------------------------------------------------

def test_preview_adds_point_cloud_and_histogram_panels(tiny_model):
    clip = data("testsrc2_odd_height_and_width_444.mp4")  # 321 x 241
    p = sbsconv.preview(clip, at=0.5, model=tiny_model, input_size=70, progress=False,
                        point_cloud=True, histogram=True, fov_degrees=90)
    row = p.rows[0]
    assert [panel.title.split(" (")[0] for panel in row] == [
        "frame 0.5 s", "depth", "full-sbs", "anaglyph", "point cloud", "depth histogram"]
    view, chart = row[4], row[5]
    assert "scale=1.0" in view.title and "fov 90°" in view.title  # relative depth, stated
    assert "0..1" in chart.title
    assert view.image.dtype == torch.uint8 and tuple(view.image.shape) == (3, 241, 321)
    assert (view.image != BACKGROUND).any(0).float().mean() > 0.2
    assert chart.image.dtype == torch.uint8 and tuple(chart.image.shape) == (3, 160, 512)
    assert (chart.image != BACKGROUND).any()
    assert p.image().shape[2] > sum(panel.image.shape[2] for panel in row[:4])  # composed
    # a larger frame is subsampled to at most 640 pixels a side; the default field of view
    big = sbsconv.preview(data("davis_rollercoaster.mp4"), at=1.0, model=tiny_model,
                          input_size=70, progress=False, point_cloud=True).rows[0]  # 960 x 540
    assert len(big) == 5 and tuple(big[4].image.shape) == (3, 270, 480)
    assert "fov 60°" in big[4].title
    with pytest.raises(OptionError, match="histogram"):
        sbsconv.preview(clip, at=0.5, model=tiny_model, histogram="yes")


def test_preview_depth_panels_of_metric_depth():
    preview = importlib.import_module("sbsconv.preview")  # the module, not the function
    frame = torch.from_numpy(_frame(7)).permute(2, 0, 1)[None]
    depth = torch.from_numpy(np.tile(np.linspace(1.5, 6.0, W, dtype=np.float32), (H, 1)))
    panels = preview._depth_panels(frame, {"depth": depth, "kind": "metric", "fov": 50.0},
                                   point_cloud=True, histogram=True)
    assert [p.title for p in panels] == ["point cloud (metric depth, fov 50°)",
                                         "depth histogram (1.5..6 m, near at the left)"]
    expected = render_point_cloud(point_cloud(frame[0], depth, 50.0), width=W, height=H)
    np.testing.assert_array_equal(panels[0].image.permute(1, 2, 0).numpy(), expected)
    chart = depth_histogram(depth, relative=False)
    np.testing.assert_array_equal(panels[1].image.permute(1, 2, 0).numpy(), chart)
    assert preview._depth_panels(frame, {"depth": depth, "kind": "metric", "fov": 50.0},
                                 point_cloud=False, histogram=False) == []


def test_a_subject_mask_keeps_or_drops_the_subject():
    frame = torch.zeros(3, 40, 60, dtype=torch.uint8)
    frame[0, 10:30, 20:40] = 255  # the subject is red
    depth = torch.full((40, 60), 4.0)
    depth[10:30, 20:40] = 2.0
    mask = torch.zeros(1, 20, 30)  # half size: resized to the frame as depth is
    mask[0, 5:15, 10:20] = 1.0
    whole = point_cloud(frame, depth, 60.0)
    subject = point_cloud(frame, depth, 60.0, mask=mask)
    background = point_cloud(frame, depth, 60.0, mask=mask, keep="background")
    assert len(subject) + len(background) == len(whole) == 40 * 60
    assert len(subject) == 20 * 20
    assert np.allclose(subject.xyz[:, 2], 2.0) and (subject.rgb[:, 0] == 255).all()
    assert np.allclose(background.xyz[:, 2], 4.0)
    with pytest.raises(OptionError, match="keep"):
        point_cloud(frame, depth, 60.0, mask=mask, keep="both")
    with pytest.raises(OptionError):
        point_cloud(frame, depth, 60.0, mask=torch.zeros(2, 3, 4))
