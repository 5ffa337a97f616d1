#include "sbsconv/temporal/OpticalFlow.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

// Samples img [N,C,H,W] at pixel positions + flow (bilinear, border values).
at::Tensor warp_by(const at::Tensor& img, const at::Tensor& flow) {
  const int64_t h = img.size(2);
  const int64_t w = img.size(3);
  const auto f32 = img.options();
  const at::Tensor xs = at::arange(w, f32).view({1, 1, w});
  const at::Tensor ys = at::arange(h, f32).view({1, h, 1});
  const at::Tensor gx = (xs + flow.select(1, 0)) * (2.0 / std::max<int64_t>(w - 1, 1)) - 1.0;
  const at::Tensor gy = (ys + flow.select(1, 1)) * (2.0 / std::max<int64_t>(h - 1, 1)) - 1.0;
  return at::grid_sampler(img, at::stack({gx, gy}, -1), /*bilinear*/ 0, /*border*/ 1, /*align_corners*/ true);
}

// Central differences along x and y (one-sided at the borders).
std::pair<at::Tensor, at::Tensor> gradients(const at::Tensor& img) {
  const at::Tensor px = at::replication_pad2d(img, {1, 1, 0, 0});
  const at::Tensor py = at::replication_pad2d(img, {0, 0, 1, 1});
  const int64_t h = img.size(2);
  const int64_t w = img.size(3);
  at::Tensor gx = (px.narrow(3, 2, w) - px.narrow(3, 0, w)) * 0.5;
  at::Tensor gy = (py.narrow(2, 2, h) - py.narrow(2, 0, h)) * 0.5;
  return {gx, gy};
}

// Sums over [i - r, i + r] (clipped) along `dim`, and how many elements each took. With R[j]
// the sum of the first j elements (R[0] = 0), the window's sum is R[min(i+r+1, n)] -
// R[max(i-r, 0)]: both are read off P[k] = R[clamp(k - r, 0, n)] (r+1 zeros, the running sum,
// r copies of its end) as P[i + 2r + 1] - P[i], two shifted views and one subtraction.
std::pair<at::Tensor, at::Tensor> window_sums(const at::Tensor& v, int64_t dim, int64_t r) {
  const int64_t n = v.size(dim);
  const at::Tensor running = v.cumsum(dim);
  std::vector<int64_t> before_shape = v.sizes().vec();
  before_shape[dim] = r + 1;
  std::vector<int64_t> after_shape = v.sizes().vec();
  after_shape[dim] = r;
  const at::Tensor padded = at::cat(
      {at::zeros(before_shape, v.options()), running, running.narrow(dim, n - 1, 1).expand(after_shape)}, dim);
  const at::Tensor index = at::arange(n, at::TensorOptions().dtype(v.scalar_type()).device(v.device()));
  std::vector<int64_t> count_shape(v.dim(), 1);
  count_shape[dim] = n;
  return {padded.narrow(dim, 2 * r + 1, n) - padded.narrow(dim, 0, n),
          ((index + (r + 1)).clamp_max(n) - (index - r).clamp_min(0)).view(count_shape)};
}

// The mean over the (2r+1)^2 window around each pixel, clipped at the borders, at a cost that
// does not grow with the window (running sums along each axis).
at::Tensor box(const at::Tensor& v, int64_t r) {
  if (r <= 0) {
    return v;
  }
  auto [along_w, count_w] = window_sums(v, 3, r);
  auto [both, count_h] = window_sums(along_w, 2, r);
  return both / (count_w * count_h);
}

} // namespace

at::Tensor flow_gray(const at::Tensor& frames, int64_t max_width) {
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(1) == 3, Option, "optical flow", "frames must be RGB [N,3,H,W]");
  at::Tensor rgb = frames.to(at::kFloat);
  at::Tensor gray = (rgb.select(1, 0) * 0.299 + rgb.select(1, 1) * 0.587 + rgb.select(1, 2) * 0.114).unsqueeze(1) / 255.0;
  const int64_t w = frames.size(3);
  const int64_t h = frames.size(2);
  if (w > max_width) {
    const int64_t out_w = max_width;
    const int64_t out_h = std::max<int64_t>(1, (h * max_width + w / 2) / w);
    gray = at::adaptive_avg_pool2d(gray, {out_h, out_w});
  }
  return gray.contiguous();
}

at::Tensor invert_flow(const at::Tensor& flow, int64_t iterations) {
  at::Tensor reverse = flow.neg();
  for (int64_t i = 0; i < iterations; ++i) {
    reverse = warp_by(flow, reverse).neg();
  }
  return reverse;
}

at::Tensor dense_flow(const at::Tensor& a, const at::Tensor& b, const FlowOptions& o) {
  SBSCONV_CHECK(
      a.dim() == 4 && a.size(1) == 1 && a.sizes() == b.sizes(), Option, "optical flow",
      "dense_flow takes two grey images [N,1,H,W] of one size");
  std::vector<at::Tensor> pa{a.to(at::kFloat)};
  std::vector<at::Tensor> pb{b.to(at::kFloat)};
  while (std::min(pa.back().size(2), pa.back().size(3)) >= 2 * o.min_size) {
    pa.push_back(at::avg_pool2d(pa.back(), {2, 2}, {2, 2}, {0, 0}, true));
    pb.push_back(at::avg_pool2d(pb.back(), {2, 2}, {2, 2}, {0, 0}, true));
  }
  const int64_t n = a.size(0);
  at::Tensor flow;
  for (int64_t level = static_cast<int64_t>(pa.size()) - 1; level >= 0; --level) {
    const at::Tensor& ia = pa[level];
    const at::Tensor& ib = pb[level];
    const int64_t h = ia.size(2);
    const int64_t w = ia.size(3);
    if (!flow.defined()) {
      flow = at::zeros({n, 2, h, w}, ia.options());
    } else {
      flow = at::upsample_bilinear2d(flow, {h, w}, false) * 2.0;
    }
    const auto [ax, ay] = gradients(ia);
    for (int64_t it = 0; it < o.iterations; ++it) {
      const at::Tensor wb = warp_by(ib, flow);
      const auto [bx, by] = gradients(wb);
      const at::Tensor gx = (ax + bx) * 0.5;
      const at::Tensor gy = (ay + by) * 0.5;
      const at::Tensor gt = wb - ia;
      const int64_t r = o.window_radius;
      const at::Tensor sums = box(at::cat({gx * gx, gx * gy, gy * gy, gx * gt, gy * gt}, 1), r);
      const at::Tensor sxx = sums.narrow(1, 0, 1) + o.regularisation;
      const at::Tensor sxy = sums.narrow(1, 1, 1);
      const at::Tensor syy = sums.narrow(1, 2, 1) + o.regularisation;
      const at::Tensor sxt = sums.narrow(1, 3, 1);
      const at::Tensor syt = sums.narrow(1, 4, 1);
      const at::Tensor det = sxx * syy - sxy * sxy;
      const at::Tensor du = -(syy * sxt - sxy * syt) / det;
      const at::Tensor dv = -(sxx * syt - sxy * sxt) / det;
      // at most a pixel per step at this level, and averaged over the window: each pixel's
      // update reads its neighbours' warped values, so a flow that varies from pixel to pixel
      // would feed its own noise back (the steps diverge without this)
      flow = box(flow + at::cat({du, dv}, 1).clamp(-1.0, 1.0), r);
    }
  }
  return flow;
}

} // namespace sbsconv
