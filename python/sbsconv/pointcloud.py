"""Point clouds from depth (issue 14, "Depth as a product"): one frame and its depth become
coloured 3D points, saved as PLY or CSV, or drawn as a picture for previews.

    cloud = sbsconv.point_cloud(frame, depth, fov_degrees=60)        # metric depth, metres
    cloud = sbsconv.point_cloud(frame, inverse, 60, relative=True, scale=1.5)
    write_ply("scene.ply", cloud)                                    # Open3D, MeshLab, Blender ...
    picture = render_point_cloud(cloud)                              # uint8 [H,W,3]

The camera is a pinhole with square pixels whose principal point is the picture's centre:
``fov_degrees`` is the horizontal field of view, so ``fx = fy = (W/2) / tan(fov/2)``, and
pixel (u, v) is seen through its centre (u + 0.5, v + 0.5). Coordinates follow OpenCV's
convention, which Open3D reads as is: x to the right, y down, z forward (the depth along the
optical axis, not the distance from the camera), in metres.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sbsconv.errors import OptionError
from sbsconv.files import write_whole as _write_whole

__all__ = ["PointCloud", "depth_histogram", "export_point_clouds", "point_cloud", "render_point_cloud", "write_csv",
           "write_ply"]

# Relative depth is normalised inverse depth; below this it is read as this (the farthest a
# point can be is then 1 / MIN_INVERSE_DEPTH = 100 times the nearest distance).
MIN_INVERSE_DEPTH = 0.01
BACKGROUND = 32  # the dark grey behind rendered clouds and histogram bars
BAR_COLOUR = (110, 180, 250)

_PLY_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                        ("red", "u1"), ("green", "u1"), ("blue", "u1")])


@dataclass(frozen=True, eq=False, repr=False)
class PointCloud:
    """Coloured points: ``xyz`` float32 [M,3] in metres (x right, y down, z forward) and
    ``rgb`` uint8 [M,3], row i of one the colour of row i of the other."""

    xyz: np.ndarray
    rgb: np.ndarray

    def __post_init__(self) -> None:
        xyz, rgb = self.xyz, self.rgb
        if not isinstance(xyz, np.ndarray) or xyz.ndim != 2 or xyz.shape[1] != 3 \
                or not np.issubdtype(xyz.dtype, np.floating):
            raise OptionError(
                f"a point cloud's xyz must be a float array [M, 3], got {_describe(xyz)}")
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 2 or rgb.shape[1] != 3 \
                or rgb.dtype != np.uint8:
            raise OptionError(
                f"a point cloud's rgb must be a uint8 array [M, 3], got {_describe(rgb)}")
        if len(xyz) != len(rgb):
            raise OptionError(f"a point cloud needs one colour per point: {len(xyz)} points, "
                              f"{len(rgb)} colours")
        object.__setattr__(self, "xyz", np.ascontiguousarray(xyz, dtype=np.float32))
        object.__setattr__(self, "rgb", np.ascontiguousarray(rgb))

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def __repr__(self) -> str:
        return f"PointCloud({len(self)} points)"


# --- checking ---------------------------------------------------------------------------------

def _describe(value) -> str:
    if isinstance(value, np.ndarray | torch.Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        return f"{type(value).__name__} {dtype} {list(value.shape)}"
    return type(value).__name__


def _number(value, name: str, *, low: float = 0.0, high: float = math.inf,
            integer: bool = False) -> float:
    """A real number in the open interval (low, high); `integer` asks for an int."""
    kinds = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(float(value)) \
            or not low < float(value) < high:
        wanted = "an integer" if integer else "a number"
        bounds = f"> {low:g}" if high == math.inf else f"between {low:g} and {high:g} (exclusive)"
        raise OptionError(f"{name} must be {wanted} {bounds}, got {value!r}")
    return int(value) if integer else float(value)


def _as_numpy(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.is_floating_point() and value.dtype != torch.float64:
            value = value.float()  # float16/bfloat16 have no (or no exact) numpy twin
        return value.cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise OptionError(f"{name} must be a torch tensor or a numpy array, got {_describe(value)}")


def _frame_hwc(frame) -> np.ndarray:
    """uint8 [H,W,3] (a view where possible) from [3,H,W] or [H,W,3], torch or numpy."""
    array = _as_numpy(frame, "frame")
    if array.dtype != np.uint8:
        raise OptionError(f"frame must be uint8 RGB, got {_describe(frame)}")
    if array.ndim == 3 and array.shape[0] == 3:  # [3,H,W] also wins for an ambiguous [3,H,3]
        array = array.transpose(1, 2, 0)
    elif not (array.ndim == 3 and array.shape[2] == 3):
        raise OptionError(f"frame must be RGB [3, H, W] or [H, W, 3], got {_describe(frame)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise OptionError(f"frame is empty: {_describe(frame)}")
    return array


def _depth_map(depth, size: tuple[int, int]) -> np.ndarray:
    """float32 [H,W] at `size`, from [h,w], [1,h,w] or [1,1,h,w] (resized bilinearly)."""
    if isinstance(depth, torch.Tensor | np.ndarray) and depth.ndim in (3, 4) \
            and all(n == 1 for n in depth.shape[:-2]):
        depth = depth.reshape(depth.shape[-2:])
    array = _as_numpy(depth, "depth")
    if array.ndim != 2:
        raise OptionError(f"depth must be [H, W] or [1, H, W], got {_describe(depth)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise OptionError(f"depth must be floating point, got {_describe(depth)}")
    if array.size == 0:
        raise OptionError(f"depth is empty: {_describe(depth)}")
    if array.shape == size:
        return array.astype(np.float32, copy=False)
    source = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    resized = F.interpolate(source, size=size, mode="bilinear", align_corners=False)
    return resized[0, 0].numpy()


# --- the cloud ----------------------------------------------------------------------------------

def focal_length(width: int, fov_degrees: float) -> float:
    """The pinhole's focal length in pixels for a picture `width` pixels wide whose
    horizontal field of view is `fov_degrees`."""
    return (width / 2) / math.tan(math.radians(fov_degrees) / 2)


def point_cloud(frame, depth, fov_degrees: float, *, relative: bool = False,
                scale: float | None = None, stride: int = 1,
                max_distance: float | None = None, mask=None, keep: str = "subject") -> PointCloud:
    """The frame's pixels placed in 3D by their depth: one point per pixel (every
    ``stride``-th row and column), coloured by the pixel.

    ``frame``: uint8 RGB, [3,H,W] or [H,W,3] (torch or numpy; a [3,H,3] array is read as
    [3,H,W]). ``depth``: float [H,W] or [1,H,W] (torch or numpy), resized bilinearly to the
    frame's size when it differs. ``fov_degrees``: the horizontal field of view.

    Metric depth (``relative=False``): the values are metres along the optical axis (z).
    Relative depth (``relative=True``): sbsconv's normalised inverse depth in [0, 1]
    (1 = nearest) has no unit, so it needs ``scale``, the distance in metres of inverse depth
    1: ``z = scale / max(d, 0.01)``, which places the farthest points at most 100 times as far
    as the nearest. Points whose z is not finite or not positive are dropped, and so are
    those with z > ``max_distance`` (metres) when it is given.

    ``mask``: a subject mask (float [H,W] or [1,H,W] in [0, 1], as :func:`sbsconv.read_masks`
    gives, resized like the depth): ``keep="subject"`` keeps only the points where it is at
    least 0.5, ``keep="background"`` only the others.
    """
    hwc = _frame_hwc(frame)
    height, width = hwc.shape[:2]
    fov = _number(fov_degrees, "fov_degrees", low=0, high=180)
    if not isinstance(relative, bool):
        raise OptionError(f"relative must be True or False, got {relative!r}")
    if relative:
        if scale is None:
            raise OptionError("relative depth needs a stated scale: pass scale=, the distance "
                              "in metres of the nearest points (inverse depth 1)")
        scale = _number(scale, "scale")
    elif scale is not None:
        raise OptionError(f"scale applies to relative depth only (metric depth is already in "
                          f"metres), got scale={scale!r} with relative=False")
    step = _number(stride, "stride", integer=True)
    limit = None if max_distance is None else _number(max_distance, "max_distance")
    values = _depth_map(depth, (height, width))[::step, ::step]
    if keep not in ("subject", "background"):
        raise OptionError(f"keep must be 'subject' or 'background', got {keep!r}")
    subject = None if mask is None else _depth_map(mask, (height, width))[::step, ::step] >= 0.5

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if relative:
            z = np.float32(scale) / np.maximum(values, np.float32(MIN_INVERSE_DEPTH))
        else:
            z = values
        kept = np.isfinite(z) & (z > 0)
        if limit is not None:
            kept &= z <= limit
        if subject is not None:
            kept &= subject if keep == "subject" else ~subject
    f = focal_length(width, fov)
    # the rays through the pixel centres, per column and per row (z = 1)
    ray_x = ((np.arange(0, width, step) + 0.5 - width / 2) / f).astype(np.float32)
    ray_y = ((np.arange(0, height, step) + 0.5 - height / 2) / f).astype(np.float32)
    rows, cols = np.nonzero(kept)
    z_kept = z[rows, cols].astype(np.float32, copy=False)
    xyz = np.empty((len(z_kept), 3), dtype=np.float32)
    np.multiply(ray_x[cols], z_kept, out=xyz[:, 0])
    np.multiply(ray_y[rows], z_kept, out=xyz[:, 1])
    xyz[:, 2] = z_kept
    rgb = hwc[::step, ::step][rows, cols]
    return PointCloud(xyz=xyz, rgb=np.ascontiguousarray(rgb))


# --- files --------------------------------------------------------------------------------------

def _check_cloud(cloud) -> PointCloud:
    if not isinstance(cloud, PointCloud):
        raise OptionError(
            f"expected a PointCloud (from sbsconv.point_cloud), got {_describe(cloud)}")
    return cloud


def ply_bytes(cloud: PointCloud) -> bytes:
    """The cloud as a binary little-endian PLY file: one vertex element with float x, y, z
    and uchar red, green, blue."""
    cloud = _check_cloud(cloud)
    header = ("ply\n"
              "format binary_little_endian 1.0\n"
              "comment written by sbsconv: metres, x right, y down, z forward (OpenCV axes)\n"
              f"element vertex {len(cloud)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              "end_header\n").encode("ascii")
    vertices = np.empty(len(cloud), dtype=_PLY_VERTEX)
    for i, axis in enumerate("xyz"):
        vertices[axis] = cloud.xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = cloud.rgb[:, i]
    return header + vertices.tobytes()


def write_ply(path: str | os.PathLike[str], cloud: PointCloud) -> str:
    """Writes the cloud as binary little-endian PLY (read by Open3D, MeshLab, CloudCompare,
    Blender); returns the path. Written whole under a temporary name, then renamed."""
    return _write_whole(path, ply_bytes(cloud), "write point cloud")


def write_csv(path: str | os.PathLike[str], cloud: PointCloud) -> str:
    """Writes the cloud as CSV with the header ``x,y,z,red,green,blue``, one row per point
    (coordinates with the 9 significant digits that give float32 values back exactly);
    returns the path. Written whole under a temporary name, then renamed."""
    cloud = _check_cloud(cloud)
    row = "%.9g,%.9g,%.9g,%d,%d,%d\n"
    columns = [*cloud.xyz.T.tolist(), *cloud.rgb.T.tolist()]
    text = "x,y,z,red,green,blue\n" + "".join(map(row.__mod__, zip(*columns, strict=True)))
    return _write_whole(path, text.encode("ascii"), "write point cloud")


# --- pictures -----------------------------------------------------------------------------------

def _size(value, name: str) -> int:
    return _number(value, name, low=0, high=65536, integer=True)


def _angle(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(float(value)):
        raise OptionError(f"{name} must be a finite number of degrees, got {value!r}")
    return math.radians(float(value))


def render_point_cloud(cloud: PointCloud, *, width: int = 640, height: int = 480,
                       yaw_degrees: float = 25.0, pitch_degrees: float = -10.0) -> np.ndarray:
    """The cloud seen by a virtual camera that orbits its centre, as uint8 [height,width,3].

    The centre is the per-axis median of the points (a far background does not drag it
    away). The camera starts where the picture was taken and orbits the centre: positive
    ``yaw_degrees`` turns it to the right (it moves to the left of the scene), negative
    ``pitch_degrees`` tilts it down (it rises above the scene). The points are projected in
    perspective, framed to fill the picture, and drawn nearest-first, each as a square of
    about the pixels a point covers, so nearer points hide farther ones. The background is
    dark grey.
    """
    cloud = _check_cloud(cloud)
    width, height = _size(width, "width"), _size(height, "height")
    yaw, pitch = _angle(yaw_degrees, "yaw_degrees"), _angle(pitch_degrees, "pitch_degrees")
    image = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    points = cloud.xyz.astype(np.float64)
    finite = np.isfinite(points).all(axis=1)
    points, colours = points[finite], cloud.rgb[finite]
    if len(points) == 0:
        return image

    # Camera-to-world rotation of the orbiting camera: yaw about its down axis (y), then
    # pitch about its right axis (x). The camera sits at centre - R @ centre, so that in its
    # own frame a point p is at R^T (p - centre) + centre.
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    turn = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    rotation = turn @ tilt
    centre = np.median(points, axis=0)
    seen = (points - centre) @ rotation + centre  # rows times R == (R^T p)^T

    distance = float(np.linalg.norm(centre)) or float(np.abs(points).max()) or 1.0
    front = seen[:, 2] > 1e-3 * distance
    seen, colours = seen[front], colours[front]
    if len(seen) == 0:
        return image
    a, b = seen[:, 0] / seen[:, 2], seen[:, 1] / seen[:, 2]
    # framing: the central 99% of the points fills 92% of the picture
    a_lo, a_hi = np.percentile(a, [0.5, 99.5])
    b_lo, b_hi = np.percentile(b, [0.5, 99.5])
    spans = [(width * 0.92) / (a_hi - a_lo) if a_hi > a_lo else math.inf,
             (height * 0.92) / (b_hi - b_lo) if b_hi > b_lo else math.inf]
    f = min(spans) if min(spans) < math.inf else focal_length(width, 60.0)
    px = width / 2 + f * (a - (a_lo + a_hi) / 2)
    py = height / 2 + f * (b - (b_lo + b_hi) / 2)

    # each point covers a square of side ~ sqrt(picture area the cloud spans / points)
    covered = max(1.0, f * (a_hi - a_lo)) * max(1.0, f * (b_hi - b_lo))
    side = int(np.clip(math.ceil(1.4 * math.sqrt(covered / len(seen))), 1, 6))
    offsets = np.arange(side) - side // 2
    dx, dy = (o.ravel() for o in np.meshgrid(offsets, offsets))
    cols = (np.floor(px).astype(np.int64)[:, None] + dx[None, :]).ravel()
    rows = (np.floor(py).astype(np.int64)[:, None] + dy[None, :]).ravel()
    depth = np.repeat(seen[:, 2], side * side)
    source = np.repeat(np.arange(len(seen)), side * side)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    pixel = rows[inside] * width + cols[inside]
    depth, source = depth[inside], source[inside]
    if len(pixel) == 0:
        return image
    # z-buffer: sorted by pixel, nearest first within a pixel; the first of each pixel wins
    order = np.lexsort((depth, pixel))
    pixel, source = pixel[order], source[order]
    first = np.ones(len(pixel), dtype=bool)
    first[1:] = pixel[1:] != pixel[:-1]
    image.reshape(-1, 3)[pixel[first]] = colours[source[first]]
    return image


def depth_histogram(depth, *, relative: bool, bins: int = 64, width: int = 512,
                    height: int = 160) -> np.ndarray:
    """The distribution of a depth map's values as a bar chart, uint8 [height,width,3]:
    ``bins`` bars from left to right over the depth from its minimum to its maximum (metric
    depth) or over 0..1 (relative depth, values outside clipped in), each as tall as its
    share of the pixels relative to the fullest bin. Non-finite values are left out. Drawn
    with numpy alone and without text: the caller states the range."""
    if not isinstance(relative, bool):
        raise OptionError(f"relative must be True or False, got {relative!r}")
    bins = _number(bins, "bins", low=0, high=65536, integer=True)
    width, height = _size(width, "width"), _size(height, "height")
    if bins > width:
        raise OptionError(f"bins ({bins}) must not exceed the width ({width} pixels)")
    values = _as_numpy(depth, "depth")
    if not np.issubdtype(values.dtype, np.floating) or values.size == 0:
        raise OptionError(f"depth must be a non-empty floating-point array, got {_describe(depth)}")
    values = values.ravel()
    values = values[np.isfinite(values)].astype(np.float64)
    image = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    if len(values) == 0:
        return image
    if relative:
        counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    else:
        counts, _ = np.histogram(values, bins=bins, range=(values.min(), values.max()))
    top = max(1, height // 20)  # a little room above the fullest bar
    bars = np.ceil(counts / counts.max() * (height - top)).astype(np.int64)
    column_bin = np.arange(width) * bins // width
    column_height = bars[column_bin]
    if width // bins >= 3:  # a one-pixel gap after each bar
        last = np.append(column_bin[1:] != column_bin[:-1], True)
        column_height[last] = 0
    filled = np.arange(height)[:, None] >= height - column_height[None, :]
    image[filled] = BAR_COLOUR
    return image


# ---- point clouds of an exported depth file ----------------------------------------------------


def point_cloud_folder(depth_path: str | os.PathLike[str]) -> str:
    """Where :func:`export_point_clouds` writes for a depth export: ``<export>_pointclouds``
    beside it (the extension dropped)."""
    path = os.fspath(depth_path).rstrip(os.sep)
    stem, ext = os.path.splitext(path)
    return (stem if ext.lower() in (".mkv", ".mp4", ".npy", ".json") else path) + "_pointclouds"


def export_point_clouds(depth_path: str | os.PathLike[str], *, every: int, video: str | None = None,
                        fov_degrees: float | None = None, scale: float | None = None,
                        max_depth: float | None = None, stride: int = 1) -> list[str]:
    """One binary PLY of every ``every``-th frame of a depth export (frames 1, 1 + every, ...),
    into :func:`point_cloud_folder`, named ``frame_000001.ply`` by frame number. Colours come
    from ``video``'s frame at the same time (grey without a video). The field of view:
    ``fov_degrees``, else the depth file's (the model's estimate per frame), else 60 degrees
    with a warning. Relative depth needs ``scale`` (see :func:`point_cloud`). Memory stays flat:
    depth and video are read a batch at a time."""
    import warnings

    from sbsconv import depthio, media
    from sbsconv.errors import SbsconvWarning

    every = int(_number(every, "point_clouds_every", low=1))
    spec, info = depthio.open_depth(depth_path, max_depth=max_depth)
    if info.relative and scale is None:
        raise OptionError("point clouds from relative depth need a stated scale: give point_cloud_scale= "
                          "(metres at the nearest depth)")
    if fov_degrees is None and info.fov_degrees is None:
        warnings.warn(f"{depth_path}: no field of view is known for these point clouds; 60 degrees is used "
                      "(give fov_degrees=)", SbsconvWarning, stacklevel=2)
    folder = point_cloud_folder(depth_path)
    os.makedirs(folder, exist_ok=True)
    frames = None
    start = 0.0
    if video is not None:
        start = float(media.probe(video).start_time or 0.0)  # the clock depth times count from
        frames = _FrameCursor(media.read_frames(video, batch_size=8), start, tolerance=0.5 / max(info.fps, 1e-3))
    written: list[str] = []
    index = 0
    for batch in depthio.read_depth(depth_path, max_depth=max_depth):
        for k, t in enumerate(batch.times):
            if index % every == 0:
                depth = batch.depth[k, 0]
                if frames is not None:
                    rgb = frames.frame_at(t)
                else:
                    rgb = torch.full((3, depth.shape[0], depth.shape[1]), 160, dtype=torch.uint8)
                fov = fov_degrees
                if fov is None and batch.fov is not None:
                    fov = float(batch.fov[k])
                if fov is None:
                    fov = info.fov_degrees or 60.0
                cloud = point_cloud(rgb, depth, float(fov), relative=info.relative,
                                    scale=scale if info.relative else None, stride=stride)
                written.append(write_ply(os.path.join(folder, f"frame_{index + 1:06d}.ply"), cloud))
            index += 1
    return written


class _FrameCursor:
    """Walks a video's frames forward to the one nearest each requested time."""

    def __init__(self, batches, start: float, tolerance: float) -> None:
        self.batches = iter(batches)
        self.start = start
        self.tolerance = tolerance
        self.frames: list[tuple[float, torch.Tensor]] = []

    def frame_at(self, t: float) -> torch.Tensor:
        while True:
            while self.frames and self.frames[0][0] < t - self.tolerance:
                self.frames.pop(0)
            if len(self.frames) >= 2 or (self.frames and self.frames[0][0] > t + self.tolerance):
                break
            batch = next(self.batches, None)
            if batch is None:
                break
            self.frames.extend((float(p) - self.start, batch.data[i]) for i, p in enumerate(batch.pts))
        if not self.frames or abs(self.frames[0][0] - t) > self.tolerance:
            from sbsconv.errors import InputError

            raise InputError(f"the video has no frame at {t:.3f} s for the point cloud", stage="point clouds")
        best = min(self.frames[:2], key=lambda f: abs(f[0] - t))
        return best[1]
