#include "sbsconv/depth/U2Net.h"

#include <ATen/ATen.h>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

constexpr double kBatchNormEpsilon = 1e-5; // nn.BatchNorm2d's default, which the reference keeps

// A 3x3 convolution with its batch norm folded in, then ReLU (the reference's REBNCONV).
struct ConvBnRelu {
  at::Tensor weight;
  at::Tensor bias;
  int64_t dilation = 1;

  at::Tensor operator()(const at::Tensor& x) const {
    return at::conv2d(x, weight, bias, {1, 1}, {dilation, dilation}, {dilation, dilation}).relu_();
  }
};

ConvBnRelu read_conv_bn(
    WeightReader& reader,
    const std::string& prefix,
    int64_t in,
    int64_t out,
    int64_t dilation,
    at::ScalarType dtype) {
  at::Tensor w = reader.take_fp32(prefix + "conv_s1.weight", {out, in, 3, 3});
  at::Tensor b = reader.take_fp32(prefix + "conv_s1.bias", {out});
  at::Tensor gamma = reader.take_fp32(prefix + "bn_s1.weight", {out});
  at::Tensor beta = reader.take_fp32(prefix + "bn_s1.bias", {out});
  at::Tensor mean = reader.take_fp32(prefix + "bn_s1.running_mean", {out});
  at::Tensor var = reader.take_fp32(prefix + "bn_s1.running_var", {out});
  reader.ignore(prefix + "bn_s1.num_batches_tracked");
  ConvBnRelu conv;
  conv.dilation = dilation;
  if (!w.defined() || !b.defined() || !gamma.defined() || !beta.defined() || !mean.defined() || !var.defined()) {
    return conv; // reader.check() reports what is missing
  }
  const at::Tensor scale = gamma / (var + kBatchNormEpsilon).sqrt();
  conv.weight = (w * scale.view({-1, 1, 1, 1})).to(dtype).contiguous(at::MemoryFormat::ChannelsLast);
  conv.bias = ((b - mean) * scale + beta).to(dtype);
  return conv;
}

at::Tensor upsample_like(const at::Tensor& x, const at::Tensor& target) {
  if (x.size(2) == target.size(2) && x.size(3) == target.size(3)) {
    return x;
  }
  return at::upsample_bilinear2d(x, {target.size(2), target.size(3)}, /*align_corners=*/false);
}

at::Tensor pool(const at::Tensor& x) {
  return at::max_pool2d(x, {2, 2}, {2, 2}, {0, 0}, {1, 1}, /*ceil_mode=*/true);
}

// One stage's shape: an RSU block of `levels` levels (dilated: RSU-4F) from `in` channels,
// `mid` inside, to `out`.
struct StageShape {
  int64_t levels;
  bool dilated;
  int64_t in;
  int64_t mid;
  int64_t out;
};

// The reference's U2NET and U2NETP: encoder stages 1..6, decoder stages 5d..1d.
struct Layout {
  std::vector<StageShape> encoder;
  std::vector<StageShape> decoder;
};

Layout layout(bool small) {
  if (small) {
    return {
        {{7, false, 3, 16, 64},
         {6, false, 64, 16, 64},
         {5, false, 64, 16, 64},
         {4, false, 64, 16, 64},
         {4, true, 64, 16, 64},
         {4, true, 64, 16, 64}},
        {{4, true, 128, 16, 64},
         {4, false, 128, 16, 64},
         {5, false, 128, 16, 64},
         {6, false, 128, 16, 64},
         {7, false, 128, 16, 64}}};
  }
  return {
      {{7, false, 3, 32, 64},
       {6, false, 64, 32, 128},
       {5, false, 128, 64, 256},
       {4, false, 256, 128, 512},
       {4, true, 512, 256, 512},
       {4, true, 512, 256, 512}},
      {{4, true, 1024, 256, 512},
       {4, false, 1024, 128, 256},
       {5, false, 512, 64, 128},
       {6, false, 256, 32, 64},
       {7, false, 128, 16, 64}}};
}

} // namespace

// RSU-L: rebnconvin, then rebnconv1..L down (pooling after 1..L-2, rebnconvL dilated by 2) and
// rebnconv(L-1)d..1d up, each up step taking the upsampled result beside its level's
// features; the block returns its U plus rebnconvin's output. RSU-4F dilates by 1, 2, 4, 8
// instead of pooling.
struct U2Net::Block {
  int64_t levels = 0;
  bool dilated = false;
  ConvBnRelu in;
  std::vector<ConvBnRelu> down; // rebnconv1..L
  std::vector<ConvBnRelu> up; // rebnconv1d..(L-1)d

  Block(WeightReader& reader, const std::string& prefix, const StageShape& s, at::ScalarType dtype)
      : levels(s.levels), dilated(s.dilated) {
    in = read_conv_bn(reader, prefix + "rebnconvin.", s.in, s.out, 1, dtype);
    for (int64_t i = 1; i <= levels; ++i) {
      const int64_t dilation = dilated ? (int64_t{1} << (i - 1)) : (i == levels ? 2 : 1);
      down.push_back(read_conv_bn(
          reader, prefix + "rebnconv" + std::to_string(i) + ".", i == 1 ? s.out : s.mid, s.mid, dilation, dtype));
    }
    for (int64_t i = 1; i < levels; ++i) {
      const int64_t dilation = dilated ? (int64_t{1} << (i - 1)) : 1;
      up.push_back(read_conv_bn(
          reader, prefix + "rebnconv" + std::to_string(i) + "d.", 2 * s.mid, i == 1 ? s.out : s.mid, dilation, dtype));
    }
  }

  at::Tensor forward(const at::Tensor& x) const {
    const at::Tensor input = in(x);
    std::vector<at::Tensor> level(static_cast<size_t>(levels) + 1);
    at::Tensor h = input;
    for (int64_t i = 1; i < levels; ++i) {
      level[i] = down[i - 1](h);
      h = (!dilated && i < levels - 1) ? pool(level[i]) : level[i];
    }
    level[levels] = down[levels - 1](h);
    at::Tensor d = up[levels - 2](at::cat({level[levels], level[levels - 1]}, 1));
    for (int64_t i = levels - 2; i >= 1; --i) {
      d = up[i - 1](at::cat({upsample_like(d, level[i]), level[i]}, 1));
    }
    return d.add_(input);
  }
};

U2Net::U2Net(std::string name, const U2NetConfig& config, const WeightMap& weights, const ModelOptions& options)
    : name_(std::move(name)), config_(config), options_(options) {
  SBSCONV_CHECK(!options.int8, Option, "build model",
                "precision='int8' is not available for the U2-Net mask models (convolutions only): use 'auto', "
                "'fp32' or 'bf16'");
  SBSCONV_CHECK(config.input_size >= 32 && config.input_size <= 4096, Option, "build model",
                "the mask model's input_size must be within 32..4096");
  WeightReader reader(weights, options.device, options.dtype, name_);
  const Layout shapes = layout(config.small);
  for (size_t i = 0; i < shapes.encoder.size(); ++i) {
    encoder_.push_back(
        std::make_unique<Block>(reader, "stage" + std::to_string(i + 1) + ".", shapes.encoder[i], options.dtype));
  }
  for (size_t i = 0; i < shapes.decoder.size(); ++i) {
    decoder_.push_back(std::make_unique<Block>(
        reader, "stage" + std::to_string(shapes.decoder.size() - i) + "d.", shapes.decoder[i], options.dtype));
  }
  // side1 reads stage1d, ..., side5 stage5d, side6 stage6.
  for (int64_t i = 1; i <= 6; ++i) {
    const int64_t channels = i == 6 ? shapes.encoder[5].out : shapes.decoder[shapes.decoder.size() - i].out;
    const std::string prefix = "side" + std::to_string(i) + ".";
    at::Tensor weight = reader.take(prefix + "weight", {1, channels, 3, 3});
    sides_.emplace_back(
        weight.defined() ? weight.contiguous(at::MemoryFormat::ChannelsLast) : weight, reader.take(prefix + "bias", {1}));
  }
  out_weight_ = reader.take("outconv.weight", {1, 6, 1, 1});
  out_bias_ = reader.take("outconv.bias", {1});
  reader.check();
}

U2Net::~U2Net() = default;

at::Tensor U2Net::forward(const at::Tensor& pixel_values) {
  at::InferenceMode guard;
  SBSCONV_CHECK(
      pixel_values.dim() == 4 && pixel_values.size(1) == 3 && pixel_values.size(2) >= 32 && pixel_values.size(3) >= 32,
      Option, "mask", "pixel_values must be [N,3,h,w] with h, w >= 32");
  // channels-last throughout: the convolutions' fast layout on the CPU (oneDNN; 1.7x) and on
  // CUDA's tensor cores
  const at::Tensor x = pixel_values.to(options_.device, options_.dtype).contiguous(at::MemoryFormat::ChannelsLast);
  std::vector<at::Tensor> stage(7); // stage[1..6]: the encoder's outputs
  at::Tensor h = x;
  for (size_t i = 0; i < encoder_.size(); ++i) {
    stage[i + 1] = encoder_[i]->forward(h);
    if (i + 1 < encoder_.size()) {
      h = pool(stage[i + 1]);
    }
  }
  std::vector<at::Tensor> decoded(7); // decoded[1..5]: stage1d..stage5d; decoded[6] = stage 6
  decoded[6] = stage[6];
  for (size_t i = 0; i < decoder_.size(); ++i) {
    const size_t level = decoder_.size() - i; // 5, 4, ..., 1
    decoded[level] = decoder_[i]->forward(at::cat({upsample_like(decoded[level + 1], stage[level]), stage[level]}, 1));
  }
  std::vector<at::Tensor> side(6);
  for (size_t i = 0; i < 6; ++i) {
    side[i] = at::conv2d(decoded[i + 1], sides_[i].first, sides_[i].second, {1, 1}, {1, 1});
    if (i > 0) {
      side[i] = upsample_like(side[i], side[0]);
    }
  }
  return at::sigmoid(at::conv2d(at::cat(side, 1), out_weight_, out_bias_)).contiguous();
}

at::Tensor U2Net::preprocess(const at::Tensor& frames) const {
  SBSCONV_CHECK(
      frames.dim() == 4 && frames.size(1) == 3 && frames.scalar_type() == at::kByte, Option, "mask",
      "frames must be uint8 RGB [N,3,H,W]");
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(options_.device);
  const int64_t side = config_.input_size;
  at::Tensor x = frames.to(options_.device).to(at::kFloat).div_(255.0);
  x = at::_upsample_bilinear2d_aa(x.contiguous(), {side, side}, /*align_corners=*/false);
  // ToTensorLab(flag=0): each image over its own maximum (a blank frame stays blank)
  x = x.div_(x.amax({1, 2, 3}, /*keepdim=*/true).clamp_min_(1e-6));
  x = x.sub_(device_values({0.485, 0.456, 0.406}, f32).view({1, 3, 1, 1}))
          .div_(device_values({0.229, 0.224, 0.225}, f32).view({1, 3, 1, 1}));
  return x.to(options_.dtype);
}

DepthOutput U2Net::infer(const at::Tensor& frames) {
  at::InferenceMode guard;
  const at::Tensor x = preprocess(frames);
  // A frame of one colour (black between shots, a flat card) shows no subject: the network
  // still draws one there (its padding), and normPRED would stretch it to [0,1].
  const at::Tensor content =
      (x.amax({2, 3}, /*keepdim=*/true) - x.amin({2, 3}, /*keepdim=*/true)).amax(1, /*keepdim=*/true) > 1e-3;
  at::Tensor d = forward(x).to(at::kFloat);
  // normPRED, per frame; a flat prediction has no subject either
  const at::Tensor low = d.amin({1, 2, 3}, /*keepdim=*/true);
  const at::Tensor range = d.amax({1, 2, 3}, /*keepdim=*/true) - low;
  d = (d - low) / range.clamp_min(1e-12) * ((range > 1e-12) & content);
  d = at::_upsample_bilinear2d_aa(d, {frames.size(2), frames.size(3)}, /*align_corners=*/false).clamp_(0.0, 1.0);
  DepthOutput out;
  out.depth = d.contiguous();
  return out;
}

} // namespace sbsconv
