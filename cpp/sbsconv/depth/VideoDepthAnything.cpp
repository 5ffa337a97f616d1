#include "sbsconv/depth/VideoDepthAnything.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "sbsconv/common/DeviceSync.h"
#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

constexpr int64_t kWindow = 32; // INFER_LEN
constexpr int64_t kOverlap = 10; // keyframe slots at the start of every window after the first
constexpr int64_t kStep = kWindow - kOverlap; // 22 new frames per window
constexpr int64_t kFade = 8; // INTERP_LEN: the cross-faded frames
constexpr int64_t kStreamKeep = 29; // streaming: the newest cache entries attended to
constexpr int64_t kStreamGap = (kWindow - kOverlap) * 2 - 1 - (kOverlap - kFade); // 41
constexpr size_t kCacheSlots = 16; // 4 modules x 2 attention blocks x (key, value)

// The sinusoidal table of the reference (checked against the checkpoint's buffer).
at::Tensor sinusoid_table(int64_t channels) {
  at::Tensor position = at::arange(TemporalModule::kMaxFrames, at::kFloat).unsqueeze(1);
  at::Tensor div = at::exp(at::arange(0, channels, 2, at::kFloat) * (-std::log(10000.0) / static_cast<double>(channels)));
  at::Tensor pe = at::zeros({1, TemporalModule::kMaxFrames, channels}, at::kFloat);
  pe.index_put_({0, at::indexing::Slice(), at::indexing::Slice(0, at::indexing::None, 2)}, at::sin(position * div));
  pe.index_put_({0, at::indexing::Slice(), at::indexing::Slice(1, at::indexing::None, 2)}, at::cos(position * div));
  return pe;
}

} // namespace

// ---- motion module ------------------------------------------------------------------------

TemporalModule::TemporalModule(WeightReader& w, const std::string& prefix, int64_t c) : channels_(c) {
  SBSCONV_CHECK(c % 32 == 0 && c % kHeads == 0, Model, "build model",
                "motion module channels must be a multiple of 32 (group norm) and of 8 (heads)");
  const std::string t = prefix + "temporal_transformer.";
  norm_w_ = w.take(t + "norm.weight", {c});
  norm_b_ = w.take(t + "norm.bias", {c});
  proj_in_w_ = w.take(t + "proj_in.weight", {c, c});
  proj_in_b_ = w.take(t + "proj_in.bias", {c});
  proj_out_w_ = w.take(t + "proj_out.weight", {c, c});
  proj_out_b_ = w.take(t + "proj_out.bias", {c});
  const std::string b = t + "transformer_blocks.0.";
  for (int i = 0; i < 2; ++i) {
    const std::string a = b + "attention_blocks." + std::to_string(i) + ".";
    Attention& att = attention_[i];
    att.norm_w = w.take(b + "norms." + std::to_string(i) + ".weight", {c});
    att.norm_b = w.take(b + "norms." + std::to_string(i) + ".bias", {c});
    att.q = w.take(a + "to_q.weight", {c, c});
    att.k = w.take(a + "to_k.weight", {c, c});
    att.v = w.take(a + "to_v.weight", {c, c});
    att.out_w = w.take(a + "to_out.0.weight", {c, c});
    att.out_b = w.take(a + "to_out.0.bias", {c});
    // The table is a fixed buffer; checkpoints hold it, and it must be the reference's.
    at::Tensor table = sinusoid_table(c);
    if (w.has(a + "pos_encoder.pe")) {
      at::Tensor stored = w.take_fp32(a + "pos_encoder.pe", {1, kMaxFrames, c}).cpu();
      SBSCONV_CHECK(at::allclose(stored, table, 1e-4, 1e-5), Model, "load weights",
                    a + "pos_encoder.pe is not the sinusoidal position table this model uses");
    }
    att.pe = table.to(att.q.device(), att.q.scalar_type());
    att.pe_k = at::linear(att.pe, att.k);
    att.pe_v = at::linear(att.pe, att.v);
  }
  ff_norm_w_ = w.take(b + "ff_norm.weight", {c});
  ff_norm_b_ = w.take(b + "ff_norm.bias", {c});
  ff_in_w_ = w.take(b + "ff.net.0.proj.weight", {8 * c, c});
  ff_in_b_ = w.take(b + "ff.net.0.proj.bias", {8 * c});
  ff_out_w_ = w.take(b + "ff.net.2.weight", {c, 4 * c});
  ff_out_b_ = w.take(b + "ff.net.2.bias", {c});
}

at::Tensor TemporalModule::forward(
    const at::Tensor& x,
    int64_t frames,
    const std::vector<at::Tensor>* cache,
    std::vector<at::Tensor>* inputs) const {
  const int64_t bt = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), hw = h * w;
  const int64_t t = frames, b = bt / t;
  SBSCONV_CHECK(c == channels_ && bt % t == 0, Internal, "depth", "motion module input has the wrong shape");
  const bool streaming = cache != nullptr || inputs != nullptr;
  SBSCONV_CHECK(!streaming || t == 1, Internal, "depth", "cached attention takes one frame at a time");
  at::Tensor y = at::group_norm(x, 32, norm_w_, norm_b_, 1e-6);
  y = y.permute({0, 2, 3, 1}).reshape({bt, hw, c});
  y = at::linear(y, proj_in_w_, proj_in_b_);
  const int64_t dh = c / kHeads;
  for (int i = 0; i < 2; ++i) {
    const Attention& a = attention_[i];
    at::Tensor n = at::layer_norm(y, {c}, a.norm_w, a.norm_b, 1e-5);
    // (b f) d c -> (b d) f c: attention across frames at each position
    at::Tensor seq = n.view({b, t, hw, c}).permute({0, 2, 1, 3}).reshape({b * hw, t, c});
    at::Tensor q, k, v;
    int64_t len = t;
    if (!streaming) {
      at::Tensor full = seq + a.pe.narrow(1, 0, t);
      q = at::linear(full, a.q);
      k = at::linear(full, a.k);
      v = at::linear(full, a.v);
    } else {
      at::Tensor kx = at::linear(seq, a.k);
      at::Tensor vx = at::linear(seq, a.v);
      if (inputs != nullptr) {
        inputs->push_back(kx);
        inputs->push_back(vx);
      }
      if (cache != nullptr) {
        kx = at::cat({(*cache)[2 * i].to(seq.scalar_type()), kx}, 1);
        vx = at::cat({(*cache)[2 * i + 1].to(seq.scalar_type()), vx}, 1);
      }
      len = kx.size(1);
      SBSCONV_CHECK(len <= kMaxFrames, Option, "depth", "Video-Depth-Anything attends to at most 32 frames");
      k = kx + a.pe_k.narrow(1, 0, len); // out of place: kx may be the cached entry itself
      v = vx + a.pe_v.narrow(1, 0, len);
      q = at::linear(seq + a.pe.narrow(1, len - 1, 1), a.q); // the current frame is the last position
    }
    const int64_t tq = q.size(1);
    q = q.view({b * hw, tq, kHeads, dh}).transpose(1, 2);
    k = k.view({b * hw, len, kHeads, dh}).transpose(1, 2);
    v = v.view({b * hw, len, kHeads, dh}).transpose(1, 2);
    at::Tensor o = at::scaled_dot_product_attention(q, k, v);
    o = at::linear(o.transpose(1, 2).reshape({b * hw, tq, c}), a.out_w, a.out_b);
    o = o.view({b, hw, tq, c}).permute({0, 2, 1, 3}).reshape({b * tq, hw, c});
    y = o + y;
  }
  at::Tensor f = at::linear(at::layer_norm(y, {c}, ff_norm_w_, ff_norm_b_, 1e-5), ff_in_w_, ff_in_b_);
  std::vector<at::Tensor> halves = f.chunk(2, -1);
  f = at::linear(halves[0] * at::gelu(halves[1]), ff_out_w_, ff_out_b_);
  y = y + f;
  y = at::linear(y, proj_out_w_, proj_out_b_);
  return y.view({bt, h, w, c}).permute({0, 3, 1, 2}) + x;
}

// ---- network ------------------------------------------------------------------------------------

class VideoDepthAnything::Hooks : public DptHooks {
 public:
  Hooks(const std::vector<TemporalModule>& modules,
        int64_t frames,
        const std::vector<at::Tensor>* cache,
        std::vector<at::Tensor>* inputs)
      : modules_(modules), frames_(frames), cache_(cache), inputs_(inputs) {}

  at::Tensor apply(int place, const at::Tensor& x) override {
    std::vector<at::Tensor> slice;
    if (cache_ != nullptr) {
      slice.assign(cache_->begin() + 4 * place, cache_->begin() + 4 * place + 4);
    }
    return modules_[place].forward(x, frames_, cache_ != nullptr ? &slice : nullptr, inputs_);
  }

 private:
  const std::vector<TemporalModule>& modules_;
  int64_t frames_;
  const std::vector<at::Tensor>* cache_;
  std::vector<at::Tensor>* inputs_;
};

VideoDepthAnything::VideoDepthAnything(
    std::string name,
    const VideoDepthAnythingConfig& config,
    const WeightMap& weights,
    const ModelOptions& options,
    const VideoDepthOptions& video)
    : name_(std::move(name)), config_(config), options_(options), video_(video) {
  check_head_layers(config.layers, config.encoder.depth);
  SBSCONV_CHECK(video.window_batch >= 1 && video.window_batch <= 64, Option, "build model",
                "window_batch must be within 1..64");
  WeightReader reader(weights, options.device, options.dtype, name_);
  encoder_ = std::make_unique<DinoV2Encoder>(config.encoder, reader, "pretrained.");
  if (options.int8) {
    encoder_->quantize_linears(); // Note [int8 linear layers]
  }
  DptHeadConfig head = config.head;
  head.in_channels = config.encoder.embed_dim;
  head.patch_size = config.encoder.patch_size;
  head.metric = false; // metric VDA outputs metres through the same ReLU
  head.fp32_output = true; // the reference runs output_conv2 in float32
  head_ = std::make_unique<DptHead>(head, reader, "head.");
  const auto& oc = head.out_channels;
  const int64_t channels[4] = {oc[2], oc[3], head.features, head.features};
  for (int m = 0; m < 4; ++m) {
    modules_.emplace_back(reader, "head.motion_modules." + std::to_string(m) + ".", channels[m]);
  }
  reader.check();
  keyframes_ = at::tensor({0, 12, 24, 25, 26, 27, 28, 29, 30, 31}, at::TensorOptions().dtype(at::kLong).device(options.device));
}

at::Tensor VideoDepthAnything::network(
    const at::Tensor& x,
    int64_t frames,
    const std::vector<at::Tensor>* cache,
    std::vector<at::Tensor>* inputs) {
  const int64_t p = config_.encoder.patch_size;
  const int64_t gh = x.size(2) / p, gw = x.size(3) / p;
  std::vector<at::Tensor> tokens = encoder_->intermediate_layers(x, config_.layers);
  Hooks hooks(modules_, frames, cache, inputs);
  return head_->forward(tokens, gh, gw, &hooks, /*micro_batch=*/4).relu_();
}

at::Tensor VideoDepthAnything::forward(const at::Tensor& pixel_values) {
  at::InferenceMode guard;
  SBSCONV_CHECK((pixel_values.dim() == 4 || pixel_values.dim() == 5) && pixel_values.size(-3) == 3, Option,
                "depth", "pixel_values must be [T,3,h,w] or [B,T,3,h,w]");
  at::Tensor x = pixel_values.dim() == 4 ? pixel_values.unsqueeze(0) : pixel_values;
  const int64_t t = x.size(1);
  SBSCONV_CHECK(t >= 1 && t <= kWindow, Option, "depth", "a window holds 1 to 32 frames");
  x = x.flatten(0, 1).to(options_.device, options_.dtype);
  return network(x, t, nullptr, nullptr);
}

at::Tensor VideoDepthAnything::preprocess(const at::Tensor& frames) const {
  SBSCONV_CHECK(frames.dim() == 4 && frames.size(1) == 3 && frames.scalar_type() == at::kByte, Option, "depth",
                "frames must be uint8 RGB [N,3,H,W]");
  const int64_t fh = frames.size(2), fw = frames.size(3);
  int64_t input_size = options_.input_size;
  const double ratio = static_cast<double>(std::max(fh, fw)) / static_cast<double>(std::min(fh, fw));
  if (ratio > 1.78) {
    // The reference narrows the input of frames wider than 16:9 (memory).
    const auto narrowed = static_cast<int64_t>(static_cast<double>(input_size) * 1.777 / ratio);
    input_size = static_cast<int64_t>(std::nearbyint(static_cast<double>(narrowed) / 14.0)) * 14;
    input_size = std::max(input_size, config_.encoder.patch_size);
  }
  return depth_anything_input(frames, input_size, config_.encoder.patch_size, options_.device, options_.dtype);
}

void VideoDepthAnything::check_frames(const at::Tensor& frames) {
  SBSCONV_CHECK(frames.dim() == 4 && frames.size(1) == 3 && frames.scalar_type() == at::kByte, Option, "depth",
                "frames must be uint8 RGB [N,3,H,W]");
  if (frame_h_ == 0) {
    frame_h_ = frames.size(2);
    frame_w_ = frames.size(3);
  }
  SBSCONV_CHECK(frames.size(2) == frame_h_ && frames.size(3) == frame_w_, Option, "depth",
                "the frame size changed within a sequence; reset() starts a new one");
}

at::Tensor VideoDepthAnything::to_frame_size(const at::Tensor& depth) const {
  return at::upsample_bilinear2d(depth.to(at::kFloat), {frame_h_, frame_w_}, /*align_corners=*/true);
}

DepthOutput VideoDepthAnything::infer(const at::Tensor& frames) {
  at::InferenceMode guard;
  check_frames(frames);
  DepthOutput out;
  if (frames.size(0) == 0) {
    out.depth = at::empty({0, 1, frame_h_, frame_w_}, at::TensorOptions().dtype(at::kFloat).device(options_.device));
    return out;
  }
  at::Tensor x = preprocess(frames);
  received_ += x.size(0);
  std::vector<at::Tensor> ready;
  if (video_.mode == VideoDepthMode::Streaming) {
    const int64_t p = config_.encoder.patch_size;
    const int64_t gh = x.size(2) / p, gw = x.size(3) / p;
    // The encoder has no temporal part: all frames at once; the head frame by frame.
    std::vector<at::Tensor> tokens = encoder_->intermediate_layers(x, config_.layers);
    for (int64_t i = 0; i < x.size(0); ++i) {
      std::vector<at::Tensor> one;
      for (const at::Tensor& t : tokens) {
        one.push_back(t.narrow(0, i, 1));
      }
      ready.push_back(to_frame_size(stream_one(one, gh, gw)));
    }
  } else {
    for (int64_t i = 0; i < x.size(0); ++i) {
      pending_.push_back(x[i]);
    }
    last_input_ = x[x.size(0) - 1];
    ready = run_windows(false);
  }
  out.depth = ready.empty() ? at::empty({0, 1, frame_h_, frame_w_}, at::TensorOptions().dtype(at::kFloat).device(options_.device))
                            : at::cat(ready);
  released_ += out.depth.size(0);
  return out;
}

// ---- windowed driver -------------------------------------------------------------------------------

std::pair<double, double> align_scale_shift(const at::Tensor& prediction, const at::Tensor& target) {
  // Least squares of target ~ scale * prediction + shift, in float32 on the model's device
  // with centred sums (Note [No float64 on devices]); only the four scalars reach the CPU.
  at::Tensor p = prediction.reshape({-1}).to(at::kFloat);
  at::Tensor t = target.reshape({-1}).to(at::kFloat);
  SBSCONV_CHECK(p.numel() == t.numel() && p.numel() > 0, Option, "depth", "alignment needs matching non-empty maps");
  // The four sums come over in one transfer (Note [Host synchronisation]).
  const at::Tensor mp_t = p.mean();
  const at::Tensor mt_t = t.mean();
  const at::Tensor dp = p - mp_t;
  const at::Tensor sums = to_host(at::stack({mp_t, mt_t, (dp * dp).sum(), (dp * (t - mt_t)).sum()})).contiguous();
  const float* v = sums.const_data_ptr<float>();
  const double mp = v[0];
  const double mt = v[1];
  const double spp = v[2];
  const double spt = v[3];
  const double energy = spp + static_cast<double>(p.numel()) * mp * mp; // sum of p^2
  if (!(spp > 1e-12 * std::max(energy, 1e-30)) || !std::isfinite(spt)) {
    return {1.0, 0.0};
  }
  const double scale = spt / spp;
  return {scale, mt - scale * mp};
}

std::vector<at::Tensor> VideoDepthAnything::run_windows(bool final) {
  std::vector<at::Tensor> out;
  while (true) {
    // Gather up to window_batch windows whose inputs are known (a window's input depends on
    // the previous window's input only, so several run through the network at once).
    std::vector<at::Tensor> inputs;
    std::vector<int64_t> fills;
    at::Tensor prev = prev_input_;
    int64_t fill = fill_;
    size_t used = 0;
    bool has_tail = tail_.defined();
    while (static_cast<int64_t>(inputs.size()) < video_.window_batch) {
      const int64_t need = prev.defined() ? kStep : kWindow;
      const auto avail = static_cast<int64_t>(pending_.size() - used);
      bool run = avail >= need;
      if (!run && final) {
        // At the end, the reference runs a window at every start before the last frame
        // (start = fill - 10), padding it with copies of the last frame.
        run = avail > 0 || (prev.defined() && has_tail && fill - kOverlap < received_);
      }
      if (!run) {
        break;
      }
      const int64_t take = std::min(avail, need);
      std::vector<at::Tensor> fresh(pending_.begin() + static_cast<std::ptrdiff_t>(used),
                                    pending_.begin() + static_cast<std::ptrdiff_t>(used) + take);
      used += static_cast<size_t>(take);
      while (static_cast<int64_t>(fresh.size()) < need) {
        fresh.push_back(last_input_);
      }
      at::Tensor window = at::stack(fresh);
      if (prev.defined()) {
        window = at::cat({prev.index_select(0, keyframes_), window});
      }
      inputs.push_back(window);
      fills.push_back(fill);
      fill += need;
      prev = window;
      has_tail = true;
    }
    if (inputs.empty()) {
      break;
    }
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(used));
    at::Tensor depth = network(at::stack(inputs).flatten(0, 1), kWindow, nullptr, nullptr);
    for (size_t i = 0; i < inputs.size(); ++i) {
      fill_ = fills[i];
      take_window_output(depth.narrow(0, static_cast<int64_t>(i) * kWindow, kWindow), received_, out);
      prev_input_ = inputs[i];
    }
    fill_ = fill;
  }
  if (final) {
    // Release what the tail holds of real frames; frames after this continue the sequence
    // from the last window's keyframes.
    if (tail_.defined()) {
      const int64_t real = std::min<int64_t>(kFade, received_ - (fill_ - kFade));
      if (real > 0) {
        out.push_back(tail_.narrow(0, 0, real));
      }
      tail_ = at::Tensor();
    }
    fill_ = received_;
  }
  return out;
}

// Aligns one window's output (network resolution) and appends the frames it finalises,
// dropping padding (sequence index >= real_end).
void VideoDepthAnything::take_window_output(const at::Tensor& depth, int64_t real_end, std::vector<at::Tensor>& out) {
  at::Tensor d = to_frame_size(depth); // [32,1,H,W]
  auto emit = [&](const at::Tensor& frames, int64_t first_index) {
    const int64_t real = std::min<int64_t>(frames.size(0), real_end - first_index);
    if (real > 0) {
      out.push_back(frames.narrow(0, 0, real));
    }
  };
  if (!ref_align_.defined()) {
    // The first window of a sequence: frames fill_ .. fill_+31.
    ref_align_ = at::stack({d[0], d[12]});
    emit(d.narrow(0, 0, kWindow - kFade), fill_);
    tail_ = d.narrow(0, kWindow - kFade, kFade).clone();
    return;
  }
  double scale = 1.0, shift = 0.0;
  if (!config_.metric) {
    std::tie(scale, shift) = align_scale_shift(d.narrow(0, 0, 2), ref_align_);
  }
  auto aligned = [&](const at::Tensor& x) { return (x * scale + shift).clamp_min_(0.0); };
  if (tail_.defined()) {
    at::Tensor post = aligned(d.narrow(0, 2, kFade));
    at::Tensor weight = at::arange(kFade, d.options()).div_(static_cast<double>(kFade - 1)).view({kFade, 1, 1, 1});
    at::Tensor faded = tail_ * (1.0 - weight) + post * weight;
    emit(faded, fill_ - kFade);
  }
  at::Tensor fresh = aligned(d.narrow(0, kOverlap, kStep)); // frames fill_ .. fill_+21
  ref_align_ = at::stack({ref_align_[0], fresh[12 - kOverlap]});
  emit(fresh.narrow(0, 0, kStep - kFade), fill_);
  tail_ = fresh.narrow(0, kStep - kFade, kFade).clone();
}

DepthOutput VideoDepthAnything::flush() {
  at::InferenceMode guard;
  DepthOutput out;
  if (frame_h_ == 0) {
    return out;
  }
  std::vector<at::Tensor> ready;
  if (video_.mode == VideoDepthMode::Windowed) {
    ready = run_windows(true);
  }
  if (!ready.empty()) {
    out.depth = at::cat(ready);
    released_ += out.depth.size(0);
  }
  return out;
}

void VideoDepthAnything::reset() {
  frame_h_ = frame_w_ = 0;
  received_ = released_ = 0;
  pending_.clear();
  fill_ = 0;
  prev_input_ = last_input_ = tail_ = ref_align_ = at::Tensor();
  cache_.clear();
  stream_id_ = -1;
}

// ---- streaming driver ------------------------------------------------------------------------------

at::Tensor VideoDepthAnything::stream_one(const std::vector<at::Tensor>& tokens, int64_t gh, int64_t gw) {
  stream_id_ += 1;
  CacheEntry entry;
  entry.id = stream_id_;
  at::Tensor depth;
  if (cache_.empty()) {
    Hooks hooks(modules_, 1, nullptr, &entry.inputs);
    depth = head_->forward(tokens, gh, gw, &hooks, 4).relu_();
    // The first frame stands in for a whole window of history.
    cache_.assign(kWindow, entry);
  } else {
    std::vector<const CacheEntry*> chosen{&cache_[0], &cache_[1]};
    for (size_t i = cache_.size() - kStreamKeep; i < cache_.size(); ++i) {
      chosen.push_back(&cache_[i]);
    }
    std::vector<at::Tensor> cache;
    for (size_t slot = 0; slot < kCacheSlots; ++slot) {
      std::vector<at::Tensor> parts;
      for (const CacheEntry* e : chosen) {
        parts.push_back(e->inputs[slot]);
      }
      cache.push_back(at::cat(parts, 1));
    }
    Hooks hooks(modules_, 1, &cache, &entry.inputs);
    depth = head_->forward(tokens, gh, gw, &hooks, 4).relu_();
    cache_.push_back(std::move(entry));
  }
  if (stream_id_ + kWindow > kStreamGap + 1) {
    cache_.erase(cache_.begin() + 1); // keep entry 0, the shot's first frame
  }
  return depth;
}

// ---- state ---------------------------------------------------------------------------------------

std::map<std::string, at::Tensor> VideoDepthAnything::state() const {
  std::map<std::string, at::Tensor> s;
  s["counters"] = at::tensor(
      std::vector<int64_t>{frame_h_, frame_w_, received_, released_, fill_, stream_id_,
                           static_cast<int64_t>(video_.mode)},
      at::kLong);
  auto put = [&](const std::string& key, const at::Tensor& t) {
    if (t.defined()) {
      s[key] = t.cpu();
    }
  };
  if (!pending_.empty()) {
    s["pending"] = at::stack(pending_).cpu();
  }
  put("prev_input", prev_input_);
  put("last_input", last_input_);
  put("tail", tail_);
  put("ref_align", ref_align_);
  if (!cache_.empty()) {
    std::vector<int64_t> ids;
    for (const CacheEntry& e : cache_) {
      ids.push_back(e.id);
      const std::string prefix = "cache." + std::to_string(e.id) + ".";
      if (s.count(prefix + "0") == 0) {
        for (size_t i = 0; i < e.inputs.size(); ++i) {
          s[prefix + std::to_string(i)] = e.inputs[i].cpu();
        }
      }
    }
    s["cache_ids"] = at::tensor(ids, at::kLong);
  }
  return s;
}

void VideoDepthAnything::load_state(const std::map<std::string, at::Tensor>& s) {
  reset();
  auto it = s.find("counters");
  SBSCONV_CHECK(it != s.end() && it->second.numel() == 7, Input, "resume", "the saved model state is incomplete");
  at::Tensor c = it->second.to(at::kLong).contiguous();
  const int64_t* v = c.data_ptr<int64_t>();
  SBSCONV_CHECK(v[6] == static_cast<int64_t>(video_.mode), Input, "resume",
                "the saved model state is from the other Video-Depth-Anything mode");
  frame_h_ = v[0];
  frame_w_ = v[1];
  received_ = v[2];
  released_ = v[3];
  fill_ = v[4];
  stream_id_ = v[5];
  auto get = [&](const std::string& key) -> at::Tensor {
    auto found = s.find(key);
    return found == s.end() ? at::Tensor() : found->second.to(options_.device);
  };
  if (at::Tensor pending = get("pending"); pending.defined()) {
    for (int64_t i = 0; i < pending.size(0); ++i) {
      pending_.push_back(pending[i].to(options_.dtype));
    }
  }
  prev_input_ = get("prev_input");
  last_input_ = get("last_input");
  tail_ = get("tail");
  ref_align_ = get("ref_align");
  if (at::Tensor ids = get("cache_ids"); ids.defined()) {
    ids = ids.cpu().contiguous();
    std::map<int64_t, std::vector<at::Tensor>> loaded; // entries repeat (the first frame)
    for (int64_t i = 0; i < ids.numel(); ++i) {
      CacheEntry e;
      e.id = ids[i].item<int64_t>();
      auto& inputs = loaded[e.id];
      for (size_t slot = 0; inputs.size() < kCacheSlots; ++slot) {
        at::Tensor t = get("cache." + std::to_string(e.id) + "." + std::to_string(slot));
        SBSCONV_CHECK(t.defined(), Input, "resume", "the saved streaming cache is incomplete");
        inputs.push_back(t);
      }
      e.inputs = inputs;
      cache_.push_back(std::move(e));
    }
  }
}

std::map<std::string, at::Tensor> VideoDepthAnything::prepared_weights() const {
  std::map<std::string, at::Tensor> out;
  encoder_->prepared_weights(out);
  return out;
}

} // namespace sbsconv
