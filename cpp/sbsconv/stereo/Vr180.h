#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>

namespace sbsconv {

// Note [VR180 projection]
// A converted eye is an ordinary flat picture: what a pinhole camera looking along +z sees,
// with a known horizontal field of view `hfov`. A VR180 player instead expects each eye as
// half of an equirectangular panorama: a square canvas of S x S pixels whose columns are
// longitude, -90 degrees at the left edge to +90 at the right, and whose rows are latitude,
// +90 at the top to -90 at the bottom. Canvas pixel (x, y) has its centre at
//   lon = ((x + 0.5) / S - 0.5) * 180,   lat = (0.5 - (y + 0.5) / S) * 180   (degrees).
// Re-projection is backward mapping: every canvas pixel asks which source point it sees.
// Its viewing direction, with y up and the camera looking along +z, is the unit vector
//   d = (cos(lat) sin(lon), sin(lat), cos(lat) cos(lon)).
// The pinhole has square pixels, the principal point at the picture's centre (cx = W/2,
// cy = H/2 in coordinates where pixel i covers [i, i+1)) and focal length
// f = (W/2) / tan(hfov/2), so that the picture's left and right edges lie at -hfov/2 and
// +hfov/2 on the equator. A direction in front of the camera (dz > 0) meets the image plane at
//   u = cx + f dx/dz = cx + f tan(lon),   v = cy - f dy/dz = cy - f tan(lat) / cos(lon)
// (v grows downwards, as rows do). The canvas shows the source there only when (u, v) lies
// inside the picture, [0, W] x [0, H]; everywhere else it is black. Two consequences worth
// knowing: the picture's vertical edges stay vertical meridians (u depends on lon alone),
// while its top and bottom edges bow towards the poles away from the centre (v grows with
// 1/cos(lon)); and the vertical field of view is 2 atan(H / (2f)), not hfov * H / W.
//
// The mapping is a sampling grid for at::grid_sampler_2d (bilinear, zero padding,
// align_corners = false, in whose normalised coordinates -1 and +1 are the picture's outer
// edges: x = 2u/W - 1, y = 2v/H - 1). Visible points are clamped to the outermost pixel
// centres, so the covered area is the picture's whole footprint at full brightness (no
// half-dark seam where bilinear filtering would blend the edge pixel with the zero padding);
// points that are not visible get a coordinate far outside [-1, 1], where zero padding makes
// them exactly black. The grid is built on the host in double precision and stored as float32
// (see Note [No float64 on devices]); the sampling itself runs in float32 on the eyes' device.

// The sampling grid, [1, canvas, canvas, 2] (x then y, grid_sample's normalised coordinates,
// align_corners = false) with the dtype and device of `options` (float32 unless asked
// otherwise; it must be a floating type). Points the source does not show are outside
// [-1, 1]. Throws sbsconv::Error (Option) unless the sizes are positive, canvas <= 16384
// and hfov_degrees is within (1, 179).
at::Tensor vr180_grid(
    int64_t src_height,
    int64_t src_width,
    double hfov_degrees,
    int64_t canvas,
    const at::TensorOptions& options);

// Re-projects eye images, uint8 [N,3,H,W] on any device and in any memory layout, to VR180
// half-equirectangular canvases, uint8 [N,3,canvas,canvas] (contiguous) on the same device.
// Bilinear, in float32, rounded to nearest. Builds the grid on every call; a caller that
// projects many batches of one size should keep a Vr180Projector.
at::Tensor project_vr180(const at::Tensor& eyes, double hfov_degrees, int64_t canvas);

// The canvas size a conversion uses when none is given: the size at which the source keeps
// its resolution at its centre. There the source has f * pi / 180 pixels per degree (f is the
// focal length above, which depends on the width and hfov only) and the canvas S / 180, so
// S = pi * f, rounded up to an even number (for 4:2:0 encoding) and clamped to [256, 2880]
// (2880 per eye is the largest size common VR180 players and encoders accept). Away from the
// centre the source is denser than the canvas (tan grows faster than the angle), so the
// edges lose some detail; that is the price of the fixed maximum. Validates like vr180_grid.
int64_t vr180_default_canvas(int64_t src_height, int64_t src_width, double hfov_degrees);

// project_vr180 with the last grid kept: the engine projects every batch with the same eye
// size, field of view and canvas, so the grid (canvas^2 * 8 bytes: 66 MB at 2880) is built
// and uploaded once. It is rebuilt whenever the eye size, hfov, canvas or device changes.
// Holds one grid at a time.
//
// Threading: not thread-safe; use one projector per thread (or per stage).
class Vr180Projector {
 public:
  // As project_vr180.
  at::Tensor project(const at::Tensor& eyes, double hfov_degrees, int64_t canvas);

  // The float32 grid for these values on `device`, cached (as vr180_grid otherwise).
  const at::Tensor& grid(
      int64_t src_height,
      int64_t src_width,
      double hfov_degrees,
      int64_t canvas,
      c10::Device device);

 private:
  at::Tensor grid_;
  int64_t height_ = 0;
  int64_t width_ = 0;
  double hfov_ = 0;
  int64_t canvas_ = 0;
  c10::Device device_{c10::kCPU};
};

} // namespace sbsconv
