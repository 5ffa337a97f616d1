#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "sbsconv/common/Error.h"
#include "sbsconv/common/Float64Guard.h"
#include "sbsconv/stereo/Vr180.h"

using namespace sbsconv;

namespace {

constexpr double kPi = 3.14159265358979323846;

double radians(double degrees) {
  return degrees * kPi / 180.0;
}

double focal(int64_t width, double hfov) {
  return (width / 2.0) / std::tan(radians(hfov / 2.0));
}

// Canvas coordinates (continuous, pixel x covers [x, x+1)) of a longitude and latitude.
double canvas_x(double lon_degrees, int64_t s) {
  return (lon_degrees / 180.0 + 0.5) * s;
}
double canvas_y(double lat_degrees, int64_t s) {
  return (0.5 - lat_degrees / 180.0) * s;
}

at::Tensor black(int64_t h, int64_t w) {
  return at::zeros({1, 3, h, w}, at::kByte);
}

struct Centroid {
  double x = 0, y = 0, mass = 0;
};

// Intensity-weighted centroid of channel `c` of frame 0, in continuous canvas coordinates
// (pixel centres at +0.5).
Centroid centroid(const at::Tensor& canvas, int64_t c = 0) {
  at::Tensor plane = canvas[0][c].to(at::kFloat).contiguous();
  auto a = plane.accessor<float, 2>();
  Centroid r;
  for (int64_t y = 0; y < plane.size(0); ++y) {
    for (int64_t x = 0; x < plane.size(1); ++x) {
      const double v = a[y][x];
      r.x += v * (x + 0.5);
      r.y += v * (y + 0.5);
      r.mass += v;
    }
  }
  if (r.mass > 0) {
    r.x /= r.mass;
    r.y /= r.mass;
  }
  return r;
}

// Whether the direction of canvas pixel (x, y) is seen by the source, from the geometry
// written out independently of the implementation (a full 3D vector, then the pinhole).
bool visible(int64_t x, int64_t y, int64_t s, int64_t h, int64_t w, double hfov) {
  const double lon = radians(((x + 0.5) / s - 0.5) * 180.0);
  const double lat = radians((0.5 - (y + 0.5) / s) * 180.0);
  const double dx = std::cos(lat) * std::sin(lon);
  const double dy = std::sin(lat);
  const double dz = std::cos(lat) * std::cos(lon);
  if (dz <= 0) {
    return false;
  }
  const double f = focal(w, hfov);
  const double u = w / 2.0 + f * dx / dz;
  const double v = h / 2.0 - f * dy / dz;
  return u >= 0 && u <= w && v >= 0 && v <= h;
}

void expect_option_error(const std::function<void()>& call, const char* what) {
  try {
    call();
    ADD_FAILURE() << "expected an Option error: " << what;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Option) << what << ": " << e.what();
  }
}

} // namespace

TEST(Vr180, SourceCentreLandsAtCanvasCentre) {
  const int64_t h = 48, w = 64, s = 256;
  at::Tensor src = black(h, w);
  src.narrow(2, h / 2 - 2, 4).narrow(3, w / 2 - 2, 4).fill_(255);
  for (double hfov : {60.0, 90.0, 120.0}) {
    at::Tensor out = project_vr180(src, hfov, s);
    ASSERT_EQ(out.sizes(), (at::IntArrayRef{1, 3, s, s}));
    ASSERT_EQ(out.scalar_type(), at::kByte);
    const Centroid c = centroid(out);
    ASSERT_GT(c.mass, 0) << hfov;
    EXPECT_NEAR(c.x, s / 2.0, 1.0) << hfov;
    EXPECT_NEAR(c.y, s / 2.0, 1.0) << hfov;
  }
}

TEST(Vr180, EdgesOfTheFieldOfViewLandAtPlusMinusHalfTheFov) {
  // Red first column, blue last column: also pins down which way is left.
  const int64_t h = 48, w = 64, s = 360;
  at::Tensor src = black(h, w);
  src[0][0].narrow(1, 0, 1).fill_(255);
  src[0][2].narrow(1, w - 1, 1).fill_(255);
  for (double hfov : {70.0, 90.0, 140.0}) {
    at::Tensor out = project_vr180(src, hfov, s);
    at::Tensor equator = out[0].select(1, s / 2).contiguous(); // [3, S]
    auto e = equator.accessor<uint8_t, 2>();
    int64_t red_first = -1, red_last = -1, blue_first = -1, blue_last = -1;
    for (int64_t x = 0; x < s; ++x) {
      EXPECT_EQ(e[1][x], 0) << "green at " << x;
      if (e[0][x] >= 128) {
        red_first = red_first < 0 ? x : red_first;
        red_last = x;
      }
      if (e[2][x] >= 128) {
        blue_first = blue_first < 0 ? x : blue_first;
        blue_last = x;
      }
    }
    ASSERT_GE(red_first, 0) << hfov;
    ASSERT_GE(blue_first, 0) << hfov;
    // The source's outer edges: the left edge of the first red canvas column and the right
    // edge of the last blue one.
    EXPECT_NEAR(red_first, canvas_x(-hfov / 2, s), 1.0) << hfov;
    EXPECT_NEAR(blue_last + 1, canvas_x(hfov / 2, s), 1.0) << hfov;
    // One source column is a few canvas columns at most, and on its own side.
    EXPECT_LE(red_last - red_first, 4) << hfov;
    EXPECT_LE(blue_last - blue_first, 4) << hfov;
    EXPECT_LT(red_last, s / 2);
    EXPECT_GT(blue_first, s / 2);
  }
}

TEST(Vr180, PointAboveTheCentreLandsAtItsLatitude) {
  const int64_t h = 96, w = 128, s = 360;
  const double hfov = 90;
  const double f = focal(w, hfov);
  const double v = h / 2.0 - f * std::tan(radians(20));
  const int64_t row = static_cast<int64_t>(std::floor(v));
  at::Tensor src = black(h, w);
  // u = cx is the boundary between columns w/2 - 1 and w/2: light both.
  src.narrow(2, row, 1).narrow(3, w / 2 - 1, 2).fill_(255);
  at::Tensor out = project_vr180(src, hfov, s);
  const Centroid c = centroid(out);
  ASSERT_GT(c.mass, 0);
  // Half a degree is one canvas pixel at S = 360; the source pixel itself spans ~0.8 degrees.
  EXPECT_NEAR(c.y, canvas_y(20, s), 1.0);
  EXPECT_NEAR(c.x, canvas_x(0, s), 1.0);
  // And nothing of it anywhere else (e.g. mirrored below the equator).
  EXPECT_EQ(out.narrow(2, s / 2, s / 2).max().item<int>(), 0);
}

TEST(Vr180, OutsideTheFieldOfViewIsBlack) {
  const int64_t h = 48, w = 64, s = 360;
  const double hfov = 90; // vertical: 2 atan(24/32) = 73.7 degrees
  at::Tensor src = at::full({1, 3, h, w}, 255, at::kByte);
  at::Tensor out = project_vr180(src, hfov, s);
  auto at_deg = [&](double lon, double lat) {
    const auto x = static_cast<int64_t>(std::floor(canvas_x(lon, s)));
    const auto y = static_cast<int64_t>(std::floor(canvas_y(lat, s)));
    return out[0][1][y][x].item<int>();
  };
  EXPECT_EQ(out[0][0][0][0].item<int>(), 0);
  EXPECT_EQ(out[0][0][0][s - 1].item<int>(), 0);
  EXPECT_EQ(out[0][0][s - 1][0].item<int>(), 0);
  EXPECT_EQ(out[0][0][s - 1][s - 1].item<int>(), 0);
  EXPECT_EQ(at_deg(-85, 0), 0);
  EXPECT_EQ(at_deg(85, 0), 0);
  EXPECT_EQ(at_deg(-50, 0), 0);
  EXPECT_EQ(at_deg(50, 0), 0);
  EXPECT_EQ(at_deg(0, 40), 0);
  EXPECT_EQ(at_deg(0, -40), 0);
  EXPECT_EQ(at_deg(-40, 0), 255);
  EXPECT_EQ(at_deg(40, 0), 255);
  EXPECT_EQ(at_deg(0, 33), 255);
  EXPECT_EQ(at_deg(0, -33), 255);
  // The top edge bows towards the pole away from the centre: at lon 40 the picture reaches
  // atan(tan(36.87) * cos(40)) = 29.9 degrees only.
  EXPECT_EQ(at_deg(40, 32), 0);
  EXPECT_EQ(at_deg(40, 28), 255);
}

TEST(Vr180, UniformColoursStayExactInsideTheCoveredAreaForAnyLayoutAndBatch) {
  const int64_t h = 36, w = 50, s = 200;
  const double hfov = 100;
  // Two frames of different flat colours, channels-last.
  at::Tensor src = at::empty({2, 3, h, w}, at::kByte);
  const int colours[2][3] = {{137, 60, 200}, {40, 255, 1}};
  for (int n = 0; n < 2; ++n) {
    for (int c = 0; c < 3; ++c) {
      src[n][c].fill_(colours[n][c]);
    }
  }
  src = src.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = project_vr180(src, hfov, s);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{2, 3, s, s}));
  auto o = out.accessor<uint8_t, 4>();
  int64_t covered = 0;
  for (int64_t y = 0; y < s; ++y) {
    for (int64_t x = 0; x < s; ++x) {
      const bool in = visible(x, y, s, h, w, hfov);
      covered += in;
      for (int n = 0; n < 2; ++n) {
        for (int c = 0; c < 3; ++c) {
          const int expected = in ? colours[n][c] : 0;
          ASSERT_NEAR(o[n][c][y][x], expected, 1) << "frame " << n << " channel " << c << " at " << x << "," << y;
        }
      }
    }
  }
  // The covered area is a sizeable part of the canvas (about 100 x 80 degrees).
  EXPECT_GT(covered, s * s / 5);
}

TEST(Vr180, GridMatchesTheGeometryAndSendsUnseenPointsOutside) {
  const int64_t h = 40, w = 64, s = 128;
  const double hfov = 80;
  at::Tensor grid = vr180_grid(h, w, hfov, s, at::kFloat);
  ASSERT_EQ(grid.sizes(), (at::IntArrayRef{1, s, s, 2}));
  ASSERT_EQ(grid.scalar_type(), at::kFloat);
  auto g = grid.accessor<float, 4>();
  const double f = focal(w, hfov);
  int64_t seen = 0;
  for (int64_t y = 0; y < s; ++y) {
    for (int64_t x = 0; x < s; ++x) {
      const double gx = g[0][y][x][0];
      const double gy = g[0][y][x][1];
      const bool inside = std::abs(gx) <= 1 && std::abs(gy) <= 1;
      ASSERT_EQ(inside, visible(x, y, s, h, w, hfov)) << x << "," << y;
      if (!inside) {
        // Far enough out that no bilinear neighbour is inside the picture.
        EXPECT_TRUE(std::abs(gx) > 1 + 2.0 / w || std::abs(gy) > 1 + 2.0 / h) << x << "," << y;
        continue;
      }
      ++seen;
      // Away from the clamped border band, the normalised coordinate is 2u/W - 1.
      const double lon = radians(((x + 0.5) / s - 0.5) * 180.0);
      const double lat = radians((0.5 - (y + 0.5) / s) * 180.0);
      const double u = w / 2.0 + f * std::tan(lon);
      const double v = h / 2.0 - f * std::tan(lat) / std::cos(lon);
      if (u > 0.5 && u < w - 0.5 && v > 0.5 && v < h - 0.5) {
        EXPECT_NEAR(gx, 2 * u / w - 1, 1e-5);
        EXPECT_NEAR(gy, 2 * v / h - 1, 1e-5);
      }
    }
  }
  EXPECT_GT(seen, 0);
  // Left of the canvas is left of the picture, top is top.
  EXPECT_LT(g[0][s / 2][s / 2 - 10][0], 0);
  EXPECT_LT(g[0][s / 2 - 10][s / 2][1], 0);
}

TEST(Vr180, InvalidArgumentsThrowOptionErrors) {
  const auto nan = std::numeric_limits<double>::quiet_NaN();
  for (double hfov : {1.0, 0.5, 179.0, 180.0, -90.0, nan}) {
    expect_option_error([&] { vr180_grid(48, 64, hfov, 64, at::kFloat); }, "hfov (grid)");
    expect_option_error([&] { vr180_default_canvas(48, 64, hfov); }, "hfov (default canvas)");
    expect_option_error([&] { project_vr180(black(8, 8), hfov, 64); }, "hfov (project)");
  }
  expect_option_error([] { vr180_grid(0, 64, 90, 64, at::kFloat); }, "zero height");
  expect_option_error([] { vr180_grid(48, -1, 90, 64, at::kFloat); }, "negative width");
  expect_option_error([] { vr180_grid(48, 64, 90, 0, at::kFloat); }, "zero canvas");
  expect_option_error([] { vr180_grid(48, 64, 90, 16385, at::kFloat); }, "canvas too large");
  expect_option_error([] { vr180_grid(48, 64, 90, 64, at::kInt); }, "integer grid");
  expect_option_error([] { vr180_default_canvas(0, 64, 90); }, "zero height (default canvas)");
  expect_option_error([] { project_vr180(black(8, 8), 90, 16385); }, "canvas too large (project)");
  expect_option_error([] { project_vr180(at::zeros({1, 3, 8, 8}, at::kFloat), 90, 64); }, "float eyes");
  expect_option_error([] { project_vr180(at::zeros({1, 1, 8, 8}, at::kByte), 90, 64); }, "one channel");
  expect_option_error([] { project_vr180(at::zeros({3, 8, 8}, at::kByte), 90, 64); }, "no batch");
  expect_option_error([] { project_vr180(at::Tensor(), 90, 64); }, "undefined");
  EXPECT_NO_THROW(vr180_grid(1, 1, 1.001, 1, at::kFloat));
  EXPECT_NO_THROW(vr180_grid(1, 1, 178.999, 16384 / 64, at::kFloat));
}

TEST(Vr180, DefaultCanvasKeepsTheCentresResolution) {
  // f = 640 / tan(30) = 1108.5 px: 19.35 px/degree, S = 3483 -> clamped to 2880.
  EXPECT_EQ(vr180_default_canvas(720, 1280, 60), 2880);
  // f = 160 px: 2.79 px/degree, S = 502.65 -> 503 -> even 504.
  EXPECT_EQ(vr180_default_canvas(240, 320, 90), 504);
  // The canvas really has the source's density at the centre: S/180 vs f pi/180.
  EXPECT_NEAR(504 / 180.0, focal(320, 90) * kPi / 180.0, 2 / 180.0);
  // Rounded up to even: f = 100 -> 314.16 -> 315 -> 316.
  EXPECT_EQ(vr180_default_canvas(100, 200, 90), 316);
  // Tiny sources clamp to 256, huge ones to 2880 (no overflow).
  EXPECT_EQ(vr180_default_canvas(24, 32, 90), 256);
  EXPECT_EQ(vr180_default_canvas(1, 1, 178), 256);
  EXPECT_EQ(vr180_default_canvas(1, std::numeric_limits<int64_t>::max() / 2, 2), 2880);
  // Wider fields of view for the same width mean a shorter focal length, so a smaller canvas.
  EXPECT_LT(vr180_default_canvas(480, 640, 120), vr180_default_canvas(480, 640, 60));
}

TEST(Vr180, ProjectorReusesItsGridAndMatchesTheFreeFunction) {
  at::Tensor src = at::randint(0, 256, {2, 3, 24, 32}, at::kByte);
  Vr180Projector projector;
  at::Tensor a = projector.project(src, 90, 96);
  const void* first = projector.grid(24, 32, 90, 96, at::kCPU).data_ptr();
  at::Tensor b = projector.project(src, 90, 96);
  EXPECT_EQ(projector.grid(24, 32, 90, 96, at::kCPU).data_ptr(), first);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_TRUE(at::equal(a, project_vr180(src, 90, 96)));
  // A change of field of view, canvas or eye size builds a new grid.
  at::Tensor c = projector.project(src, 100, 96);
  EXPECT_FALSE(at::equal(a, c));
  EXPECT_TRUE(at::equal(c, project_vr180(src, 100, 96)));
  EXPECT_EQ(projector.project(src, 100, 64).size(2), 64);
  EXPECT_EQ(projector.project(src.narrow(3, 0, 30), 100, 64).size(2), 64);
  EXPECT_TRUE(at::equal(projector.project(src.narrow(3, 0, 30), 100, 64),
                        project_vr180(src.narrow(3, 0, 30).contiguous(), 100, 64)));
  // A failing call keeps the last grid usable.
  EXPECT_THROW(projector.project(src, 200, 64), Error);
  EXPECT_EQ(projector.project(src, 90, 96).sizes(), a.sizes());
  // An empty batch gives an empty batch.
  EXPECT_EQ(projector.project(src.narrow(0, 0, 0), 90, 96).sizes(), (at::IntArrayRef{0, 3, 96, 96}));
}

TEST(Vr180, MakesNoFloat64Tensors) {
  Float64Guard guard(/*cpu_counts_as_device=*/true);
  at::Tensor src = at::randint(0, 256, {1, 3, 24, 32}, at::kByte);
  Vr180Projector projector;
  projector.project(src, 90, 64);
  project_vr180(src, 75, 64);
  vr180_default_canvas(24, 32, 90);
  EXPECT_TRUE(guard.take_violations().empty());
}
