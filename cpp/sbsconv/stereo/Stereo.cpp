#include "sbsconv/stereo/Stereo.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"
#include "sbsconv/stereo/Disparity.h"
#include "sbsconv/stereo/PatchFill.h"
#include "sbsconv/stereo/TemporalFill.h"
#include "sbsconv/stereo/Vr180.h"
#include "sbsconv/stereo/Warp.h"

namespace sbsconv {

namespace {

struct LayoutName {
  StereoLayout layout;
  const char* name;
};
constexpr LayoutName kLayouts[] = {
    {StereoLayout::FullSbs, "full-sbs"},
    {StereoLayout::HalfSbs, "half-sbs"},
    {StereoLayout::FullTb, "full-tb"},
    {StereoLayout::HalfTb, "half-tb"},
    {StereoLayout::CrossEyed, "cross-eyed"},
    {StereoLayout::AnaglyphDubois, "anaglyph"},
    {StereoLayout::AnaglyphColor, "anaglyph-color"},
    {StereoLayout::AnaglyphGray, "anaglyph-gray"},
    {StereoLayout::Separate, "separate"},
};

int64_t even(int64_t v) {
  return std::max<int64_t>(2, v + (v & 1));
}

at::Tensor to_u8(const at::Tensor& x) {
  return x.add(0.5).floor_().clamp_(0, 255).to(at::kByte);
}

at::Tensor srgb_to_linear(const at::Tensor& v) {
  return at::where(v <= 0.04045, v / 12.92, at::pow((v + 0.055) / 1.055, 2.4));
}

at::Tensor linear_to_srgb(const at::Tensor& v) {
  at::Tensor c = v.clamp(0.0, 1.0);
  return at::where(c <= 0.0031308, c * 12.92, 1.055 * at::pow(c, 1.0 / 2.4) - 0.055);
}

at::Tensor anaglyph(const at::Tensor& left, const at::Tensor& right, StereoLayout layout) {
  at::Tensor l = left.to(at::kFloat);
  at::Tensor r = right.to(at::kFloat);
  if (layout == StereoLayout::AnaglyphColor) {
    return to_u8(at::cat({l.narrow(1, 0, 1), r.narrow(1, 1, 2)}, 1));
  }
  if (layout == StereoLayout::AnaglyphGray) {
    // BT.709 luma of each eye.
    auto luma = [](const at::Tensor& x) {
      return x.narrow(1, 0, 1) * 0.2126 + x.narrow(1, 1, 1) * 0.7152 + x.narrow(1, 2, 1) * 0.0722;
    };
    at::Tensor rl = luma(r);
    return to_u8(at::cat({luma(l), rl, rl}, 1));
  }
  // Dubois (2001) least-squares red-cyan projection, applied to linear RGB.
  const auto opts = l.options();
  at::Tensor ml = device_values(
      {0.456, 0.500, 0.176, -0.040, -0.038, -0.016, -0.015, -0.021, -0.005}, opts).view({3, 3});
  at::Tensor mr = device_values(
      {-0.043, -0.088, -0.002, 0.378, 0.734, -0.018, -0.072, -0.113, 1.226}, opts).view({3, 3});
  at::Tensor ll = srgb_to_linear(l / 255.0);
  at::Tensor rr = srgb_to_linear(r / 255.0);
  at::Tensor mixed = at::einsum("ij,njhw->nihw", {ml, ll}) + at::einsum("ij,njhw->nihw", {mr, rr});
  return to_u8(linear_to_srgb(mixed) * 255.0);
}

at::Tensor squeeze(const at::Tensor& eye, bool horizontal) {
  const int64_t h = eye.size(2);
  const int64_t w = eye.size(3);
  return horizontal ? resize_frames(eye, std::max<int64_t>(1, w / 2), h, false)
                    : resize_frames(eye, w, std::max<int64_t>(1, h / 2), false);
}

} // namespace

StereoLayout parse_layout(const std::string& name) {
  for (const auto& entry : kLayouts) {
    if (name == entry.name) {
      return entry.layout;
    }
  }
  std::string known;
  for (const auto& entry : kLayouts) {
    known += std::string(known.empty() ? "" : ", ") + entry.name;
  }
  throw Error(ErrorKind::Option, "stereo", "unknown layout '" + name + "' (known: " + known + ")");
}

const char* layout_name(StereoLayout layout) {
  for (const auto& entry : kLayouts) {
    if (entry.layout == layout) {
      return entry.name;
    }
  }
  return "unknown";
}

SyntheticView parse_synthetic_view(const std::string& name) {
  if (name == "both") {
    return SyntheticView::Both;
  }
  if (name == "left") {
    return SyntheticView::Left;
  }
  if (name == "right") {
    return SyntheticView::Right;
  }
  throw Error(ErrorKind::Option, "stereo", "synthetic_view must be 'both', 'left' or 'right', not '" + name + "'");
}

Fill parse_fill(const std::string& name) {
  if (name == "temporal") {
    return Fill::Temporal;
  }
  if (name == "spatial") {
    return Fill::Spatial;
  }
  if (name == "none") {
    return Fill::None;
  }
  throw Error(ErrorKind::Option, "stereo", "fill must be 'temporal', 'spatial' or 'none', not '" + name + "'");
}

const char* fill_name(Fill fill) {
  switch (fill) {
    case Fill::Temporal:
      return "temporal";
    case Fill::Spatial:
      return "spatial";
    case Fill::None:
      return "none";
  }
  return "?";
}

std::pair<int64_t, int64_t> packed_size(StereoLayout layout, int64_t eye_height, int64_t eye_width) {
  switch (layout) {
    case StereoLayout::FullSbs:
    case StereoLayout::CrossEyed:
      return {eye_height, 2 * eye_width};
    case StereoLayout::FullTb:
      return {2 * eye_height, eye_width};
    case StereoLayout::HalfSbs:
      return {eye_height, 2 * (eye_width / 2)};
    case StereoLayout::HalfTb:
      return {2 * (eye_height / 2), eye_width};
    default:
      return {eye_height, eye_width};
  }
}

std::pair<int64_t, int64_t> eye_size(const StereoOptions& o, int64_t height, int64_t width) {
  if (o.vr180) {
    return {o.vr180_canvas, o.vr180_canvas};
  }
  const int64_t eye_w = o.eye_width > 0 ? even(o.eye_width)
      : o.pixel_aspect == 1.0
      ? width
      : even(std::max<int64_t>(2, std::llround(static_cast<double>(width) * o.pixel_aspect)));
  const int64_t eye_h = o.eye_height > 0 ? even(o.eye_height) : height;
  return {eye_h, eye_w};
}

at::Tensor resize_frames(
    const at::Tensor& frames,
    int64_t width,
    int64_t height,
    bool keep_aspect,
    double pixel_aspect) {
  const int64_t h = frames.size(2);
  const int64_t w = frames.size(3);
  if (w == width && h == height) {
    return frames;
  }
  int64_t fit_w = width;
  int64_t fit_h = height;
  if (keep_aspect) {
    const double shown_w = static_cast<double>(w) * pixel_aspect; // the displayed width
    const double scale = std::min(static_cast<double>(width) / shown_w, static_cast<double>(height) / h);
    fit_w = std::min<int64_t>(width, std::max<int64_t>(1, std::llround(shown_w * scale)));
    fit_h = std::min<int64_t>(height, std::max<int64_t>(1, std::llround(h * scale)));
  }
  at::Tensor x = frames.to(at::kFloat);
  const bool shrink = fit_w < w || fit_h < h;
  x = shrink ? at::_upsample_bilinear2d_aa(x, {fit_h, fit_w}, false)
             : at::upsample_bilinear2d(x, {fit_h, fit_w}, false);
  at::Tensor scaled = to_u8(x);
  if (fit_w == width && fit_h == height) {
    return scaled;
  }
  at::Tensor canvas = at::zeros({frames.size(0), 3, height, width}, scaled.options());
  const int64_t top = (height - fit_h) / 2;
  const int64_t left = (width - fit_w) / 2;
  canvas.narrow(2, top, fit_h).narrow(3, left, fit_w).copy_(scaled);
  return canvas;
}

at::Tensor colorize_depth(const at::Tensor& depth) {
  SBSCONV_CHECK(depth.dim() == 4 && depth.size(1) == 1, Option, "stereo", "depth must be [N,1,H,W]");
  // Control points of sbsconv's colour map (monotonic in lightness), interpolated linearly
  // into a 256-entry table once; a frame is then one lookup per pixel.
  static const at::Tensor kTable = [] {
    const float stops[][3] = {
        {0.02f, 0.02f, 0.10f}, {0.23f, 0.05f, 0.42f}, {0.55f, 0.10f, 0.45f},
        {0.85f, 0.25f, 0.25f}, {0.98f, 0.55f, 0.10f}, {0.99f, 0.87f, 0.45f}, {1.00f, 1.00f, 0.85f}};
    constexpr int kCount = sizeof(stops) / sizeof(stops[0]);
    at::Tensor table = at::empty({256, 3}, at::kByte);
    for (int i = 0; i < 256; ++i) {
      const double x = i / 255.0 * (kCount - 1);
      const int lo = std::min(static_cast<int>(x), kCount - 2);
      const double f = x - lo;
      for (int c = 0; c < 3; ++c) {
        const double v = stops[lo][c] + (stops[lo + 1][c] - stops[lo][c]) * f;
        table[i][c] = static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 1.0) * 255.0));
      }
    }
    return table;
  }();
  at::Tensor index = depth.to(at::kFloat).mul(255.0).add_(0.5).floor_().clamp_(0, 255).to(at::kLong);
  at::Tensor rgb = kTable.to(depth.device()).index_select(0, index.flatten());
  // [N*H*W,3] seen as [N,3,H,W]: channels-last, no copy.
  return rgb.view({depth.size(0), depth.size(2), depth.size(3), 3}).permute({0, 3, 1, 2});
}

at::Tensor pack_eyes(const at::Tensor& left, const at::Tensor& right, StereoLayout layout) {
  SBSCONV_CHECK(left.sizes() == right.sizes(), Internal, "stereo", "the eyes differ in size");
  switch (layout) {
    case StereoLayout::FullSbs:
      return at::cat({left, right}, 3);
    case StereoLayout::CrossEyed:
      return at::cat({right, left}, 3);
    case StereoLayout::FullTb:
      return at::cat({left, right}, 2);
    case StereoLayout::HalfSbs:
      return at::cat({squeeze(left, true), squeeze(right, true)}, 3);
    case StereoLayout::HalfTb:
      return at::cat({squeeze(left, false), squeeze(right, false)}, 2);
    case StereoLayout::AnaglyphDubois:
    case StereoLayout::AnaglyphColor:
    case StereoLayout::AnaglyphGray:
      return anaglyph(left, right, layout);
    case StereoLayout::Separate:
      break;
  }
  return {};
}

StereoFrames render_stereo(
    const at::Tensor& frames,
    const at::Tensor& disparity_in,
    const StereoOptions& o,
    Vr180Projector* projector,
    TemporalFill* temporal,
    int64_t first_index) {
  at::InferenceMode guard;
  SBSCONV_CHECK(
      o.eye_width >= 0 && o.eye_height >= 0, Option, "stereo", "the eye size must not be negative");
  SBSCONV_CHECK(
      std::isfinite(o.pixel_aspect) && o.pixel_aspect >= 0.05 && o.pixel_aspect <= 20,
      Option,
      "stereo",
      "the pixel aspect ratio must be within 0.05..20");
  const int64_t n = frames.size(0);
  const int64_t h = frames.size(2);
  const int64_t w = frames.size(3);
  at::Tensor disparity = dilate_foreground(disparity_in.to(at::kFloat), frames, o.edge_dilation);

  // VR180: the eyes are rendered at the source's size and projected afterwards
  const auto [eye_h, eye_w] = o.vr180 ? std::pair<int64_t, int64_t>{h, w} : eye_size(o, h, w);
  const bool resized = eye_w != w || eye_h != h;
  const bool direct_sbs = !resized && !o.vr180 && frames.is_cpu() &&
      (o.layout == StereoLayout::FullSbs || o.layout == StereoLayout::CrossEyed);

  StereoFrames out;
  at::Tensor left_target;
  at::Tensor right_target;
  if (direct_sbs) {
    // Render straight into the two halves of the packed frame: no copy afterwards.
    // Channels-last: the packed RGB the encoder's colour conversion reads without reordering.
    out.packed = at::empty({n, 3, h, 2 * w}, frames.options().memory_format(at::MemoryFormat::ChannelsLast));
    const bool crossed = o.layout == StereoLayout::CrossEyed;
    left_target = out.packed.narrow(3, crossed ? w : 0, w);
    right_target = out.packed.narrow(3, crossed ? 0 : w, w);
  }
  const auto no_holes = at::zeros({n, 1, h, w}, at::TensorOptions().dtype(at::kBool).device(frames.device()));
  const bool over_time = temporal != nullptr && o.fill == Fill::Temporal;
  const bool filled = o.fill != Fill::None;
  std::vector<std::pair<double, EyeResult>> rendered; // for the fills
  rendered.reserve(2);
  auto render = [&](double share, const at::Tensor& target, at::Tensor& holes) {
    EyeResult r = render_eye(frames, disparity, share, filled, target, filled);
    holes = r.holes;
    if (filled) {
      rendered.emplace_back(share, r);
    }
    return r.image;
  };
  auto source_eye = [&](const at::Tensor& target, at::Tensor& holes) {
    holes = no_holes;
    if (target.defined()) {
      target.copy_(frames);
      return target;
    }
    return frames;
  };
  switch (o.synthetic_view) {
    case SyntheticView::Both:
      out.left = render(0.5, left_target, out.left_holes);
      out.right = render(-0.5, right_target, out.right_holes);
      break;
    case SyntheticView::Right:
      out.left = source_eye(left_target, out.left_holes);
      out.right = render(-1.0, right_target, out.right_holes);
      break;
    case SyntheticView::Left:
      out.left = render(1.0, left_target, out.left_holes);
      out.right = source_eye(right_target, out.right_holes);
      break;
  }
  std::vector<std::pair<double, EyeResult*>> eyes;
  for (auto& [share, r] : rendered) {
    eyes.emplace_back(share, &r);
  }
  if (over_time) {
    temporal->fill(first_index, eyes); // in place: the eye images are the same tensors
  }
  // what no frame saw: the background's texture (Note [Depth-guided patch fill]); then the
  // edges that cover part of a pixel
  fill_from_patches(frames, disparity, eyes);
  if (over_time) {
    temporal->steady(first_index, eyes); // Note [Temporal fill], step 6
  }
  for (auto& [share, r] : rendered) {
    blend_depth_edges(r); // Note [Depth edges within their pixel]
  }
  if (resized) {
    out.left = resize_frames(out.left, eye_w, eye_h, o.keep_aspect, o.pixel_aspect);
    out.right = resize_frames(out.right, eye_w, eye_h, o.keep_aspect, o.pixel_aspect);
  }
  if (o.vr180) {
    SBSCONV_CHECK(
        o.layout == StereoLayout::FullSbs || o.layout == StereoLayout::FullTb, Option, "stereo",
        "VR180 packs two full canvases: side by side or top-bottom");
    SBSCONV_CHECK(o.vr180_canvas > 0, Option, "stereo", "the VR180 canvas size must be > 0");
    Vr180Projector local;
    Vr180Projector& p = projector != nullptr ? *projector : local;
    auto square = [&](const at::Tensor& eye) {
      // the projection assumes square pixels: anamorphic eyes are shown at their display width
      return o.pixel_aspect == 1.0 ? eye
                                   : resize_frames(eye, even(std::max<int64_t>(2, std::llround(static_cast<double>(w) * o.pixel_aspect))), h,
                                                   false, 1.0);
    };
    out.left = p.project(square(out.left), o.vr180_fov, o.vr180_canvas);
    out.right = p.project(square(out.right), o.vr180_fov, o.vr180_canvas);
  }
  if (!direct_sbs && o.layout != StereoLayout::Separate) {
    out.packed = pack_eyes(out.left, out.right, o.layout);
  }
  return out;
}

at::Tensor infill_mask(const StereoFrames& eyes, const StereoOptions& o) {
  at::InferenceMode guard;
  SBSCONV_CHECK(
      o.layout != StereoLayout::Separate && o.layout != StereoLayout::AnaglyphDubois &&
          o.layout != StereoLayout::AnaglyphColor && o.layout != StereoLayout::AnaglyphGray,
      Option,
      "stereo",
      "an infill mask needs a side-by-side or top-bottom layout");
  auto eye = [&](const at::Tensor& holes, const at::Tensor& image, int red) {
    at::Tensor marked = holes.to(at::kByte).mul(255).expand({-1, 3, -1, -1}).contiguous();
    if (marked.size(2) != image.size(2) || marked.size(3) != image.size(3)) {
      // area-weighted when shrinking: any hole under a pixel leaves it above zero
      marked = resize_frames(marked, image.size(3), image.size(2), o.keep_aspect, o.pixel_aspect);
    }
    at::Tensor hole = marked.narrow(1, 0, 1).gt(0);
    at::Tensor colour = at::tensor({red, 128, 0}, at::TensorOptions().dtype(at::kByte).device(hole.device()))
                            .view({1, 3, 1, 1});
    return at::where(hole, colour, at::zeros_like(colour));
  };
  return pack_eyes(eye(eyes.left_holes, eyes.left, 0), eye(eyes.right_holes, eyes.right, 255), o.layout);
}

} // namespace sbsconv
