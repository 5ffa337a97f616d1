#include "sbsconv/depth/DepthAnythingV2.h"

#include <ATen/ATen.h>

#include <cmath>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"
#include "sbsconv/depth/Int8Linear.h"

namespace sbsconv {

namespace {

// NumPy's np.round (half to even) applied to x / multiple, times multiple; ceil instead when
// that falls below min_value (Depth-Anything-V2's Resize.constrain_to_multiple_of).
int64_t constrain_to_multiple(double x, int64_t multiple, int64_t min_value) {
  auto y = static_cast<int64_t>(std::nearbyint(x / static_cast<double>(multiple))) * multiple;
  if (y < min_value) {
    y = static_cast<int64_t>(std::ceil(x / static_cast<double>(multiple))) * multiple;
  }
  return y;
}

} // namespace

std::pair<int64_t, int64_t> lower_bound_size(int64_t height, int64_t width, int64_t input_size, int64_t multiple) {
  double scale_h = static_cast<double>(input_size) / static_cast<double>(height);
  double scale_w = static_cast<double>(input_size) / static_cast<double>(width);
  // Keep the aspect ratio with the larger scale, so that both sides reach the lower bound.
  if (scale_w > scale_h) {
    scale_h = scale_w;
  } else {
    scale_w = scale_h;
  }
  return {
      constrain_to_multiple(scale_h * static_cast<double>(height), multiple, input_size),
      constrain_to_multiple(scale_w * static_cast<double>(width), multiple, input_size)};
}

at::Tensor depth_anything_input(
    const at::Tensor& frames,
    int64_t input_size,
    int64_t patch,
    at::Device device,
    at::ScalarType dtype) {
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(1) == 3 && frames.scalar_type() == at::kByte,
      Option,
      "depth",
      "frames must be uint8 RGB [N,3,H,W]");
  const auto [h, w] = lower_bound_size(frames.size(2), frames.size(3), input_size, patch);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  at::Tensor x = frames.to(device).to(at::kFloat).div_(255.0);
  x = at::upsample_bicubic2d(x.contiguous(), {h, w}, /*align_corners=*/false);
  // ImageNet's mean and deviation made on the device (a host tensor copied over would wait for
  // the device: Note [Host synchronisation])
  x = x.sub_(device_values({0.485, 0.456, 0.406}, f32).view({1, 3, 1, 1}))
          .div_(device_values({0.229, 0.224, 0.225}, f32).view({1, 3, 1, 1}));
  return x.to(dtype);
}

void check_head_layers(const std::vector<int64_t>& layers, int64_t depth) {
  SBSCONV_CHECK(layers.size() == 4, Model, "build model", "the DPT head reads exactly four layers");
  for (size_t i = 0; i < layers.size(); ++i) {
    SBSCONV_CHECK(
        layers[i] >= 0 && layers[i] < depth, Model, "build model", "a head layer index is outside the encoder's depth");
    // The head reads four distinct layers, shallow to deep; a repeated or unsorted list is a
    // damaged configuration (the reference would read other features than it names).
    SBSCONV_CHECK(
        i == 0 || layers[i] > layers[i - 1], Model, "build model", "the head's layers must be distinct and increasing");
  }
}

DepthAnythingV2::DepthAnythingV2(
    std::string name,
    const DepthAnythingV2Config& config,
    const WeightMap& weights,
    const ModelOptions& options)
    : name_(std::move(name)), config_(config), options_(options) {
  check_head_layers(config.layers, config.encoder.depth);
  SBSCONV_CHECK(options.input_size >= config.encoder.patch_size, Option, "build model",
                "input_size must be at least the patch size");
  WeightReader reader(weights, options.device, options.dtype, name_);
  encoder_ = std::make_unique<DinoV2Encoder>(config.encoder, reader, "pretrained.");
  if (options.int8) {
    encoder_->quantize_linears(); // Note [int8 linear layers]
  }
  DptHeadConfig head = config.head;
  head.in_channels = config.encoder.embed_dim;
  head.patch_size = config.encoder.patch_size;
  // Note [int8 with the head in bfloat16]
  const bool bf16_head =
      options.int8 && options.device.is_cpu() && options.dtype == at::kFloat && cpu_has_bf16_dot_products();
  if ((options.dtype == at::kBFloat16 && options.device.is_cpu()) || bf16_head) {
    head.fp32_output = true; // Note [bf16 on the CPU: the depth in float32]
    head.fp32_depth = true;
  }
  head_ = std::make_unique<DptHead>(head, reader, "depth_head.");
  reader.check();
  if (bf16_head) {
    head_->convert_convolutions(at::kBFloat16);
  }
}

at::Tensor DepthAnythingV2::forward(const at::Tensor& pixel_values) {
  at::InferenceMode guard;
  SBSCONV_CHECK(
      pixel_values.dim() == 4 && pixel_values.size(1) == 3,
      Option,
      "depth",
      "pixel_values must be [N,3,h,w]");
  at::Tensor x = pixel_values.to(options_.device, options_.dtype);
  const int64_t p = config_.encoder.patch_size;
  const int64_t gh = x.size(2) / p;
  const int64_t gw = x.size(3) / p;
  std::vector<at::Tensor> tokens = encoder_->intermediate_layers(x, config_.layers);
  return head_->forward(tokens, gh, gw);
}

at::Tensor DepthAnythingV2::preprocess(const at::Tensor& frames) const {
  return depth_anything_input(frames, options_.input_size, config_.encoder.patch_size, options_.device, options_.dtype);
}

DepthOutput DepthAnythingV2::infer(const at::Tensor& frames) {
  at::InferenceMode guard;
  at::Tensor x = preprocess(frames);
  at::Tensor depth = forward(x).to(at::kFloat);
  depth = at::upsample_bilinear2d(depth, {frames.size(2), frames.size(3)}, /*align_corners=*/true);
  DepthOutput out;
  out.depth = depth.contiguous();
  return out;
}

ModelOptions make_model_options(const std::string& device, const std::string& precision, int64_t input_size) {
  ModelOptions o;
  o.device = resolve_device(device);
  // Note [int8 linear layers]: the encoder's linear layers in int8, the rest in float32.
  o.int8 = precision == "int8";
  if (o.int8 && !o.device.is_cpu()) {
    throw Error(
        ErrorKind::Option,
        "precision",
        "precision='int8' runs on the CPU; on " + o.device.str() + " use 'auto' (fp16) or 'bf16'");
  }
  o.dtype = o.int8 ? at::kFloat : resolve_precision(precision, o.device);
  if (input_size < 14 || input_size > 4096) {
    throw Error(ErrorKind::Option, "build model", "input_size must be within 14..4096");
  }
  o.input_size = input_size;
  return o;
}

std::map<std::string, at::Tensor> DepthAnythingV2::prepared_weights() const {
  std::map<std::string, at::Tensor> out;
  encoder_->prepared_weights(out);
  return out;
}

} // namespace sbsconv
