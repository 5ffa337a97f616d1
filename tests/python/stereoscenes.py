"""Synthetic stereo scenes with exact geometry and ground truth, for judging disocclusion fills
(issue 29): layered, fronto-parallel textured planes seen by a moving pinhole camera.

    scene = stereoscenes.make_scene("trucking", size=(320, 180), frames=4)
    truth = stereoscenes.render(scene)            # all frames: truth.source [N,H,W,3] uint8 ...
    frame = stereoscenes.render_frame(scene, 0)   # one frame
    video, depth = stereoscenes.write_scene(scene, tmp_path, truth)   # FFV1 RGB + npy metres
    eyes = stereoscenes.convert_eyes(video, depth, tmp_path)          # sbsconv's eyes, lossless

The geometry is sbsconv's (cpp/sbsconv/stereo/Disparity.cpp, Warp.h). The source is the
centre view; the eyes are cameras translated by -ipd/2 (left) and +ipd/2 (right) along the
camera's x axis, with the same orientation, and their principal points shifted by
+-f*ipd/(2*screen_distance) pixels (off-axis convergence), so that a point at depth Z (metres
along the optical axis, the same for the three cameras) seen at x in the source is at
``x + share * d`` in an eye, ``d = f * ipd * (1/Z - 1/screen_distance)``, ``share`` +1/2 for
the left eye and -1/2 for the right: sbsconv's metric disparity and its eyes' shares exactly.
The focal length is sbsconv's, ``f = (W/2) / tan(fov/2)`` pixels from the horizontal field of
view; pixel centres are at integer coordinates, the principal point at ((W-1)/2, (H-1)/2).

A scene is a far background plane and foreground objects (rectangles, discs, thin vertical
bars), each a plane at constant world depth (fronto-parallel to the world's z axis), each with
its own motion in X, Y and Z. The camera trucks (moves sideways), pans (turns about its
vertical axis: then the planes are slanted in the camera and every pixel is a ray/plane
intersection) or dollies (moves forward). Every pixel of every view is the texture at the
nearest plane its ray meets, point-sampled at the pixel centre (hard object edges); the depth
is that hit's. Nothing is approximated but the uint8 rounding of the colours
(floor(v + 1/2), sbsconv's convention).

Textures are continuous functions of the plane's own coordinates (they move with the object):
a periodic raster, one texel per pixel at the plane's starting depth, sampled bilinearly.
Each raster holds multi-scale (1/f) noise in luminance and colour and a structure pattern
(bricks, checkers, stripes, dots, rings, a grid) with edges softened by a Gaussian of about one
texel, so the texture is rich (stretching or blurring shows) yet smooth enough that a linear
interpolation of the source (what a warp does) reproduces it within about 1 grey level RMS
(45-48 dB luma at 320x180 away from depth edges; bit for bit where the shift is a whole number
of pixels, see :func:`with_integer_shifts`).

Masks, per eye: ``hidden`` marks the pixels whose scene point lies inside the source's picture
but behind a nearer surface there (the disocclusions, tested geometrically: the segment from
the source camera to the point crosses a nearer object); ``outside`` marks those whose point
projects outside the source's picture (x < -1/2 or x > W - 1/2: the strips at the frame's
edges an eye sees beyond it). Neither can be seen in the source frame (``unseen`` = both).

Sizes: scenes are laid out in fractions of the frame width, so any size shows the same scene
(textures keep roughly their pixel scale, their patterns growing slowly with the size; thin
bars keep their width in pixels).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "SCENES",
    "Camera",
    "Eyes",
    "Layer",
    "Scene",
    "StereoFrame",
    "Truth",
    "convert_eyes",
    "disparity",
    "luma",
    "make_scene",
    "near_edges",
    "psnr",
    "read_png_eyes",
    "render",
    "render_frame",
    "with_integer_shifts",
    "write_scene",
]

# ---- the scene description -----------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A fronto-parallel textured plane. Positions and sizes in metres (world), motion per frame.

    ``shape``: "plane" (unbounded: the background), "rect" (``size`` = half width, half height),
    "disc" (``size[0]`` = radius) or "bar" (a rect; named for thin vertical bars)."""

    name: str
    shape: str
    depth: float  # world z at frame 0, metres (the camera starts at z = 0)
    position: tuple[float, float] = (0.0, 0.0)  # the shape's centre (X, Y) at frame 0, metres
    size: tuple[float, float] = (0.0, 0.0)
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)  # metres per frame (X right, Y down, Z)
    pattern: str = "bricks"
    seed: int = 0

    def at(self, t: float) -> tuple[float, float, float]:
        """(X, Y, Z) of the centre at frame t."""
        return (
            self.position[0] + self.velocity[0] * t,
            self.position[1] + self.velocity[1] * t,
            self.depth + self.velocity[2] * t,
        )

    def inside(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Whether plane-local coordinates (metres from the centre) lie on the shape."""
        if self.shape == "plane":
            return np.ones(np.broadcast(u, v).shape, bool)
        if self.shape in ("rect", "bar"):
            return (np.abs(u) <= self.size[0]) & (np.abs(v) <= self.size[1])
        if self.shape == "disc":
            return u * u + v * v <= self.size[0] ** 2
        raise ValueError(f"unknown shape {self.shape!r}")


@dataclass(frozen=True)
class Camera:
    """The source camera's path: ``motion`` "static", "trucking" (``speed`` metres per frame to
    the right), "panning" (``speed`` degrees per frame, positive turns right) or "dolly"
    (``speed`` metres per frame forward)."""

    motion: str = "static"
    speed: float = 0.0

    def pose(self, t: float) -> tuple[np.ndarray, float]:
        """(centre [3] in world metres, yaw in radians) at frame t."""
        centre = np.zeros(3)
        yaw = 0.0
        if self.motion == "trucking":
            centre[0] = self.speed * t
        elif self.motion == "dolly":
            centre[2] = self.speed * t
        elif self.motion == "panning":
            yaw = math.radians(self.speed * t)
        elif self.motion != "static":
            raise ValueError(f"unknown camera motion {self.motion!r}")
        return centre, yaw


@dataclass
class Scene:
    """A scene at one picture size; :func:`make_scene` builds the named ones."""

    name: str
    width: int
    height: int
    frames: int
    layers: tuple[Layer, ...]
    camera: Camera = Camera()
    fov_degrees: float = 60.0  # horizontal
    ipd_mm: float = 63.0
    screen_distance: float = 2.0  # metres: zero disparity there
    fps: int = 25
    description: str = ""
    _textures: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def focal(self) -> float:
        """sbsconv's focal length in pixels: (W/2) / tan(fov/2)."""
        return (self.width / 2.0) / math.tan(math.radians(self.fov_degrees) / 2.0)

    @property
    def moving(self) -> bool:
        return self.frames > 1

    def texture(self, index: int) -> tuple[np.ndarray, float]:
        """Layer ``index``'s texture raster (float32 [h,w,3], 0..255, periodic) and its texel
        size in metres (one pixel at the layer's starting depth)."""
        if index not in self._textures:
            self._textures[index] = _make_texture(self, self.layers[index])
        return self._textures[index]


@dataclass(frozen=True)
class StereoFrame:
    """One frame's truth. Images uint8 [H,W,3] RGB; depths float32 [H,W], metres along the
    optical axis (the same axis for the three cameras); masks bool [H,W]."""

    source: np.ndarray
    depth: np.ndarray
    left: np.ndarray
    right: np.ndarray
    left_depth: np.ndarray
    right_depth: np.ndarray
    left_hidden: np.ndarray  # the eye's point is behind a nearer surface in the source
    right_hidden: np.ndarray
    left_outside: np.ndarray  # the eye's point projects outside the source's picture
    right_outside: np.ndarray

    @property
    def left_unseen(self) -> np.ndarray:
        return self.left_hidden | self.left_outside

    @property
    def right_unseen(self) -> np.ndarray:
        return self.right_hidden | self.right_outside


@dataclass(frozen=True)
class Truth:
    """Every frame of a scene: the fields of :class:`StereoFrame` stacked, [N,...]."""

    source: np.ndarray
    depth: np.ndarray
    left: np.ndarray
    right: np.ndarray
    left_depth: np.ndarray
    right_depth: np.ndarray
    left_hidden: np.ndarray
    right_hidden: np.ndarray
    left_outside: np.ndarray
    right_outside: np.ndarray

    def eye(self, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image, depth, hidden, outside) of ``side`` ("left" or "right")."""
        return (
            getattr(self, side),
            getattr(self, f"{side}_depth"),
            getattr(self, f"{side}_hidden"),
            getattr(self, f"{side}_outside"),
        )


# ---- the named scenes ----------------------------------------------------------------------------

SCENES = ("trucking", "panning", "dolly", "thin", "large", "still")
DEFAULT_FRAMES = 48


def make_scene(
    name: str,
    size: tuple[int, int] = (320, 180),
    frames: int | None = None,
    *,
    ipd_mm: float = 63.0,
    screen_distance: float = 2.0,
    fov_degrees: float = 60.0,
) -> Scene:
    """The scene ``name`` (one of :data:`SCENES`) at ``size`` = (width, height), ``frames``
    long (default 48; "still" is always one frame).

    - trucking: the camera moves right; a rectangle (4 m), a disc (2.5 m, coming nearer) and a
      square (1.4 m, moving up) move on their own before a brick wall at 12 m.
    - panning: the camera turns right 0.25 degrees a frame (pure rotation: no parallax of its
      own); objects at 5, 2.2 and 1.2 m move sideways, so what they hide shows in other frames.
    - dolly: the camera moves forward 3 cm a frame towards objects at 3.5 and 5 m (one drifting
      sideways) before a wall at 14 m.
    - thin: two vertical bars 3 and 5 pixels wide (1.5 and 2.5 m, moving at different speeds)
      and a panel at 4 m before a wall at 10 m; the camera trucks slowly.
    - large: a big near panel (1 m, 40 % of the width, 60 % of the height) drifting sideways,
      a disc at 3 m, a wall at 8 m: wide disocclusions.
    - still: one frame ("Middlebury-style" pair): a wall at 9 m and five layers at 5, 3, 1.8,
      1.2 (a 4-pixel bar) and 0.9 m, all richly textured.
    """
    width, height = int(size[0]), int(size[1])
    if width < 16 or height < 16:
        raise ValueError("scenes need at least 16x16 pixels")
    n = 1 if name == "still" else int(frames if frames is not None else DEFAULT_FRAMES)
    if n < 1:
        raise ValueError("a scene needs at least one frame")
    span = 2.0 * math.tan(math.radians(fov_degrees) / 2.0)  # frame widths per metre of depth
    px = 1.0 / width  # one pixel as a fraction of the frame width

    def metres(fraction: float, depth: float) -> float:
        return fraction * span * depth

    def obj(label, shape, depth, x, y, half_w, half_h, pattern, seed, vx=0.0, vy=0.0, vz=0.0):
        # x, y (the centre), the half sizes, vx, vy (per frame): fractions of the frame width
        # at the layer's depth; vz: metres per frame
        return Layer(label, shape, depth, (metres(x, depth), metres(y, depth)),
                     (metres(half_w, depth), metres(half_h, depth)),
                     (metres(vx, depth), metres(vy, depth), vz), pattern, seed)

    def wall(depth: float, pattern: str, seed: int) -> Layer:
        return Layer("background", "plane", depth, pattern=pattern, seed=seed)

    camera = Camera()
    if name == "trucking":
        layers = (
            wall(12.0, "bricks", 1),
            obj("rect", "rect", 4.0, -0.22, 0.04, 0.10, 0.16, "checker", 2, vx=0.0035),
            obj("disc", "disc", 2.5, 0.22, -0.08, 0.09, 0.09, "rings", 3, vx=-0.003, vz=-0.008),
            obj("square", "rect", 1.4, 0.0, 0.12, 0.07, 0.07, "stripes", 4, vy=-0.0015))
        camera = Camera("trucking", 0.02)
        text = "camera trucking right; objects moving on their own"
    elif name == "panning":
        layers = (
            wall(15.0, "grid", 11),
            obj("rect", "rect", 5.0, -0.25, 0.0, 0.12, 0.2, "bricks", 12, vx=0.003),
            obj("disc", "disc", 2.2, 0.18, 0.05, 0.1, 0.1, "dots", 13, vx=-0.004),
            obj("square", "rect", 1.2, 0.02, -0.15, 0.06, 0.08, "checker", 14, vx=0.002))
        camera = Camera("panning", 0.25)
        text = "camera panning right; objects moving sideways"
    elif name == "dolly":
        layers = (
            wall(14.0, "bricks", 21),
            obj("rect", "rect", 5.0, 0.2, 0.02, 0.1, 0.14, "stripes", 22),
            obj("disc", "disc", 3.5, -0.15, -0.04, 0.08, 0.08, "rings", 23, vx=0.002))
        camera = Camera("dolly", 0.03)
        text = "camera moving forward"
    elif name == "thin":
        layers = (
            wall(10.0, "stripes", 31),
            obj("panel", "rect", 4.0, 0.22, 0.0, 0.12, 0.22, "bricks", 32, vx=-0.001),
            obj("bar5", "bar", 2.5, -0.2, 0.0, 2.5 * px, 0.42, "stripes", 33, vx=0.004),
            obj("bar3", "bar", 1.5, 0.05, 0.02, 1.5 * px, 0.4, "dots", 34, vx=-0.003))
        camera = Camera("trucking", 0.008)
        text = "thin vertical bars (3 and 5 px) moving; camera trucking slowly"
    elif name == "large":
        layers = (
            wall(8.0, "bricks", 41),
            obj("disc", "disc", 3.0, 0.3, -0.12, 0.08, 0.08, "rings", 42, vx=-0.002),
            obj("panel", "rect", 1.0, -0.05, 0.02, 0.2, 0.3 * height / width, "checker", 43,
                vx=0.0025))
        text = "a big near panel drifting sideways: wide disocclusions"
    elif name == "still":
        layers = (
            wall(9.0, "bricks", 51),
            obj("panel", "rect", 5.0, -0.28, -0.05, 0.13, 0.2, "grid", 52),
            obj("disc", "disc", 3.0, 0.25, 0.02, 0.11, 0.11, "rings", 53),
            obj("box", "rect", 1.8, 0.02, 0.14, 0.09, 0.07, "checker", 54),
            obj("bar", "bar", 1.2, -0.08, 0.0, 2 * px, 0.4, "stripes", 55),
            obj("ball", "disc", 0.9, 0.34, 0.16, 0.05, 0.05, "dots", 56))
        text = "one frame, six layers from 0.9 to 9 m (Middlebury-style still pair)"
    else:
        raise ValueError(f"unknown scene {name!r}: one of {', '.join(SCENES)}")
    return Scene(name=name, width=width, height=height, frames=n, layers=layers, camera=camera,
                 fov_degrees=fov_degrees, ipd_mm=ipd_mm, screen_distance=screen_distance,
                 description=text)


def with_integer_shifts(scene: Scene) -> Scene:
    """The scene with every layer moved to the nearest depth at which each eye's shift (d/2)
    is a whole number of pixels (distinct per layer, the order kept) and without motion in
    depth. With a static or trucking camera an eye is then an exact shift of the source on
    every surface both see: a correct warp reproduces it bit for bit there."""
    if scene.camera.motion not in ("static", "trucking"):
        raise ValueError(
            "integer shifts need fronto-parallel planes at constant depth: "
            "a static or trucking camera"
        )
    k = scene.focal * scene.ipd_mm / 1000.0 / 2.0  # half disparity = k * (1/Z - 1/S)
    layers = list(scene.layers)
    previous = -math.inf
    for index in sorted(range(len(layers)), key=lambda i: -layers[i].depth):
        layer = layers[index]
        shift = max(round(k * (1.0 / layer.depth - 1.0 / scene.screen_distance)), previous + 1)
        inverse = shift / k + 1.0 / scene.screen_distance
        if inverse <= 0:
            raise ValueError("no depth gives that shift: the scene is too far for this size")
        previous = shift
        layers[index] = dataclasses.replace(layer, depth=1.0 / inverse,
                                            velocity=(layer.velocity[0], layer.velocity[1], 0.0))
    return dataclasses.replace(scene, layers=tuple(layers), _textures={},
                               description=scene.description + ", integer shifts")


# ---- textures ------------------------------------------------------------------------------------


def _gaussian(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """The Fourier transform of a periodic Gaussian blur of ``sigma`` texels (rfft2 layout)."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2.0 * math.pi**2 * sigma**2 * (kx**2 + ky**2))


def _noise(rng: np.random.Generator, shape: tuple[int, int], blur: np.ndarray) -> np.ndarray:
    """Periodic multi-scale noise: white noise shaped to a 1/f amplitude spectrum (every scale
    from the raster's size down to a few texels), unit standard deviation."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    k = np.sqrt(kx**2 + ky**2)
    spectrum = np.fft.rfft2(rng.standard_normal(shape)) / (k + 1.0 / 96.0) * blur
    spectrum[0, 0] = 0.0
    out = np.fft.irfft2(spectrum, s=shape)
    return out / max(float(out.std()), 1e-9)


def _pattern(
    kind: str, shape: tuple[int, int], scale: float, rng: np.random.Generator
) -> np.ndarray:
    """A hard-edged structure in [0, 1] on the raster's texel grid."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "bricks":
        bw, bh, mortar = 44 * scale, 18 * scale, max(1.5, 3 * scale)
        row = np.floor(y / bh)
        xs = x + (row % 2) * bw / 2
        joint = ((y % bh) < mortar) | ((xs % bw) < mortar)
        tone = rng.uniform(0.55, 1.0, (int(h / bh) + 2, int(w / bw) + 3))
        return np.where(
            joint, 0.0, tone[row.astype(int), np.floor(xs / bw).astype(int) % tone.shape[1]]
        )
    if kind == "checker":
        c = max(6.0, 22 * scale)
        return ((np.floor(x / c) + np.floor(y / c)) % 2).astype(np.float64)
    if kind == "stripes":
        period = max(6.0, 15 * scale)
        return ((x + 0.35 * y) % period < period * 0.45).astype(np.float64)
    if kind == "dots":
        period = max(8.0, 20 * scale)
        dx = (x % period) - period / 2
        dy = (y % period) - period / 2
        return (dx * dx + dy * dy < (0.3 * period) ** 2).astype(np.float64)
    if kind == "rings":
        period = max(6.0, 12 * scale)
        r = np.hypot(x - w / 2, y - h / 2)
        return ((r % period) < period / 2).astype(np.float64)
    if kind == "grid":
        period = max(8.0, 26 * scale)
        line = max(1.5, 2.5 * scale)
        return (((x % period) < line) | ((y % period) < line)).astype(np.float64)
    raise ValueError(f"unknown pattern {kind!r}")


def _make_texture(scene: Scene, layer: Layer) -> tuple[np.ndarray, float]:
    camera_z = float(scene.camera.pose(0)[0][2])
    texel = max(layer.depth - camera_z, 0.05) / scene.focal  # metres per texel: 1 px at the start
    if layer.shape == "plane":
        h, w = 2 * scene.height + 64, 2 * scene.width + 64
    else:
        reach = layer.size[0] if layer.shape == "disc" else max(layer.size)
        h = int(2 * (layer.size[0] if layer.shape == "disc" else layer.size[1]) / texel) + 48
        w = int(2 * reach / texel) + 48
        h, w = max(h, 48), max(w, 48)
    rng = np.random.default_rng(1000 + layer.seed)
    scale = max(0.4, scene.width / 1280.0) ** 0.5
    fine = _gaussian((h, w), 0.9)
    soft = _gaussian((h, w), 1.1)
    structure = _pattern(layer.pattern, (h, w), scale, rng)
    structure = np.fft.irfft2(np.fft.rfft2(structure) * soft, s=(h, w))
    lum = _noise(rng, (h, w), fine)
    chroma1 = _noise(rng, (h, w), fine)
    chroma2 = _noise(rng, (h, w), fine)
    base = rng.uniform(40, 215, 3)
    other = np.clip(base + rng.choice([-1, 1], 3) * rng.uniform(50, 110, 3), 10, 245)
    tex = base[None, None, :] + (other - base)[None, None, :] * structure[..., None]
    tex = tex + 22.0 * lum[..., None]
    tex = (
        tex
        + 9.0 * chroma1[..., None] * np.array([1.0, -0.6, -0.4])
        + 9.0 * chroma2[..., None] * np.array([-0.3, -0.3, 1.0])
    )
    return np.clip(tex, 0.0, 255.0).astype(np.float32), texel


def _sample(texture: np.ndarray, tu: np.ndarray, tv: np.ndarray) -> np.ndarray:
    """Bilinear samples [n,3] of a periodic raster at texel coordinates (float64)."""
    h, w = texture.shape[:2]
    flat = texture.reshape(h * w, 3)
    u0 = np.floor(tu)
    v0 = np.floor(tv)
    fu = (tu - u0)[:, None]
    fv = (tv - v0)[:, None]
    i0 = u0.astype(np.int64) % w
    j0 = (v0.astype(np.int64) % h) * w
    i1 = (i0 + 1) % w
    j1 = (j0 + w) % (h * w)
    top = flat[j0 + i0] * (1 - fu) + flat[j0 + i1] * fu
    bottom = flat[j1 + i0] * (1 - fu) + flat[j1 + i1] * fu
    return top * (1 - fv) + bottom * fv


# ---- rendering -----------------------------------------------------------------------------------


def _rotation(yaw: float) -> np.ndarray:
    """World-from-camera rotation about the vertical (y) axis; positive yaw turns right."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass
class _View:
    label: np.ndarray  # int [H,W], layer index (-1: nothing)
    depth: np.ndarray  # float64 [H,W], z along the optical axis
    hit: tuple[np.ndarray, np.ndarray, np.ndarray]  # world X, Y, Z of each pixel's point
    image: np.ndarray  # uint8 [H,W,3]


def _order(scene: Scene, t: float) -> list[int]:
    """Layer indices from the farthest to the nearest at frame t."""
    return sorted(range(len(scene.layers)), key=lambda i: -scene.layers[i].at(t)[2])


def _view(scene: Scene, t: float, offset: float) -> _View:
    """The view of the camera translated by ``offset`` metres along its x axis (0: the source),
    its principal point shifted by offset * f / screen_distance pixels."""
    w, h, f = scene.width, scene.height, scene.focal
    centre, yaw = scene.camera.pose(t)
    rot = _rotation(yaw)
    origin = centre + rot[:, 0] * offset
    cx = (w - 1) / 2.0 + offset * f / scene.screen_distance
    cy = (h - 1) / 2.0
    dx = (np.arange(w, dtype=np.float64) - cx) / f  # [W]
    dy = (np.arange(h, dtype=np.float64) - cy) / f  # [H]
    # world direction of each ray with camera z = 1: x and z depend on the column only
    wx = rot[0, 0] * dx + rot[0, 2]
    wz = rot[2, 0] * dx + rot[2, 2]
    label = np.full((h, w), -1, np.int64)
    depth = np.full((h, w), np.inf)
    hx = np.zeros((h, w))
    hy = np.zeros((h, w))
    hz = np.zeros((h, w))
    for index in _order(scene, t):
        layer = scene.layers[index]
        lx, ly, lz = layer.at(t)
        s = (lz - origin[2]) / wz  # [W]: the ray parameter = depth along the optical axis
        if not np.any(s > 0):
            continue
        px = origin[0] + s * wx  # [W]
        py = origin[1] + s[None, :] * dy[:, None]  # [H,W]
        on = layer.inside((px - lx)[None, :], py - ly) & (s > 0)[None, :]
        label[on] = index
        depth = np.where(on, s[None, :], depth)
        hx = np.where(on, px[None, :], hx)
        hy = np.where(on, py, hy)
        hz[on] = lz
    image = np.zeros((h, w, 3), np.uint8)
    for index in np.unique(label):
        if index < 0:
            continue
        layer = scene.layers[index]
        lx, ly, _ = layer.at(t)
        texture, texel = scene.texture(int(index))
        on = label == index
        colour = _sample(
            texture,
            (hx[on] - lx) / texel + texture.shape[1] / 2.0,
            (hy[on] - ly) / texel + texture.shape[0] / 2.0,
        )
        image[on] = np.clip(np.floor(colour + 0.5), 0, 255).astype(np.uint8)
    return _View(label, depth, (hx, hy, hz), image)


def _unseen(scene: Scene, t: float, eye: _View, share: float) -> tuple[np.ndarray, np.ndarray]:
    """(hidden, outside) for an eye's view: whether each pixel's point is behind a nearer
    surface as the source camera sees it, or projects outside the source's picture."""
    w, h, f = scene.width, scene.height, scene.focal
    centre, _ = scene.camera.pose(t)
    hx, hy, hz = eye.hit
    valid = eye.label >= 0
    # the source position of each eye pixel: x_source = x_eye - share * d(Z), Z shared by the
    # cameras (they differ by a translation along their x axis)
    inverse = 1.0 / np.where(valid, eye.depth, 1.0)
    d = f * scene.ipd_mm / 1000.0 * (inverse - 1.0 / scene.screen_distance)
    xs = np.arange(w, dtype=np.float64)[None, :] - share * d
    outside = valid & ((xs < -0.5) | (xs > w - 0.5))
    hidden = np.zeros((h, w), bool)
    for layer in scene.layers:
        lx, ly, lz = layer.at(t)
        nearer = valid & (hz > lz) & (lz > centre[2])
        if not nearer.any():
            continue
        lam = (lz - centre[2]) / np.where(nearer, hz - centre[2], 1.0)
        qx = centre[0] + lam * (hx - centre[0])
        qy = centre[1] + lam * (hy - centre[1])
        hidden |= nearer & layer.inside(qx - lx, qy - ly)
    return hidden & ~outside, outside


def render_frame(scene: Scene, t: int) -> StereoFrame:
    """Frame ``t``'s source, exact depth, exact eyes and their masks (see the module's
    docstring)."""
    ipd = scene.ipd_mm / 1000.0
    source = _view(scene, t, 0.0)
    left = _view(scene, t, -ipd / 2.0)
    right = _view(scene, t, ipd / 2.0)
    if (source.label < 0).any():
        raise ValueError(f"scene {scene.name!r}: frame {t} has pixels that see nothing")
    left_hidden, left_outside = _unseen(scene, t, left, 0.5)
    right_hidden, right_outside = _unseen(scene, t, right, -0.5)
    return StereoFrame(
        source=source.image,
        depth=source.depth.astype(np.float32),
        left=left.image,
        right=right.image,
        left_depth=left.depth.astype(np.float32),
        right_depth=right.depth.astype(np.float32),
        left_hidden=left_hidden,
        right_hidden=right_hidden,
        left_outside=left_outside,
        right_outside=right_outside,
    )


def render(scene: Scene, frames: range | list[int] | None = None) -> Truth:
    """Every frame (or those listed) of ``scene``, stacked."""
    items = [
        render_frame(scene, t) for t in (frames if frames is not None else range(scene.frames))
    ]
    return Truth(
        **{
            name: np.stack([getattr(item, name) for item in items])
            for name in Truth.__dataclass_fields__
        }
    )


# ---- sbsconv's formulas, measures ----------------------------------------------------------------


def disparity(scene: Scene, depth: np.ndarray) -> np.ndarray:
    """sbsconv's metric disparity (pixels, float32, the shape of ``depth``) for this scene's
    camera: ``f * ipd * (1/Z - 1/screen_distance)``, computed as sbsconv.stereo does (float32
    focal length from the float32 field of view, depth clamped at 1 mm)."""
    fov = np.float32(scene.fov_degrees)
    focal = np.float32(scene.width / 2.0) / np.tan(fov * np.float32(math.pi / 360.0))
    inverse = np.float32(1.0) / np.maximum(depth.astype(np.float32), np.float32(1e-3))
    return (
        (inverse - np.float32(1.0 / scene.screen_distance))
        * (focal * np.float32(scene.ipd_mm / 1000.0))
    ).astype(np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.709 luma of uint8 RGB [...,3] as float64 on the 0..255 scale (full range, no rounding)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB, peak 255) between two arrays of equal shape, over ``mask`` (broadcast to them)
    when given: the squared errors pooled over every masked element. NaN for an empty mask."""
    err = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if mask is not None:
        mask = np.broadcast_to(mask, err.shape)
        if not mask.any():
            return float("nan")
        err = err[mask]
    mse = float(err.mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def near_edges(depth: np.ndarray, radius: int = 2, relative: float = 0.01) -> np.ndarray:
    """Pixels within ``radius`` of a depth discontinuity (neighbours differing by more than
    ``relative``), for depth [...,H,W]."""
    z = np.asarray(depth, np.float64)
    edge = np.zeros(z.shape, bool)
    step_x = np.abs(np.diff(z, axis=-1)) > relative * np.minimum(z[..., 1:], z[..., :-1])
    step_y = np.abs(np.diff(z, axis=-2)) > relative * np.minimum(z[..., 1:, :], z[..., :-1, :])
    edge[..., 1:] |= step_x
    edge[..., :-1] |= step_x
    edge[..., 1:, :] |= step_y
    edge[..., :-1, :] |= step_y
    return _dilate(edge, radius)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(radius):
        grown = out.copy()
        grown[..., 1:] |= out[..., :-1]
        grown[..., :-1] |= out[..., 1:]
        grown[..., 1:, :] |= out[..., :-1, :]
        grown[..., :-1, :] |= out[..., 1:, :]
        out = grown
    return out


# ---- files: the scene for sbsconv, its eyes back -------------------------------------------------


def write_scene(
    scene: Scene, folder: str | os.PathLike[str], truth: Truth | None = None
) -> tuple[Path, Path]:
    """Writes the scene's source frames as a lossless video (FFV1, 8-bit RGB, Matroska, at
    ``scene.fps``) and their exact depth in metres as an sbsconv depth file (npy, float32,
    with its sidecar: each frame's time and the field of view, so that
    ``sbsconv.convert(video, out, depth=depth_file)`` uses the scene's focal length).
    Returns (video path, depth path)."""
    truth = truth if truth is not None else render(scene)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / f"{scene.name}_{scene.width}x{scene.height}.mkv"
    frames = np.ascontiguousarray(truth.source)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", f"{scene.width}x{scene.height}", "-r", str(scene.fps), "-i", "-",
                    "-c:v", "ffv1", "-pix_fmt", "bgr0", str(video)],
                   input=frames.tobytes(), check=True, capture_output=True)
    # The depth file as sbsconv's npy export writes it (Note [Depth files] in
    # cpp/sbsconv/media/DepthFile.h): one float32 [N,H,W] array in metres and its sidecar. The
    # field of view goes in per frame (frames.fov), which is what a conversion reads back; a
    # top-level "fov_degrees" alone (fov_source "given") is not used by the renderer.
    depth_path = folder / f"{scene.name}_{scene.width}x{scene.height}_depth.npy"
    n = truth.depth.shape[0]
    np.save(depth_path, np.ascontiguousarray(truth.depth, dtype=np.float32))
    sidecar = {
        "sbsconv_depth": 1,
        "format": "npy",
        "file": depth_path.name,
        "units": "metres",
        "relative": False,
        "encoding": {"type": "float32", "depth": "value"},
        "width": scene.width,
        "height": scene.height,
        "frame_count": n,
        "fps": f"{scene.fps}/1",
        "time_base": f"1/{scene.fps}",
        "source_start": 0.0,
        "window_start": 0.0,
        "fov_degrees": float(scene.fov_degrees),
        "fov_source": "per frame in frames.fov (horizontal, degrees): the synthetic scene's camera",
        "scene_cuts": [],
        "model": f"stereoscenes:{scene.name} (exact depth)",
        "frames": {
            "time": [i / scene.fps for i in range(n)],
            "fov": [float(scene.fov_degrees)] * n,
        },
    }
    Path(str(depth_path) + ".json").write_text(json.dumps(sidecar, indent=1))
    return video, depth_path


@dataclass(frozen=True)
class Eyes:
    """sbsconv's eyes read back losslessly: uint8 RGB [N,H,W,3] each, the seconds the
    conversion took (the engine's run, PNG writing included) and the engine's field of view."""

    left: np.ndarray
    right: np.ndarray
    seconds: float
    fov_degrees: float | None
    warnings: tuple[str, ...]


def read_png_eyes(folder: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """The full side-by-side PNG frames (frame_000001.png ...) in ``folder``, split into
    (left, right) uint8 RGB [N,H,W,3]."""
    import cv2

    files = sorted(Path(folder).glob("frame_*.png"))
    if not files:
        raise FileNotFoundError(f"no frame_*.png in {folder}")
    packed = np.stack(
        [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in files]
    )
    half = packed.shape[2] // 2
    return packed[:, :, :half], packed[:, :, half:]


def convert_eyes(
    video: str | os.PathLike[str],
    depth: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    tag: str = "eyes",
    **options,
) -> Eyes:
    """Runs sbsconv's conversion of ``video`` with depth from ``depth`` (and ``options``, as
    for sbsconv.convert: e.g. ``fill=``), full side by side, and reads the eyes back
    losslessly: the same run as ``sbsconv.convert`` (the same plan and engine) with the
    engine's per-frame PNG output on (its ``image_dir``, which convert() turns on only for
    previews); the H.264 video is written too, at ``folder/<tag>.mkv``. Unknown options raise
    sbsconv.errors.OptionError, as convert() does."""
    from sbsconv import plan as planning
    from sbsconv.engine import run_engine, warn_all
    from sbsconv.options import ConvertOptions

    folder = Path(folder)
    options = ConvertOptions.merged(
        None, {"layout": "full-sbs", "resume": False, **options, "depth": os.fspath(depth)}
    )
    output = str(folder / f"{tag}.mkv")
    images = folder / f"{tag}_frames"
    images.mkdir(parents=True, exist_ok=True)
    for old in images.glob("frame_*.png"):
        old.unlink()
    t0 = time.perf_counter()
    plan = planning.build_plan(
        os.fspath(video),
        planning.resolve_output(os.fspath(video), output, options),
        options,
        images_dir=images,
    )
    run = run_engine(plan.engine, Path(video).name, False, None)
    seconds = time.perf_counter() - t0
    warn_all(os.fspath(video), run.warnings)
    left, right = read_png_eyes(images)
    return Eyes(left, right, seconds, run.fov_degrees, tuple(run.warnings))
