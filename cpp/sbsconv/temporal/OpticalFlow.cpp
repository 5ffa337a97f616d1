#include "sbsconv/temporal/OpticalFlow.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

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

// ---- the native CPU step ---------------------------------------------------------------------
//
// One Gauss-Newton step of dense_flow on one image, exactly as the LibTorch operations below
// compute it: warp b back by the flow (bilinear, border values, as grid_sampler with
// align_corners), the symmetric gradients, the five products' window means, the 2x2 solve,
// the step clamped to a pixel, and the window mean of the new flow. Window sums through prefix
// sums, as the LibTorch form's cumsum (they differ by the order of the float additions only).

// The window means of `channels` planes [c][h][w] into `out` (may not alias `in`).
void box_means(const float* in, float* out, int64_t channels, int64_t h, int64_t w, int64_t r,
               std::vector<float>& row_prefix, std::vector<float>& column_prefix, std::vector<float>& across,
               std::vector<float>& inverse_count) {
  row_prefix.resize(static_cast<size_t>(w + 1));
  column_prefix.assign(static_cast<size_t>((h + 1) * w), 0.0f);
  across.resize(static_cast<size_t>(h * w));
  inverse_count.resize(static_cast<size_t>(w));
  for (int64_t x = 0; x < w; ++x) {
    inverse_count[static_cast<size_t>(x)] =
        1.0f / static_cast<float>(std::min(x + r + 1, w) - std::max<int64_t>(x - r, 0));
  }
  for (int64_t c = 0; c < channels; ++c) {
    const float* plane = in + c * h * w;
    // along each row: the window's sum, clipped at the ends
    for (int64_t y = 0; y < h; ++y) {
      const float* row = plane + y * w;
      row_prefix[0] = 0.0f;
      for (int64_t x = 0; x < w; ++x) {
        row_prefix[x + 1] = row_prefix[x] + row[x];
      }
      float* dst = across.data() + y * w;
      for (int64_t x = 0; x < w; ++x) {
        dst[x] = row_prefix[std::min(x + r + 1, w)] - row_prefix[std::max<int64_t>(x - r, 0)];
      }
    }
    // down each column, over the row sums
    for (int64_t y = 0; y < h; ++y) {
      const float* __restrict above = column_prefix.data() + y * w;
      float* __restrict here = column_prefix.data() + (y + 1) * w;
      const float* __restrict src = across.data() + y * w;
      for (int64_t x = 0; x < w; ++x) {
        here[x] = above[x] + src[x];
      }
    }
    for (int64_t y = 0; y < h; ++y) {
      float* __restrict dst = out + (c * h + y) * w;
      const int64_t y1 = std::min(y + r + 1, h);
      const int64_t y0 = std::max<int64_t>(y - r, 0);
      const float* __restrict hi = column_prefix.data() + y1 * w;
      const float* __restrict lo = column_prefix.data() + y0 * w;
      const float* __restrict inv_w = inverse_count.data();
      const float inv_h = 1.0f / static_cast<float>(y1 - y0);
      for (int64_t x = 0; x < w; ++x) {
        dst[x] = (hi[x] - lo[x]) * (inv_w[x] * inv_h);
      }
    }
  }
}

// Work buffers of one thread's steps, reused from image to image and step to step.
struct FlowScratch {
  std::vector<float> wb, planes, sums, step;
  std::vector<float> row_prefix, column_prefix, across, inverse_count;
};

void flow_step_cpu(const float* ia, const float* ib, const float* ax, const float* ay, float* flow, int64_t h,
                   int64_t w, int64_t r, float reg, FlowScratch& s) {
  const int64_t hw = h * w;
  s.wb.resize(static_cast<size_t>(hw));
  s.planes.resize(static_cast<size_t>(5 * hw));
  s.sums.resize(static_cast<size_t>(5 * hw));
  s.step.resize(static_cast<size_t>(2 * hw));
  const float* fx = flow;
  const float* fy = flow + hw;
  // b warped back by the flow: bilinear, positions clamped to the image (border values)
  const float max_x = static_cast<float>(w - 1);
  const float max_y = static_cast<float>(h - 1);
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      const int64_t i = y * w + x;
      const float px = std::clamp(static_cast<float>(x) + fx[i], 0.0f, max_x);
      const float py = std::clamp(static_cast<float>(y) + fy[i], 0.0f, max_y);
      const auto x0 = static_cast<int64_t>(px);
      const auto y0 = static_cast<int64_t>(py);
      const int64_t x1 = std::min(x0 + 1, w - 1);
      const int64_t y1 = std::min(y0 + 1, h - 1);
      const float tx = px - static_cast<float>(x0);
      const float ty = py - static_cast<float>(y0);
      const float top = ib[y0 * w + x0] * (1.0f - tx) + ib[y0 * w + x1] * tx;
      const float bottom = ib[y1 * w + x0] * (1.0f - tx) + ib[y1 * w + x1] * tx;
      s.wb[static_cast<size_t>(i)] = top * (1.0f - ty) + bottom * ty;
    }
  }
  // the symmetric gradients, the temporal difference and the five products
  float* gxx = s.planes.data();
  float* gxy = gxx + hw;
  float* gyy = gxy + hw;
  float* gxt = gyy + hw;
  float* gyt = gxt + hw;
  const float* wb = s.wb.data();
  for (int64_t y = 0; y < h; ++y) {
    const float* up = wb + std::max<int64_t>(y - 1, 0) * w;
    const float* down = wb + std::min(y + 1, h - 1) * w;
    const float* row = wb + y * w;
    for (int64_t x = 0; x < w; ++x) {
      const int64_t i = y * w + x;
      const float bx = (row[std::min(x + 1, w - 1)] - row[std::max<int64_t>(x - 1, 0)]) * 0.5f;
      const float by = (down[x] - up[x]) * 0.5f;
      const float gx = (ax[i] + bx) * 0.5f;
      const float gy = (ay[i] + by) * 0.5f;
      const float gt = row[x] - ia[i];
      gxx[i] = gx * gx;
      gxy[i] = gx * gy;
      gyy[i] = gy * gy;
      gxt[i] = gx * gt;
      gyt[i] = gy * gt;
    }
  }
  box_means(s.planes.data(), s.sums.data(), 5, h, w, r, s.row_prefix, s.column_prefix, s.across, s.inverse_count);
  const float* sxx_ = s.sums.data();
  const float* sxy_ = sxx_ + hw;
  const float* syy_ = sxy_ + hw;
  const float* sxt_ = syy_ + hw;
  const float* syt_ = sxt_ + hw;
  float* ux = s.step.data();
  float* uy = ux + hw;
  for (int64_t i = 0; i < hw; ++i) {
    const float sxx = sxx_[i] + reg;
    const float sxy = sxy_[i];
    const float syy = syy_[i] + reg;
    const float det = sxx * syy - sxy * sxy;
    const float du = -(syy * sxt_[i] - sxy * syt_[i]) / det;
    const float dv = -(sxx * syt_[i] - sxy * sxt_[i]) / det;
    ux[i] = fx[i] + std::clamp(du, -1.0f, 1.0f);
    uy[i] = fy[i] + std::clamp(dv, -1.0f, 1.0f);
  }
  box_means(s.step.data(), flow, 2, h, w, r, s.row_prefix, s.column_prefix, s.across, s.inverse_count);
}

// The Gauss-Newton steps of one level for every image of the batch, in place on `flow`
// [N,2,H,W] (contiguous float CPU).
void flow_steps_cpu(const at::Tensor& ia, const at::Tensor& ib, at::Tensor& flow, const FlowOptions& o) {
  const int64_t n = ia.size(0);
  const int64_t h = ia.size(2);
  const int64_t w = ia.size(3);
  const int64_t hw = h * w;
  const at::Tensor a = ia.contiguous();
  const at::Tensor b = ib.contiguous();
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  float* pf = flow.data_ptr<float>();
  const auto reg = static_cast<float>(o.regularisation);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    FlowScratch scratch;
    std::vector<float> ax(static_cast<size_t>(hw)), ay(static_cast<size_t>(hw));
    for (int64_t k = begin; k < end; ++k) {
      const float* img = pa + k * hw;
      for (int64_t y = 0; y < h; ++y) {
        const float* up = img + std::max<int64_t>(y - 1, 0) * w;
        const float* down = img + std::min(y + 1, h - 1) * w;
        const float* row = img + y * w;
        for (int64_t x = 0; x < w; ++x) {
          ax[static_cast<size_t>(y * w + x)] = (row[std::min(x + 1, w - 1)] - row[std::max<int64_t>(x - 1, 0)]) * 0.5f;
          ay[static_cast<size_t>(y * w + x)] = (down[x] - up[x]) * 0.5f;
        }
      }
      for (int64_t it = 0; it < o.iterations; ++it) {
        flow_step_cpu(img, pb + k * hw, ax.data(), ay.data(), pf + k * 2 * hw, h, w, o.window_radius, reg, scratch);
      }
    }
  });
}

// flow_gray on the CPU for uint8 frames in one pass (no float copy of the frames): each
// output pixel the mean luma of its area, the areas as adaptive_avg_pool2d takes them
// ([floor(i * in / out), ceil((i + 1) * in / out)) along each axis), any strides.
at::Tensor flow_gray_cpu(const at::Tensor& frames, int64_t max_width) {
  const int64_t n = frames.size(0);
  const int64_t h = frames.size(2);
  const int64_t w = frames.size(3);
  const int64_t out_w = w > max_width ? max_width : w;
  const int64_t out_h = w > max_width ? std::max<int64_t>(1, (h * max_width + w / 2) / w) : h;
  at::Tensor out = at::empty({n, 1, out_h, out_w}, at::TensorOptions().dtype(at::kFloat));
  const uint8_t* src = frames.data_ptr<uint8_t>();
  const int64_t sn = frames.stride(0);
  const int64_t sc = frames.stride(1);
  const int64_t sy = frames.stride(2);
  const int64_t sx = frames.stride(3);
  float* dst = out.data_ptr<float>();
  std::vector<int64_t> x0(static_cast<size_t>(out_w)), x1(static_cast<size_t>(out_w));
  for (int64_t i = 0; i < out_w; ++i) {
    x0[static_cast<size_t>(i)] = i * w / out_w;
    x1[static_cast<size_t>(i)] = ((i + 1) * w + out_w - 1) / out_w;
  }
  at::parallel_for(0, n * out_h, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> column_sums(static_cast<size_t>(w));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / out_h;
      const int64_t oy = row % out_h;
      const int64_t y0 = oy * h / out_h;
      const int64_t y1 = ((oy + 1) * h + out_h - 1) / out_h;
      std::fill(column_sums.begin(), column_sums.end(), 0.0f);
      for (int64_t y = y0; y < y1; ++y) {
        const uint8_t* r = src + b * sn + y * sy;
        const uint8_t* g = r + sc;
        const uint8_t* bl = r + 2 * sc;
        for (int64_t x = 0; x < w; ++x) {
          const int64_t o = x * sx;
          column_sums[static_cast<size_t>(x)] +=
              (static_cast<float>(r[o]) * 0.299f + static_cast<float>(g[o]) * 0.587f +
               static_cast<float>(bl[o]) * 0.114f) / 255.0f;
        }
      }
      float* out_row = dst + row * out_w;
      const auto rows = static_cast<float>(y1 - y0);
      for (int64_t i = 0; i < out_w; ++i) {
        float sum = 0.0f;
        for (int64_t x = x0[static_cast<size_t>(i)]; x < x1[static_cast<size_t>(i)]; ++x) {
          sum += column_sums[static_cast<size_t>(x)];
        }
        out_row[i] = sum / (rows * static_cast<float>(x1[static_cast<size_t>(i)] - x0[static_cast<size_t>(i)]));
      }
    }
  });
  return out;
}

} // namespace

at::Tensor flow_gray(const at::Tensor& frames, int64_t max_width) {
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(1) == 3, Option, "optical flow", "frames must be RGB [N,3,H,W]");
  if (frames.is_cpu() && frames.scalar_type() == at::kByte) {
    return flow_gray_cpu(frames, max_width);
  }
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

at::Tensor dense_flow(const at::Tensor& a, const at::Tensor& b, const FlowOptions& o, FlowImpl impl) {
  SBSCONV_CHECK(
      a.dim() == 4 && a.size(1) == 1 && a.sizes() == b.sizes(), Option, "optical flow",
      "dense_flow takes two grey images [N,1,H,W] of one size");
  const bool native = impl == FlowImpl::Cpu || (impl == FlowImpl::Auto && a.is_cpu());
  SBSCONV_CHECK(!native || (a.is_cpu() && b.is_cpu()), Option, "optical flow", "the native flow runs on the CPU");
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
    if (native) {
      flow = flow.contiguous();
      flow_steps_cpu(ia, ib, flow, o);
      continue;
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
