#include "sbsconv/stereo/Vr180.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kRadiansPerDegree = kPi / 180.0;
constexpr int64_t kMaxCanvas = 16384;
constexpr int64_t kMinDefaultCanvas = 256;
constexpr int64_t kMaxDefaultCanvas = 2880;
// Where points the source does not show are sent: with align_corners = false, a normalised
// coordinate of -3 is pixel index -W - 0.5 (-H - 0.5), so both bilinear neighbours are
// outside the picture for any size and zero padding gives exactly 0.
constexpr float kOutside = -3.0f;

void check_source(int64_t src_height, int64_t src_width, double hfov_degrees) {
  SBSCONV_CHECK(
      src_height > 0 && src_width > 0, Option, "vr180", "the source size must be positive");
  // Written so that NaN fails too.
  SBSCONV_CHECK(
      hfov_degrees > 1.0 && hfov_degrees < 179.0,
      Option,
      "vr180",
      "the horizontal field of view must be within 1..179 degrees (exclusive)");
}

void check_canvas(int64_t canvas) {
  SBSCONV_CHECK(
      canvas > 0 && canvas <= kMaxCanvas,
      Option,
      "vr180",
      "the VR180 canvas size must be within 1.." + std::to_string(kMaxCanvas) + " pixels");
}

// Focal length in pixels of a pinhole whose picture is `width` wide and spans `hfov`.
double focal_length(int64_t width, double hfov_degrees) {
  return (static_cast<double>(width) / 2.0) / std::tan(hfov_degrees / 2.0 * kRadiansPerDegree);
}

// The grid of Note [VR180 projection] as a float32 CPU tensor [1, S, S, 2]. Host doubles only:
// no float64 tensor is made.
at::Tensor host_grid(int64_t height, int64_t width, double hfov_degrees, int64_t s) {
  const double w = static_cast<double>(width);
  const double h = static_cast<double>(height);
  const double f = focal_length(width, hfov_degrees);
  const double cx = w / 2.0;
  const double cy = h / 2.0;
  // u depends on the longitude only and v on both through tan(lat) / cos(lon): per column
  // tan(lon) and 1/cos(lon), per row tan(lat).
  std::vector<double> tan_lon(s), inv_cos_lon(s), tan_lat(s);
  std::vector<char> front_lon(s), front_lat(s);
  for (int64_t i = 0; i < s; ++i) {
    const double t = (static_cast<double>(i) + 0.5) / static_cast<double>(s) - 0.5; // in (-0.5, 0.5)
    const double lon = t * 180.0 * kRadiansPerDegree;
    const double lat = -t * 180.0 * kRadiansPerDegree; // row i: (0.5 - (i + 0.5)/S) * 180
    // dz = cos(lat) cos(lon) > 0 needs both factors positive (both are, strictly inside
    // +-90 degrees, at every pixel centre; kept for the geometry's sake).
    front_lon[i] = std::cos(lon) > 0.0;
    front_lat[i] = std::cos(lat) > 0.0;
    tan_lon[i] = std::tan(lon);
    inv_cos_lon[i] = 1.0 / std::cos(lon);
    tan_lat[i] = std::tan(lat);
  }
  // Visible points are clamped to the outermost pixel centres (see the Note).
  const double u_lo = 0.5, u_hi = std::max(0.5, w - 0.5);
  const double v_lo = 0.5, v_hi = std::max(0.5, h - 0.5);

  at::Tensor grid = at::empty({1, s, s, 2}, at::TensorOptions().dtype(at::kFloat));
  float* data = grid.data_ptr<float>();
  at::parallel_for(0, s, 16, [&](int64_t begin, int64_t end) {
    for (int64_t y = begin; y < end; ++y) {
      float* row = data + y * s * 2;
      for (int64_t x = 0; x < s; ++x) {
        float gx = kOutside, gy = kOutside;
        if (front_lon[x] && front_lat[y]) {
          const double u = cx + f * tan_lon[x];
          const double v = cy - f * tan_lat[y] * inv_cos_lon[x];
          if (u >= 0.0 && u <= w && v >= 0.0 && v <= h) {
            gx = static_cast<float>(2.0 * std::clamp(u, u_lo, u_hi) / w - 1.0);
            gy = static_cast<float>(2.0 * std::clamp(v, v_lo, v_hi) / h - 1.0);
          }
        }
        row[2 * x] = gx;
        row[2 * x + 1] = gy;
      }
    }
  });
  return grid;
}

at::Tensor sample(const at::Tensor& eyes, const at::Tensor& grid, int64_t canvas) {
  const int64_t n = eyes.size(0);
  if (n == 0) {
    return at::empty({0, 3, canvas, canvas}, eyes.options().memory_format(at::MemoryFormat::Contiguous));
  }
  // All frames and channels share one grid: sample them as the channels of one image
  // ([1, N*3, H, W]) rather than expanding the grid over the batch.
  at::Tensor input = eyes.to(at::kFloat, /*non_blocking=*/false, /*copy=*/false, at::MemoryFormat::Contiguous)
                         .view({1, n * 3, eyes.size(2), eyes.size(3)});
  at::Tensor out = at::grid_sampler(
      input, grid, /*interpolation_mode=bilinear*/ 0, /*padding_mode=zeros*/ 0, /*align_corners=*/false);
  return out.view({n, 3, canvas, canvas}).add_(0.5).floor_().clamp_(0, 255).to(at::kByte);
}

void check_eyes(const at::Tensor& eyes) {
  SBSCONV_CHECK(eyes.defined(), Option, "vr180", "no eye images to project");
  SBSCONV_CHECK(
      eyes.dim() == 4 && eyes.size(1) == 3, Option, "vr180", "the eye images must be [N,3,H,W]");
  SBSCONV_CHECK(eyes.scalar_type() == at::kByte, Option, "vr180", "the eye images must be uint8");
}

} // namespace

at::Tensor vr180_grid(
    int64_t src_height,
    int64_t src_width,
    double hfov_degrees,
    int64_t canvas,
    const at::TensorOptions& options) {
  check_source(src_height, src_width, hfov_degrees);
  check_canvas(canvas);
  SBSCONV_CHECK(
      at::isFloatingType(c10::typeMetaToScalarType(options.dtype())),
      Option,
      "vr180",
      "the VR180 grid must have a floating-point dtype");
  return host_grid(src_height, src_width, hfov_degrees, canvas).to(options);
}

at::Tensor project_vr180(const at::Tensor& eyes, double hfov_degrees, int64_t canvas) {
  Vr180Projector projector;
  return projector.project(eyes, hfov_degrees, canvas);
}

int64_t vr180_default_canvas(int64_t src_height, int64_t src_width, double hfov_degrees) {
  check_source(src_height, src_width, hfov_degrees);
  // Source: f * pi/180 pixels per degree at its centre; canvas: S/180. Equal for S = pi * f.
  // Clamped in double first so that huge widths cannot overflow the conversion.
  const double exact = std::ceil(kPi * focal_length(src_width, hfov_degrees));
  int64_t s = static_cast<int64_t>(std::min(exact, static_cast<double>(kMaxDefaultCanvas)));
  s += s & 1;
  return std::clamp(s, kMinDefaultCanvas, kMaxDefaultCanvas);
}

at::Tensor Vr180Projector::project(const at::Tensor& eyes, double hfov_degrees, int64_t canvas) {
  check_eyes(eyes);
  // The grid is built outside inference mode: it is kept, and handed out by grid(), as an
  // ordinary tensor.
  const at::Tensor& g = grid(eyes.size(2), eyes.size(3), hfov_degrees, canvas, eyes.device());
  at::InferenceMode guard;
  return sample(eyes, g, canvas);
}

const at::Tensor& Vr180Projector::grid(
    int64_t src_height,
    int64_t src_width,
    double hfov_degrees,
    int64_t canvas,
    c10::Device device) {
  if (grid_.defined() && height_ == src_height && width_ == src_width && hfov_ == hfov_degrees &&
      canvas_ == canvas && device_ == device) {
    return grid_;
  }
  at::Tensor fresh = vr180_grid(
      src_height, src_width, hfov_degrees, canvas, at::TensorOptions().dtype(at::kFloat).device(device));
  // Only after a successful build: a throwing call leaves the previous grid in place.
  grid_ = std::move(fresh);
  height_ = src_height;
  width_ = src_width;
  hfov_ = hfov_degrees;
  canvas_ = canvas;
  device_ = device;
  return grid_;
}

} // namespace sbsconv
