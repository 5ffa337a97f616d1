#include "sbsconv/depth/DptHead.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {
constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;
} // namespace

DptHead::Conv take_conv(
    WeightReader& w,
    const std::string& name,
    int64_t out,
    int64_t in,
    int64_t k,
    bool bias,
    bool transposed) {
  DptHead::Conv c;
  // ConvTranspose2d stores [in, out, k, k].
  c.weight = w.take(name + ".weight", transposed ? std::vector<int64_t>{in, out, k, k}
                                                 : std::vector<int64_t>{out, in, k, k});
  if (!transposed) {
    c.weight = c.weight.contiguous(kChannelsLast);
  }
  if (bias) {
    c.bias = w.take(name + ".bias", {out});
  }
  return c;
}

at::Tensor conv(const DptHead::Conv& c, const at::Tensor& x, int64_t stride, int64_t padding) {
  return at::conv2d(x, c.weight, c.bias, {stride, stride}, {padding, padding});
}

at::Tensor residual_unit(const DptHead::ResidualUnit& u, const at::Tensor& x) {
  at::Tensor out = conv(u.conv1, at::relu(x), 1, 1);
  out = conv(u.conv2, out.relu_(), 1, 1);
  return out.add_(x);
}

DptTrunk take_dpt_trunk(
    WeightReader& w,
    const std::string& prefix,
    int64_t in_channels,
    int64_t features,
    const std::array<int64_t, 4>& oc) {
  const int64_t f = features;
  DptTrunk t;
  for (int i = 0; i < 4; ++i) {
    t.projects[i] = take_conv(w, prefix + "projects." + std::to_string(i), oc[i], in_channels, 1);
    t.layer_rn[i] = take_conv(
        w, prefix + "scratch.layer" + std::to_string(i + 1) + "_rn", f, oc[i], 3, /*bias=*/false);
  }
  t.resize[0] = take_conv(w, prefix + "resize_layers.0", oc[0], oc[0], 4, true, /*transposed=*/true);
  t.resize[1] = take_conv(w, prefix + "resize_layers.1", oc[1], oc[1], 2, true, /*transposed=*/true);
  t.resize[3] = take_conv(w, prefix + "resize_layers.3", oc[3], oc[3], 3);
  for (int i = 0; i < 4; ++i) {
    const std::string r = prefix + "scratch.refinenet" + std::to_string(i + 1) + ".";
    DptHead::Fusion& fusion = t.refine[i];
    if (i == 3) {
      w.ignore_prefix(r + "resConfUnit1.");
    } else {
      fusion.unit1.conv1 = take_conv(w, r + "resConfUnit1.conv1", f, f, 3);
      fusion.unit1.conv2 = take_conv(w, r + "resConfUnit1.conv2", f, f, 3);
    }
    fusion.unit2.conv1 = take_conv(w, r + "resConfUnit2.conv1", f, f, 3);
    fusion.unit2.conv2 = take_conv(w, r + "resConfUnit2.conv2", f, f, 3);
    fusion.out = take_conv(w, r + "out_conv", f, f, 1);
  }
  return t;
}

DptHead::DptHead(const DptHeadConfig& config, WeightReader& w, const std::string& prefix)
    : config_(config) {
  // A checkpoint's configuration is data: sizes below these would build convolutions with no
  // channels (features / 2 is output_conv1's width) or match any shape in WeightReader.
  SBSCONV_CHECK(
      config.in_channels >= 1 && config.features >= 2 && config.head_hidden >= 1 && config.patch_size >= 1 &&
          std::all_of(config.out_channels.begin(), config.out_channels.end(), [](int64_t v) { return v >= 1; }),
      Model,
      "build model",
      "the DPT head's sizes must be at least 1 (features at least 2)");
  SBSCONV_CHECK(
      !config.metric || (std::isfinite(config.max_depth) && config.max_depth > 0),
      Model,
      "build model",
      "max_depth must be a positive number of metres");
  const int64_t f = config.features;
  trunk_ = take_dpt_trunk(w, prefix, config.in_channels, f, config.out_channels);
  output1_ = take_conv(w, prefix + "scratch.output_conv1", f / 2, f, 3);
  output2a_ = take_conv(w, prefix + "scratch.output_conv2.0", config.head_hidden, f / 2, 3);
  output2b_ = take_conv(w, prefix + "scratch.output_conv2.2", 1, config.head_hidden, 1);
  if (config.fp32_output) {
    for (Conv* c : {&output2a_, &output2b_}) {
      c->weight = c->weight.to(at::kFloat);
      c->bias = c->bias.to(at::kFloat);
    }
  }
}

void DptHead::convert_convolutions(at::ScalarType dtype) {
  auto convert = [dtype](Conv& c) {
    c.weight = c.weight.to(dtype);
    if (c.bias.defined()) {
      c.bias = c.bias.to(dtype);
    }
  };
  for (int i = 0; i < 4; ++i) {
    convert(trunk_.projects[i]);
    if (trunk_.resize[i].weight.defined()) {
      convert(trunk_.resize[i]);
    }
    convert(trunk_.layer_rn[i]);
    Fusion& f = trunk_.refine[i];
    for (Conv* c : {&f.unit1.conv1, &f.unit1.conv2, &f.unit2.conv1, &f.unit2.conv2, &f.out}) {
      if (c->weight.defined()) {
        convert(*c);
      }
    }
  }
  convert(output1_);
  if (!config_.fp32_output) {
    convert(output2a_);
    convert(output2b_);
  }
}

at::Tensor fuse_block(const DptHead::Fusion& f, const at::Tensor& x, const at::Tensor* skip, at::IntArrayRef size) {
  at::Tensor out = x;
  if (skip != nullptr) {
    out = out + residual_unit(f.unit1, *skip);
  }
  out = residual_unit(f.unit2, out);
  const std::vector<int64_t> target =
      size.empty() ? std::vector<int64_t>{out.size(2) * 2, out.size(3) * 2} : size.vec();
  out = at::upsample_bilinear2d(out, target, /*align_corners=*/true);
  return conv(f.out, out);
}

at::Tensor DptHead::forward(
    const std::vector<at::Tensor>& tokens,
    int64_t gh,
    int64_t gw,
    DptHooks* hooks,
    int64_t micro_batch) const {
  std::array<at::Tensor, 4> layers;
  for (int i = 0; i < 4; ++i) {
    const at::Tensor& t = tokens[i];
    // the head's own type (convert_convolutions): the encoder's tokens may be float32
    const at::ScalarType dtype = trunk_.projects[i].weight.scalar_type();
    at::Tensor x = t.transpose(1, 2).reshape({t.size(0), t.size(2), gh, gw}).to(dtype).contiguous(kChannelsLast);
    x = conv(trunk_.projects[i], x);
    switch (i) {
      case 0:
        x = at::conv_transpose2d(x, trunk_.resize[0].weight, trunk_.resize[0].bias, {4, 4});
        break;
      case 1:
        x = at::conv_transpose2d(x, trunk_.resize[1].weight, trunk_.resize[1].bias, {2, 2});
        break;
      case 3:
        x = conv(trunk_.resize[3], x, 2, 1);
        break;
      default:
        break;
    }
    if (hooks != nullptr && i >= 2) {
      x = hooks->apply(i - 2, x);
    }
    layers[i] = conv(trunk_.layer_rn[i], x.contiguous(kChannelsLast), 1, 1);
  }
  at::Tensor path4 = fuse_block(trunk_.refine[3], layers[3], nullptr, layers[2].sizes().slice(2));
  if (hooks != nullptr) {
    path4 = hooks->apply(2, path4).contiguous(kChannelsLast);
  }
  at::Tensor path3 = fuse_block(trunk_.refine[2], path4, &layers[2], layers[1].sizes().slice(2));
  if (hooks != nullptr) {
    path3 = hooks->apply(3, path3).contiguous(kChannelsLast);
  }
  const int64_t n = path3.size(0);
  const int64_t step = micro_batch > 0 && n > micro_batch ? micro_batch : n;
  std::vector<at::Tensor> outs;
  for (int64_t begin = 0; begin < n; begin += step) {
    const int64_t count = std::min(step, n - begin);
    at::Tensor l1 = layers[1].narrow(0, begin, count);
    at::Tensor path2 = fuse_block(trunk_.refine[1], path3.narrow(0, begin, count), &l1, layers[0].sizes().slice(2));
    at::Tensor l0 = layers[0].narrow(0, begin, count);
    at::Tensor path1 = fuse_block(trunk_.refine[0], path2, &l0, {});
    outs.push_back(output(path1, gh, gw));
  }
  return outs.size() == 1 ? outs[0] : at::cat(outs);
}

at::Tensor DptHead::output(const at::Tensor& path1, int64_t gh, int64_t gw) const {
  at::Tensor out = conv(output1_, path1, 1, 1);
  const int64_t p = config_.patch_size;
  out = at::upsample_bilinear2d(out, {gh * p, gw * p}, /*align_corners=*/true);
  const at::ScalarType dtype = out.scalar_type();
  if (config_.fp32_output) {
    out = out.to(at::kFloat);
  }
  out = conv(output2a_, out, 1, 1).relu_();
  out = conv(output2b_, out);
  if (config_.metric) {
    out = out.sigmoid_().mul_(config_.max_depth);
  } else {
    out = out.relu_();
  }
  return (config_.fp32_output && config_.fp32_depth ? out : out.to(dtype)).contiguous();
}

} // namespace sbsconv
