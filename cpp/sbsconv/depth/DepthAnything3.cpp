#include "sbsconv/depth/DepthAnything3.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <vector>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"
#include "sbsconv/common/Logging.h"

namespace sbsconv {

namespace {

constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;
constexpr double kPi = 3.14159265358979323846;
// PyTorch's LayerNorm default: the head's token norm is built without an epsilon.
constexpr double kHeadNormEps = 1e-5;
// Metres per unit of DA3METRIC's output at a focal length of this many pixels.
constexpr double kMetricFocal = 300.0;
// The horizontal field of view assumed for the metric model when none is given (the engine's
// default for the stereo geometry as well).
constexpr double kDefaultFovDegrees = 60.0;
// Frames per head call: the head's full-resolution maps are the largest activations.
constexpr int64_t kHeadChunk = 8;

// The head's sinusoidal UV embedding for a rows x cols map of `channels` channels, on an image
// of aspect ratio `aspect` (width / height): coordinates span the image diagonal's unit length,
// half the channels encode x, half y, each as [sin, cos] at frequencies 100^(-k / (channels/4)).
// Returns [1, channels, rows, cols] scaled by 0.1.
at::Tensor uv_embedding(int64_t rows, int64_t cols, double aspect, int64_t channels, const at::TensorOptions& options) {
  const auto f32 = options.dtype(at::kFloat);
  const double diagonal = std::sqrt(aspect * aspect + 1.0);
  const double span_x = aspect / diagonal;
  const double span_y = 1.0 / diagonal;
  const double ex = span_x * static_cast<double>(cols - 1) / static_cast<double>(cols);
  const double ey = span_y * static_cast<double>(rows - 1) / static_cast<double>(rows);
  const at::Tensor xs = at::linspace(-ex, ex, cols, f32);
  const at::Tensor ys = at::linspace(-ey, ey, rows, f32);
  const int64_t quarter = channels / 4;
  const at::Tensor omega =
      at::pow(100.0, at::arange(quarter, f32).div_(static_cast<double>(quarter))).reciprocal_();
  auto sincos = [&](const at::Tensor& pos) {
    at::Tensor a = pos.unsqueeze(1) * omega.unsqueeze(0);
    return at::cat({a.sin(), a.cos()}, 1);
  };
  const at::Tensor u = xs.unsqueeze(0).expand({rows, cols}).reshape({-1});
  const at::Tensor v = ys.unsqueeze(1).expand({rows, cols}).reshape({-1});
  at::Tensor e = at::cat({sincos(u), sincos(v)}, 1); // [rows*cols, channels]
  return e.view({rows, cols, channels}).permute({2, 0, 1}).unsqueeze(0).mul(0.1);
}

// Rotation matrices [N,3,3] from quaternions [N,4] stored x, y, z, w (not necessarily unit).
at::Tensor quaternion_to_matrix(const at::Tensor& q) {
  const at::Tensor i = q.select(1, 0), j = q.select(1, 1), k = q.select(1, 2), r = q.select(1, 3);
  const at::Tensor s = 2.0 / (q * q).sum(1);
  return at::stack(
             {1 - s * (j * j + k * k), s * (i * j - k * r), s * (i * k + j * r),
              s * (i * j + k * r), 1 - s * (i * i + k * k), s * (j * k - i * r),
              s * (i * k - j * r), s * (j * k + i * r), 1 - s * (i * i + j * j)},
             1)
      .view({-1, 3, 3});
}

// [N,3,4] or [N,4,4] rigid transforms -> their inverses as [N,4,4].
at::Tensor invert_rigid(const at::Tensor& m) {
  const at::Tensor r = m.narrow(1, 0, 3).narrow(2, 0, 3);
  const at::Tensor t = m.narrow(1, 0, 3).narrow(2, 3, 1);
  const at::Tensor rt = r.transpose(1, 2);
  at::Tensor out = at::zeros({m.size(0), 4, 4}, m.options());
  out.narrow(1, 0, 3).narrow(2, 0, 3).copy_(rt);
  out.narrow(1, 0, 3).narrow(2, 3, 1).copy_(-at::matmul(rt, t));
  out.select(1, 3).select(1, 3).fill_(1.0);
  return out;
}

// OpenCV's INTER_AREA shrinking axis `dim` of x (float, any device) to `out` samples: each
// output is the mean of the input over its footprint [i s, (i+1) s), s = in / out >= 1, partial
// pixels weighted by their overlap. A footprint touches at most ceil(s) + 1 inputs: the output
// is that many gathered rows (or columns), each times its weights.
at::Tensor area_resize_axis(const at::Tensor& x, int64_t dim, int64_t out) {
  const int64_t in = x.size(dim);
  if (in == out) {
    return x;
  }
  const double step = static_cast<double>(in) / static_cast<double>(out);
  const auto taps = static_cast<int64_t>(std::ceil(step)) + 1;
  std::vector<int64_t> index(static_cast<size_t>(taps * out));
  std::vector<float> weight(static_cast<size_t>(taps * out));
  for (int64_t i = 0; i < out; ++i) {
    const double a = static_cast<double>(i) * step;
    const double b = std::min(static_cast<double>(i + 1) * step, static_cast<double>(in));
    const auto first = static_cast<int64_t>(std::floor(a));
    for (int64_t j = 0; j < taps; ++j) {
      const int64_t p = first + j;
      const double overlap = std::min(b, static_cast<double>(p + 1)) - std::max(a, static_cast<double>(p));
      index[static_cast<size_t>(j * out + i)] = std::min(p, in - 1);
      weight[static_cast<size_t>(j * out + i)] = static_cast<float>(std::max(0.0, overlap) / step);
    }
  }
  const at::Tensor idx = at::tensor(index, at::kLong).to(x.device()).view({taps, out});
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[static_cast<size_t>(dim)] = out;
  const at::Tensor w = at::tensor(weight).to(x.device(), x.scalar_type()).view({taps, out});
  at::Tensor y = x.index_select(dim, idx[0]) * w[0].view(shape);
  for (int64_t j = 1; j < taps; ++j) {
    y.add_(x.index_select(dim, idx[j]) * w[j].view(shape));
  }
  return y;
}

// One of the reference's resizes of a uint8 image (x: float grey levels): OpenCV's INTER_CUBIC
// when enlarging, INTER_AREA when shrinking, rounded back to whole grey levels as OpenCV's
// uint8 output is.
at::Tensor reference_resize(const at::Tensor& x, int64_t h, int64_t w, bool enlarge) {
  if (x.size(2) == h && x.size(3) == w) {
    return x;
  }
  at::Tensor y = enlarge ? at::upsample_bicubic2d(x, {h, w}, /*align_corners=*/false)
                         : area_resize_axis(area_resize_axis(x, 2, h), 3, w);
  return y.round_().clamp_(0.0, 255.0);
}

int64_t nearest_multiple(int64_t x, int64_t p) {
  const int64_t down = (x / p) * p;
  const int64_t up = down + p;
  return std::max(p, up - x <= x - down ? up : down);
}

} // namespace

namespace {

// The reference's first resize: the longer side to input_size, the other in proportion
// (rounded half to even, as Python's round).
std::pair<int64_t, int64_t> longer_side_size(int64_t height, int64_t width, int64_t input_size) {
  if (std::max(height, width) == input_size) {
    return {height, width};
  }
  const double scale = static_cast<double>(input_size) / static_cast<double>(std::max(height, width));
  return {
      std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(static_cast<double>(height) * scale))),
      std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(static_cast<double>(width) * scale)))};
}

} // namespace

std::pair<int64_t, int64_t> upper_bound_size(int64_t height, int64_t width, int64_t input_size, int64_t multiple) {
  const auto [h, w] = longer_side_size(height, width, input_size);
  return {nearest_multiple(h, multiple), nearest_multiple(w, multiple)};
}

double focal_from_fov(double fov_degrees, int64_t width) {
  return static_cast<double>(width) / 2.0 / std::tan(fov_degrees * kPi / 360.0);
}

// ---- head ---------------------------------------------------------------------------------------

// The DPT head of Depth Anything 3 (model.head.*): the DPT of Depth-Anything-V2 with one
// residual unit less in its coarsest fusion block and exp for depth; the monocular models add
// a sky branch beside the depth output, the any-view models (DualDPT) a LayerNorm on the
// tokens, a sinusoidal UV embedding after each projection and before the output convolutions,
// and a second output channel for confidence. DualDPT's auxiliary (ray) branch is computed by
// the reference and then dropped when the camera decoder poses the views; it is not run here.
class DepthAnything3::Head {
 public:
  Head(const DepthAnything3Config& c, int64_t in_channels, int64_t patch, WeightReader& w, const std::string& prefix)
      : dual_(c.any_view), patch_(patch) {
    const int64_t f = c.features;
    const auto& oc = c.out_channels;
    SBSCONV_CHECK(
        f >= 2 && f % 8 == 0 && std::all_of(oc.begin(), oc.end(), [](int64_t v) { return v >= 4 && v % 4 == 0; }),
        Model,
        "build model",
        "the head's features must be a multiple of 8 and its out_channels multiples of 4");
    if (dual_) {
      norm_w_ = w.take(prefix + "norm.weight", {in_channels});
      norm_b_ = w.take(prefix + "norm.bias", {in_channels});
    }
    trunk_ = take_dpt_trunk(w, prefix, in_channels, f, oc);
    output1_ = take_conv(w, prefix + "scratch.output_conv1", f / 2, f, 3);
    output2a_ = take_conv(w, prefix + "scratch.output_conv2.0", 32, f / 2, 3);
    output2b_ = take_conv(w, prefix + "scratch.output_conv2.2", dual_ ? 2 : 1, 32, 1);
    if (dual_) {
      for (const char* aux : {"refinenet1_aux.", "refinenet2_aux.", "refinenet3_aux.", "refinenet4_aux.",
                              "output_conv1_aux.", "output_conv2_aux."}) {
        w.ignore_prefix(prefix + "scratch." + aux);
      }
    } else {
      sky2a_ = take_conv(w, prefix + "scratch.sky_output_conv2.0", 32, f / 2, 3);
      sky2b_ = take_conv(w, prefix + "scratch.sky_output_conv2.2", 1, 32, 1);
    }
  }

  // tokens: four [N, gh*gw, C]; returns the depth and the second output (confidence or sky),
  // each [N,1,gh*p,gw*p] in float32.
  std::pair<at::Tensor, at::Tensor> forward(const std::vector<at::Tensor>& tokens, int64_t gh, int64_t gw) const {
    const int64_t n = tokens[0].size(0);
    std::vector<at::Tensor> depth, second;
    for (int64_t begin = 0; begin < n; begin += kHeadChunk) {
      const int64_t count = std::min(kHeadChunk, n - begin);
      std::vector<at::Tensor> part;
      for (const at::Tensor& t : tokens) {
        part.push_back(t.narrow(0, begin, count));
      }
      auto [d, s] = run(part, gh, gw);
      depth.push_back(d);
      second.push_back(s);
    }
    return {at::cat(depth), at::cat(second)};
  }

 private:
  // The UV embedding depends only on the map's shape: made once per shape (the full-resolution
  // one is the head's largest table), not per call.
  at::Tensor with_uv(const at::Tensor& x, double aspect) const {
    const std::vector<int64_t> key{
        x.size(1), x.size(2), x.size(3), static_cast<int64_t>(x.scalar_type()), std::llround(aspect * 1e9)};
    auto it = uv_cache_.find(key);
    if (it == uv_cache_.end()) {
      at::Tensor e = uv_embedding(x.size(2), x.size(3), aspect, x.size(1), x.options()).to(x.scalar_type());
      it = uv_cache_.emplace(key, e.contiguous(at::MemoryFormat::ChannelsLast)).first;
    }
    return x + it->second;
  }

  std::pair<at::Tensor, at::Tensor> run(const std::vector<at::Tensor>& tokens, int64_t gh, int64_t gw) const {
    const double aspect = static_cast<double>(gw) / static_cast<double>(gh);
    std::array<at::Tensor, 4> layers;
    for (int i = 0; i < 4; ++i) {
      at::Tensor t = tokens[i];
      if (dual_) {
        t = at::layer_norm(t, {t.size(2)}, norm_w_, norm_b_, kHeadNormEps);
      }
      at::Tensor x = t.transpose(1, 2).reshape({t.size(0), t.size(2), gh, gw}).contiguous(kChannelsLast);
      x = conv(trunk_.projects[i], x);
      if (dual_) {
        x = with_uv(x, aspect);
      }
      if (i == 0) {
        x = at::conv_transpose2d(x, trunk_.resize[0].weight, trunk_.resize[0].bias, {4, 4});
      } else if (i == 1) {
        x = at::conv_transpose2d(x, trunk_.resize[1].weight, trunk_.resize[1].bias, {2, 2});
      } else if (i == 3) {
        x = conv(trunk_.resize[3], x, 2, 1);
      }
      layers[i] = conv(trunk_.layer_rn[i], x.contiguous(kChannelsLast), 1, 1);
    }
    at::Tensor path = fuse_block(trunk_.refine[3], layers[3], nullptr, layers[2].sizes().slice(2));
    path = fuse_block(trunk_.refine[2], path, &layers[2], layers[1].sizes().slice(2));
    path = fuse_block(trunk_.refine[1], path, &layers[1], layers[0].sizes().slice(2));
    path = fuse_block(trunk_.refine[0], path, &layers[0], {});
    at::Tensor out = conv(output1_, path, 1, 1);
    out = at::upsample_bilinear2d(out, {gh * patch_, gw * patch_}, /*align_corners=*/true);
    if (dual_) {
      out = with_uv(out, aspect);
    }
    at::Tensor logits = conv(output2b_, conv(output2a_, out, 1, 1).relu_()).to(at::kFloat);
    if (dual_) {
      at::Tensor depth = logits.narrow(1, 0, 1).exp();
      at::Tensor confidence = logits.narrow(1, 1, 1).exp().add_(1.0);
      return {depth.contiguous(), confidence.contiguous()};
    }
    at::Tensor sky = conv(sky2b_, conv(sky2a_, out, 1, 1).relu_()).relu_().to(at::kFloat);
    return {logits.exp(), sky};
  }

  bool dual_;
  int64_t patch_;
  at::Tensor norm_w_, norm_b_;
  DptTrunk trunk_;
  DptHead::Conv output1_, output2a_, output2b_, sky2a_, sky2b_;
  mutable std::map<std::vector<int64_t>, at::Tensor> uv_cache_; // one owner (the model)
};

// ---- camera decoder -----------------------------------------------------------------------------

// model.cam_dec.*: two ReLU layers on each view's camera token, then the translation, a
// quaternion (x, y, z, w) and the vertical and horizontal fields of view (radians). Run in
// float32 whatever the model's dtype, as the reference.
class DepthAnything3::CameraDecoder {
 public:
  CameraDecoder(int64_t width, WeightReader& w, const std::string& prefix) {
    auto linear = [&](const std::string& name, int64_t out, int64_t in) {
      return std::make_pair(w.take_fp32(name + ".weight", {out, in}), w.take_fp32(name + ".bias", {out}));
    };
    fc0_ = linear(prefix + "backbone.0", width, width);
    fc2_ = linear(prefix + "backbone.2", width, width);
    t_ = linear(prefix + "fc_t", 3, width);
    q_ = linear(prefix + "fc_qvec", 4, width);
    fov_ = linear(prefix + "fc_fov.0", 2, width);
  }

  // tokens [N, width] -> world-to-camera [N,3,4] and intrinsics [N,3,3] for h x w inputs.
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& tokens, int64_t h, int64_t w) const {
    at::Tensor x = tokens.to(at::kFloat);
    x = at::linear(x, fc0_.first, fc0_.second).relu_();
    x = at::linear(x, fc2_.first, fc2_.second).relu_();
    const at::Tensor t = at::linear(x, t_.first, t_.second);
    const at::Tensor q = at::linear(x, q_.first, q_.second);
    const at::Tensor fov = at::linear(x, fov_.first, fov_.second).relu_();
    const int64_t n = x.size(0);
    at::Tensor camera_to_world = at::cat({quaternion_to_matrix(q), t.unsqueeze(2)}, 2);
    at::Tensor world_to_camera = invert_rigid(camera_to_world).narrow(1, 0, 3).contiguous();
    const at::Tensor fy = (static_cast<double>(h) / 2.0) / (fov.select(1, 0) / 2.0).tan().clamp_min(1e-6);
    const at::Tensor fx = (static_cast<double>(w) / 2.0) / (fov.select(1, 1) / 2.0).tan().clamp_min(1e-6);
    at::Tensor k = at::zeros({n, 3, 3}, x.options());
    k.select(1, 0).select(1, 0).copy_(fx);
    k.select(1, 1).select(1, 1).copy_(fy);
    k.select(1, 0).select(1, 2).fill_(static_cast<double>(w) / 2.0);
    k.select(1, 1).select(1, 2).fill_(static_cast<double>(h) / 2.0);
    k.select(1, 2).select(1, 2).fill_(1.0);
    return {world_to_camera, k};
  }

 private:
  std::pair<at::Tensor, at::Tensor> fc0_, fc2_, t_, q_, fov_;
};

// ---- model --------------------------------------------------------------------------------------

DepthAnything3::DepthAnything3(
    std::string name,
    const DepthAnything3Config& config,
    const WeightMap& weights,
    const ModelOptions& options,
    const DepthAnything3Options& video)
    : name_(std::move(name)), config_(config), options_(options), video_(video) {
  check_head_layers(config.layers, config.encoder.depth);
  SBSCONV_CHECK(
      !config.any_view || (config.encoder.alt_start >= 0 && config.encoder.cat_token),
      Model,
      "build model",
      "an any-view Depth Anything 3 alternates attention (alt_start) and concatenates tokens");
  SBSCONV_CHECK(
      !(config.any_view && config.metric), Model, "build model", "the metric Depth Anything 3 is monocular");
  SBSCONV_CHECK(
      video.window >= 2 && video.window <= 256 && video.overlap >= 1 && video.overlap < video.window,
      Option,
      "build model",
      "the video window must hold 2..256 frames and overlap the previous one by 1..window-1");
  SBSCONV_CHECK(
      options.input_size >= config.encoder.patch_size, Option, "build model", "input_size must be at least the patch size");
  WeightReader reader(weights, options.device, options.dtype, name_);
  encoder_ = std::make_unique<DinoV2Encoder>(config.encoder, reader, "model.backbone.pretrained.");
  if (options.int8) {
    encoder_->quantize_linears(); // Note [int8 linear layers]
  }
  const int64_t width = config.encoder.embed_dim * (config.encoder.cat_token ? 2 : 1);
  head_ = std::make_unique<Head>(config, width, config.encoder.patch_size, reader, "model.head.");
  if (config.any_view) {
    camera_ = std::make_unique<CameraDecoder>(width, reader, "model.cam_dec.");
  }
  // The camera encoder conditions the backbone on known cameras, which video frames do not have;
  // the giant model's Gaussian-splatting head and adapter render novel views, not depth.
  reader.ignore_prefix("model.cam_enc.");
  reader.ignore_prefix("model.gs_head.");
  reader.ignore_prefix("model.gs_adapter.");
  reader.check();
}

DepthAnything3::~DepthAnything3() = default;

int64_t DepthAnything3::preferred_batch(bool on_gpu) const {
  if (config_.any_view) {
    return video_.window - video_.overlap; // one window's new frames per engine batch
  }
  return on_gpu ? 8 : 2;
}

void DepthAnything3::set_field_of_view(std::optional<double> degrees) {
  SBSCONV_CHECK(
      !degrees || (std::isfinite(*degrees) && *degrees > 0 && *degrees < 180),
      Option,
      "fov_degrees",
      "the field of view must be within 0..180 degrees");
  fov_degrees_ = degrees;
}

at::Tensor DepthAnything3::preprocess(const at::Tensor& frames) const {
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(0) >= 1 && frames.size(1) == 3 && frames.size(2) >= 1 &&
          frames.size(3) >= 1 && frames.scalar_type() == at::kByte,
      Option,
      "depth",
      "frames must be uint8 RGB [N,3,H,W] with at least one frame of at least one pixel");
  // The reference's two resizes of the uint8 picture: the longer side to input_size, then each
  // side to its nearest multiple of the patch.
  const int64_t height = frames.size(2);
  const int64_t width = frames.size(3);
  const auto [sh, sw] = longer_side_size(height, width, options_.input_size);
  const auto [h, w] = upper_bound_size(height, width, options_.input_size, config_.encoder.patch_size);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(options_.device);
  at::Tensor x = frames.to(options_.device).to(at::kFloat).contiguous();
  x = reference_resize(x, sh, sw, options_.input_size > std::max(height, width));
  x = reference_resize(x, h, w, h > sh || w > sw);
  x = x.div_(255.0).sub_(device_values({0.485, 0.456, 0.406}, f32).view({1, 3, 1, 1}))
          .div_(device_values({0.229, 0.224, 0.225}, f32).view({1, 3, 1, 1}));
  return x.to(options_.dtype);
}

DepthAnything3Output DepthAnything3::predict(const at::Tensor& pixel_values, int64_t batch) {
  at::InferenceMode guard;
  SBSCONV_CHECK(
      pixel_values.dim() == 4 && pixel_values.size(1) == 3 && batch >= 1 && pixel_values.size(0) % batch == 0,
      Option,
      "depth",
      "pixel_values must be [N,3,h,w] holding whole groups of views");
  const int64_t p = config_.encoder.patch_size;
  at::Tensor x = pixel_values.to(options_.device, options_.dtype);
  const int64_t gh = x.size(2) / p;
  const int64_t gw = x.size(3) / p;
  const int64_t views = x.size(0) / batch;
  MultiViewFeatures features = encoder_->multi_view_layers(x, views, config_.layers, video_.reference);
  auto [depth, second] = head_->forward(features.tokens, gh, gw);
  DepthAnything3Output out;
  const int64_t h = gh * p;
  const int64_t w = gw * p;
  if (config_.any_view) {
    out.confidence = second;
    std::tie(out.world_to_camera, out.intrinsics) = camera_->forward(features.camera_tokens.back(), h, w);
  } else {
    out.sky = second;
    // The sky goes to the far plane: each image's sky pixels (sky >= 0.3) take the 99th
    // percentile of its other depths, when each part has more than 10 pixels. Computed on the
    // device for every image at once: sky pixels sort last as +inf.
    const int64_t n = depth.size(0);
    const at::Tensor flat = depth.reshape({n, -1});
    const at::Tensor ground = second.reshape({n, -1}) < 0.3;
    const at::Tensor count = ground.sum(1, /*keepdim=*/true); // [n,1] long
    const at::Tensor sorted = std::get<0>(at::where(ground, flat, INFINITY).sort(1));
    const at::Tensor position = (count - 1).clamp_min(0).to(at::kDouble) * 0.99;
    const at::Tensor lower = position.floor();
    const at::Tensor frac = (position - lower).to(at::kFloat);
    const at::Tensor lo = sorted.gather(1, lower.to(at::kLong));
    const at::Tensor hi = sorted.gather(1, position.ceil().to(at::kLong));
    const at::Tensor far = lo + (hi - lo) * frac; // NumPy's linear quantile
    const at::Tensor apply = (count > 10) & ((count.neg() + flat.size(1)) > 10);
    depth = at::where(ground.logical_not() & apply, far, flat).view_as(depth);
  }
  out.depth = depth;
  return out;
}

at::Tensor DepthAnything3::forward(const at::Tensor& pixel_values) {
  at::InferenceMode guard;
  return predict(pixel_values, config_.any_view ? 1 : pixel_values.size(0)).depth;
}

at::Tensor DepthAnything3::to_frame_size(const at::Tensor& depth) const {
  return at::upsample_bilinear2d(depth, {frame_h_, frame_w_}, /*align_corners=*/true).contiguous();
}

void DepthAnything3::check_frames(const at::Tensor& frames) {
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(1) == 3 && frames.scalar_type() == at::kByte && frames.size(2) > 0 &&
          frames.size(3) > 0,
      Option,
      "depth",
      "frames must be uint8 RGB [N,3,H,W]");
  if (frame_h_ != 0 && (frames.size(2) != frame_h_ || frames.size(3) != frame_w_)) {
    SBSCONV_CHECK(pending_.empty(), Option, "depth", "the frame size changed with frames still waiting: flush() first");
    reset(); // a new size is a new sequence
  }
  frame_h_ = frames.size(2);
  frame_w_ = frames.size(3);
}

DepthOutput DepthAnything3::infer(const at::Tensor& frames) {
  at::InferenceMode guard;
  if (!config_.any_view) {
    const int64_t n = frames.size(0);
    at::Tensor x = preprocess(frames);
    at::Tensor depth = predict(x, n).depth;
    if (config_.metric) {
      // Note [Depth Anything 3 metric scale]: metres = focal (pixels of the network input) x
      // output / 300; the focal length from the field of view given, else from 60 degrees.
      if (!fov_degrees_ && !warned_fov_) {
        warned_fov_ = true;
        log(LogLevel::Warning, name_ + ": no field of view given; metric depth assumes 60 degrees horizontally (give fov_degrees=)");
      }
      depth = depth * (focal_from_fov(fov_degrees_.value_or(kDefaultFovDegrees), x.size(3)) / kMetricFocal);
    }
    DepthOutput out;
    out.depth = at::upsample_bilinear2d(depth, {frames.size(2), frames.size(3)}, /*align_corners=*/true).contiguous();
    return out;
  }
  check_frames(frames);
  at::Tensor x = preprocess(frames);
  for (int64_t i = 0; i < x.size(0); ++i) {
    pending_.push_back(x[i]);
  }
  std::vector<DepthOutput> outs;
  while (true) {
    const int64_t carried = carry_input_.defined() ? carry_input_.size(0) : 0;
    const auto need = static_cast<size_t>(video_.window - carried);
    if (pending_.size() < need) {
      break;
    }
    std::vector<at::Tensor> taken(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(need));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(need));
    at::Tensor inputs = at::stack(taken);
    if (carried > 0) {
      inputs = at::cat({carry_input_, inputs});
    }
    outs.push_back(run_window(inputs, carried));
  }
  DepthOutput out;
  if (outs.empty()) {
    out.depth = at::empty({0, 1, frame_h_, frame_w_}, frames.options().dtype(at::kFloat).device(options_.device));
    return out;
  }
  if (outs.size() == 1) {
    return outs[0];
  }
  std::vector<at::Tensor> depth, fov, pose;
  for (const DepthOutput& o : outs) {
    depth.push_back(o.depth);
    fov.push_back(*o.fov_degrees);
    pose.push_back(*o.camera_to_world);
  }
  out.depth = at::cat(depth);
  out.fov_degrees = at::cat(fov);
  out.camera_to_world = at::cat(pose);
  return out;
}

DepthOutput DepthAnything3::flush() {
  if (!config_.any_view || pending_.empty()) {
    return {};
  }
  at::InferenceMode guard;
  at::Tensor inputs = at::stack(pending_);
  pending_.clear();
  const int64_t carried = carry_input_.defined() ? carry_input_.size(0) : 0;
  if (carried > 0) {
    inputs = at::cat({carry_input_, inputs});
  }
  return run_window(inputs, carried);
}

DepthOutput DepthAnything3::run_window(const at::Tensor& inputs, int64_t carried) {
  const int64_t total = inputs.size(0);
  DepthAnything3Output net = predict(inputs, 1);
  at::Tensor depth = net.depth.to(at::kFloat);
  at::Tensor pose = invert_rigid(net.world_to_camera); // camera-to-world [T,4,4], window frame
  at::Tensor to_sequence; // [1,4,4] window frame -> sequence frame
  if (carried > 0) {
    // One scale for the window: the median ratio of the released depth of the overlap to
    // this window's depth of the same frames.
    const at::Tensor scale = (carry_depth_ / depth.narrow(0, 0, carried)).reshape({-1}).median();
    depth = depth * scale;
    pose.narrow(1, 0, 3).narrow(2, 3, 1).mul_(scale);
    to_sequence = at::matmul(carry_pose_.narrow(0, carried - 1, 1), invert_rigid(pose.narrow(0, carried - 1, 1)));
  } else {
    to_sequence = invert_rigid(pose.narrow(0, 0, 1)); // the sequence's first frame at the origin
  }
  pose = at::matmul(to_sequence, pose);
  const int64_t keep = std::min(video_.overlap, total);
  carry_input_ = inputs.narrow(0, total - keep, keep).clone();
  carry_depth_ = depth.narrow(0, total - keep, keep).clone();
  carry_pose_ = pose.narrow(0, total - keep, keep).clone();

  const int64_t fresh = total - carried;
  DepthOutput out;
  out.depth = to_frame_size(depth.narrow(0, carried, fresh));
  const at::Tensor fx = net.intrinsics.narrow(0, carried, fresh).select(1, 0).select(1, 0);
  out.fov_degrees = (static_cast<double>(inputs.size(3)) / 2.0 / fx).atan() * (360.0 / kPi);
  out.camera_to_world = pose.narrow(0, carried, fresh).narrow(1, 0, 3).contiguous();
  return out;
}

void DepthAnything3::reset() {
  pending_.clear();
  carry_input_ = at::Tensor();
  carry_depth_ = at::Tensor();
  carry_pose_ = at::Tensor();
  frame_h_ = 0;
  frame_w_ = 0;
}

std::map<std::string, at::Tensor> DepthAnything3::state() const {
  std::map<std::string, at::Tensor> s;
  if (!config_.any_view || frame_h_ == 0) {
    return s;
  }
  s["frame_size"] = at::tensor(std::vector<int64_t>{frame_h_, frame_w_});
  if (carry_input_.defined()) {
    s["carry_input"] = carry_input_;
    s["carry_depth"] = carry_depth_;
    s["carry_pose"] = carry_pose_;
  }
  if (!pending_.empty()) {
    s["pending"] = at::stack(pending_);
  }
  return s;
}

void DepthAnything3::load_state(const std::map<std::string, at::Tensor>& state) {
  reset();
  auto it = state.find("frame_size");
  if (it == state.end()) {
    return;
  }
  const at::Tensor size = it->second.to(at::kCPU, at::kLong).reshape({-1});
  SBSCONV_CHECK(size.numel() == 2, Input, "resume", "the saved Depth Anything 3 state has no frame size");
  frame_h_ = size[0].item<int64_t>();
  frame_w_ = size[1].item<int64_t>();
  const auto [h, w] = upper_bound_size(frame_h_, frame_w_, options_.input_size, config_.encoder.patch_size);
  auto get = [&](const char* key) {
    auto found = state.find(key);
    return found == state.end() ? at::Tensor() : found->second.to(options_.device);
  };
  const at::Tensor input = get("carry_input");
  const at::Tensor depth = get("carry_depth");
  const at::Tensor pose = get("carry_pose");
  if (input.defined()) {
    SBSCONV_CHECK(input.dim() == 4, Input, "resume", "the saved Depth Anything 3 state does not match this model and input size");
    const int64_t k = input.size(0);
    SBSCONV_CHECK(
        input.dim() == 4 && input.size(1) == 3 && input.size(2) == h && input.size(3) == w && depth.defined() &&
            pose.defined() && depth.sizes() == at::IntArrayRef({k, 1, h, w}) &&
            pose.sizes() == at::IntArrayRef({k, 4, 4}) && k >= 1,
        Input,
        "resume",
        "the saved Depth Anything 3 state does not match this model and input size");
    // Saved with another window (another device): the last `overlap` frames carry on.
    const int64_t keep = std::min(k, video_.overlap);
    carry_input_ = input.narrow(0, k - keep, keep).to(options_.dtype);
    carry_depth_ = depth.narrow(0, k - keep, keep).to(at::kFloat);
    carry_pose_ = pose.narrow(0, k - keep, keep).to(at::kFloat);
  }
  const at::Tensor pending = get("pending");
  if (pending.defined()) {
    SBSCONV_CHECK(
        pending.dim() == 4 && pending.size(1) == 3 && pending.size(2) == h && pending.size(3) == w,
        Input,
        "resume",
        "the saved Depth Anything 3 state does not match this model and input size");
    for (int64_t i = 0; i < pending.size(0); ++i) {
      pending_.push_back(pending[i].to(options_.dtype));
    }
  }
}

std::map<std::string, at::Tensor> DepthAnything3::prepared_weights() const {
  std::map<std::string, at::Tensor> out;
  encoder_->prepared_weights(out);
  return out;
}

} // namespace sbsconv
