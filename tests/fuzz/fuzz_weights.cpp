// Fuzz harness: checkpoint key sets against the Depth-Anything-V2 model builder
// (depth/DepthAnythingV2.h, DinoV2.h, DptHead.h, Weights.h).
//
// An input describes a checkpoint as a list of (name, shape) entries; names come partly from
// a dictionary of the real key names of the architecture (original layout, as in
// python/sbsconv/models/depth_anything_v2.py) and partly from the input itself. The harness
// builds a WeightMap of zero tensors of those shapes (tiny dimensions, kMaxElements in all),
// then a configuration the way Python does before it calls the C++ builder:
//   - "original" inputs: read off the tensor shapes, as config_from_original() does;
//   - "transformers" inputs: taken from a config.json, i.e. any small numbers, as
//     config_from_transformers() passes them on unchecked;
// and constructs the model. Expected: success or sbsconv::Error (kind Model). A model that is
// built must also run: one tiny frame goes through infer(), where only sbsconv::Error is
// acceptable too.
//
// Input layout (bytes; missing bytes read as 0):
//   0: bit 7 = transformers mode; bits 0-6 and bytes 1-2: the "target" configuration (see
//      target_from), whose shapes the dictionary keys get
//   3: bit 0 = start from the complete key set of the target, bit 1 = metric head
//   transformers mode only: 15 bytes of configuration numbers (config_from_json_numbers)
//   then entries until the input ends, each an op byte and its operands:
//     op 0: add a dictionary key with the shape the target configuration gives it
//     op 1: add a dictionary key with a shape from the input
//     op 2: add a name from the input (up to 48 bytes) with a shape from the input
//     op 3: remove a dictionary key
//     op 4: add a dictionary key with its target shape, one dimension changed
//   a dictionary key is two bytes (template index) and, for per-block keys, one byte (block);
//   a shape is a rank byte (0-4) and one byte per dimension (0-16).

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "FuzzCommon.h"
#include "sbsconv/depth/DepthAnythingV2.h"
#include "sbsconv/depth/Weights.h"

using namespace sbsconv;
using sbsconv::fuzz::finding;

namespace {

constexpr const char* kHarness = "fuzz_weights";
constexpr int64_t kMaxElements = 1 << 20; // all tensors together
constexpr size_t kMaxEntries = 600;
constexpr int kMaxBlocks = 16; // block indices the dictionary keys use
// Deeper encoders are skipped: Python would pass them on (a key "pretrained.blocks.99999.x"
// makes a 100000-block model), and the builder would then take 14 keys per block; that cost is
// linear, not a crash, and is reported separately rather than fuzzed.
constexpr int64_t kMaxDepth = 48;

// The configuration the dictionary's shapes are computed for.
struct Target {
  int64_t c, depth, patch, hidden, grid, features, head_hidden;
  std::array<int64_t, 4> out;
  bool swiglu, metric, fill;
};

Target target_from(uint8_t a, fuzz::ByteReader& in) {
  const uint8_t b = in.u8(), c = in.u8(), d = in.u8();
  Target t{};
  t.c = std::array<int64_t, 4>{4, 8, 16, 64}[a & 3];
  t.depth = std::array<int64_t, 4>{4, 5, 8, 12}[(a >> 2) & 3];
  t.patch = std::array<int64_t, 4>{1, 2, 3, 14}[(a >> 4) & 3];
  t.swiglu = (a >> 6) & 1;
  t.hidden = std::array<int64_t, 4>{4, 8, 12, 16}[b & 3];
  t.grid = std::array<int64_t, 4>{1, 2, 3, 4}[(b >> 2) & 3];
  t.features = std::array<int64_t, 4>{2, 4, 8, 1}[(b >> 4) & 3];
  t.head_hidden = std::array<int64_t, 4>{1, 2, 4, 8}[(b >> 6) & 3];
  for (int i = 0; i < 4; ++i) {
    t.out[i] = std::array<int64_t, 4>{1, 2, 4, 8}[(c >> (2 * i)) & 3];
  }
  t.fill = d & 1;
  t.metric = (d >> 1) & 1;
  return t;
}

// One key name of the original layout, "{b}" standing for a block index, and its shape
// under a target configuration.
struct Key {
  const char* name;
  bool per_block;
  std::vector<int64_t> (*shape)(const Target&);
};

#define SHAPE(...) [](const Target& t) -> std::vector<int64_t> { (void)t; return {__VA_ARGS__}; }
const std::vector<Key>& dictionary() {
  static const std::vector<Key> keys = {
      {"pretrained.cls_token", false, SHAPE(1, 1, t.c)},
      {"pretrained.mask_token", false, SHAPE(1, t.c)},
      {"pretrained.pos_embed", false, SHAPE(1, 1 + t.grid * t.grid, t.c)},
      {"pretrained.patch_embed.proj.weight", false, SHAPE(t.c, 3, t.patch, t.patch)},
      {"pretrained.patch_embed.proj.bias", false, SHAPE(t.c)},
      {"pretrained.norm.weight", false, SHAPE(t.c)},
      {"pretrained.norm.bias", false, SHAPE(t.c)},
      {"pretrained.blocks.{b}.norm1.weight", true, SHAPE(t.c)},
      {"pretrained.blocks.{b}.norm1.bias", true, SHAPE(t.c)},
      {"pretrained.blocks.{b}.attn.qkv.weight", true, SHAPE(3 * t.c, t.c)},
      {"pretrained.blocks.{b}.attn.qkv.bias", true, SHAPE(3 * t.c)},
      {"pretrained.blocks.{b}.attn.proj.weight", true, SHAPE(t.c, t.c)},
      {"pretrained.blocks.{b}.attn.proj.bias", true, SHAPE(t.c)},
      {"pretrained.blocks.{b}.norm2.weight", true, SHAPE(t.c)},
      {"pretrained.blocks.{b}.norm2.bias", true, SHAPE(t.c)},
      {"pretrained.blocks.{b}.ls1.gamma", true, SHAPE(t.c)},
      {"pretrained.blocks.{b}.ls2.gamma", true, SHAPE(t.c)},
      {"pretrained.blocks.{b}.mlp.fc1.weight", true, SHAPE(t.hidden, t.c)},
      {"pretrained.blocks.{b}.mlp.fc1.bias", true, SHAPE(t.hidden)},
      {"pretrained.blocks.{b}.mlp.fc2.weight", true, SHAPE(t.c, t.hidden)},
      {"pretrained.blocks.{b}.mlp.fc2.bias", true, SHAPE(t.c)},
      {"pretrained.blocks.{b}.mlp.w12.weight", true, SHAPE(2 * t.hidden, t.c)},
      {"pretrained.blocks.{b}.mlp.w12.bias", true, SHAPE(2 * t.hidden)},
      {"pretrained.blocks.{b}.mlp.w3.weight", true, SHAPE(t.c, t.hidden)},
      {"pretrained.blocks.{b}.mlp.w3.bias", true, SHAPE(t.c)},
      {"depth_head.projects.0.weight", false, SHAPE(t.out[0], t.c, 1, 1)},
      {"depth_head.projects.0.bias", false, SHAPE(t.out[0])},
      {"depth_head.projects.1.weight", false, SHAPE(t.out[1], t.c, 1, 1)},
      {"depth_head.projects.1.bias", false, SHAPE(t.out[1])},
      {"depth_head.projects.2.weight", false, SHAPE(t.out[2], t.c, 1, 1)},
      {"depth_head.projects.2.bias", false, SHAPE(t.out[2])},
      {"depth_head.projects.3.weight", false, SHAPE(t.out[3], t.c, 1, 1)},
      {"depth_head.projects.3.bias", false, SHAPE(t.out[3])},
      {"depth_head.resize_layers.0.weight", false, SHAPE(t.out[0], t.out[0], 4, 4)},
      {"depth_head.resize_layers.0.bias", false, SHAPE(t.out[0])},
      {"depth_head.resize_layers.1.weight", false, SHAPE(t.out[1], t.out[1], 2, 2)},
      {"depth_head.resize_layers.1.bias", false, SHAPE(t.out[1])},
      {"depth_head.resize_layers.3.weight", false, SHAPE(t.out[3], t.out[3], 3, 3)},
      {"depth_head.resize_layers.3.bias", false, SHAPE(t.out[3])},
      {"depth_head.scratch.layer1_rn.weight", false, SHAPE(t.features, t.out[0], 3, 3)},
      {"depth_head.scratch.layer2_rn.weight", false, SHAPE(t.features, t.out[1], 3, 3)},
      {"depth_head.scratch.layer3_rn.weight", false, SHAPE(t.features, t.out[2], 3, 3)},
      {"depth_head.scratch.layer4_rn.weight", false, SHAPE(t.features, t.out[3], 3, 3)},
      {"depth_head.scratch.refinenet{b}.resConfUnit1.conv1.weight", true, SHAPE(t.features, t.features, 3, 3)},
      {"depth_head.scratch.refinenet{b}.resConfUnit1.conv1.bias", true, SHAPE(t.features)},
      {"depth_head.scratch.refinenet{b}.resConfUnit1.conv2.weight", true, SHAPE(t.features, t.features, 3, 3)},
      {"depth_head.scratch.refinenet{b}.resConfUnit1.conv2.bias", true, SHAPE(t.features)},
      {"depth_head.scratch.refinenet{b}.resConfUnit2.conv1.weight", true, SHAPE(t.features, t.features, 3, 3)},
      {"depth_head.scratch.refinenet{b}.resConfUnit2.conv1.bias", true, SHAPE(t.features)},
      {"depth_head.scratch.refinenet{b}.resConfUnit2.conv2.weight", true, SHAPE(t.features, t.features, 3, 3)},
      {"depth_head.scratch.refinenet{b}.resConfUnit2.conv2.bias", true, SHAPE(t.features)},
      {"depth_head.scratch.refinenet{b}.out_conv.weight", true, SHAPE(t.features, t.features, 1, 1)},
      {"depth_head.scratch.refinenet{b}.out_conv.bias", true, SHAPE(t.features)},
      {"depth_head.scratch.output_conv1.weight", false, SHAPE(t.features / 2, t.features, 3, 3)},
      {"depth_head.scratch.output_conv1.bias", false, SHAPE(t.features / 2)},
      {"depth_head.scratch.output_conv2.0.weight", false, SHAPE(t.head_hidden, t.features / 2, 3, 3)},
      {"depth_head.scratch.output_conv2.0.bias", false, SHAPE(t.head_hidden)},
      {"depth_head.scratch.output_conv2.2.weight", false, SHAPE(1, t.head_hidden, 1, 1)},
      {"depth_head.scratch.output_conv2.2.bias", false, SHAPE(1)},
  };
  return keys;
}
#undef SHAPE

bool is_refinenet(const Key& k) {
  return std::string(k.name).find("refinenet{b}") != std::string::npos;
}

std::string key_name(const Key& k, int block) {
  std::string name = k.name;
  const auto at = name.find("{b}");
  if (at != std::string::npos) {
    name.replace(at, 3, std::to_string(block));
  }
  return name;
}

// The key sets a correct checkpoint of the target configuration holds.
std::vector<std::pair<std::string, std::vector<int64_t>>> complete_key_set(const Target& t) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (const Key& k : dictionary()) {
    const std::string n = k.name;
    const bool mlp_plain = n.find("mlp.fc") != std::string::npos;
    const bool mlp_swiglu = n.find("mlp.w") != std::string::npos;
    if ((mlp_plain && t.swiglu) || (mlp_swiglu && !t.swiglu)) {
      continue;
    }
    if (!k.per_block) {
      out.emplace_back(n, k.shape(t));
    } else if (is_refinenet(k)) {
      for (int r = 1; r <= 4; ++r) {
        out.emplace_back(key_name(k, r), k.shape(t));
      }
    } else {
      for (int b = 0; b < t.depth; ++b) {
        out.emplace_back(key_name(k, b), k.shape(t));
      }
    }
  }
  return out;
}

std::pair<std::string, const Key*> dictionary_key(fuzz::ByteReader& in) {
  const auto& keys = dictionary();
  const Key& k = keys[in.u16() % keys.size()];
  const int block = k.per_block ? (is_refinenet(k) ? 1 + in.u8() % 4 : in.u8() % kMaxBlocks) : 0;
  return {key_name(k, block), &k};
}

std::vector<int64_t> shape_from(fuzz::ByteReader& in) {
  std::vector<int64_t> shape(in.u8() % 5);
  for (auto& d : shape) {
    d = in.u8() % 17;
  }
  return shape;
}

int64_t elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    n *= d;
  }
  return n;
}

// Python's config_from_original(): the configuration read off the tensor shapes; nullopt
// where Python raises (ModelError, or -- see the README -- IndexError/KeyError).
std::optional<DepthAnythingV2Config> config_from_original(const WeightMap& w, bool metric) {
  auto dim = [&](const std::string& name, int64_t index) -> std::optional<int64_t> {
    auto it = w.find(name);
    if (it == w.end() || it->second.dim() == 0) {
      return std::nullopt;
    }
    // Python's shape[index]: an index past the rank is an IndexError, which it reports as a
    // ModelError.
    const int64_t d = it->second.dim();
    const int64_t i = index < 0 ? d + index : index;
    if (i < 0 || i >= d) {
      return std::nullopt;
    }
    return it->second.size(i);
  };
  DepthAnythingV2Config config;
  const auto embed = dim("pretrained.cls_token", -1);
  if (!embed) {
    return std::nullopt;
  }
  // The block indices, as the regex ^pretrained\.blocks\.(\d+)\. finds them.
  const std::string prefix = "pretrained.blocks.";
  int64_t max_block = -1;
  for (const auto& [name, _] : w) {
    if (name.compare(0, prefix.size(), prefix) != 0) {
      continue;
    }
    size_t end = prefix.size();
    while (end < name.size() && name[end] >= '0' && name[end] <= '9') {
      ++end;
    }
    if (end == prefix.size() || end >= name.size() || name[end] != '.') {
      continue;
    }
    if (end - prefix.size() > 6) {
      return std::nullopt; // a huge block index: see kMaxDepth
    }
    max_block = std::max<int64_t>(max_block, std::stoll(name.substr(prefix.size(), end - prefix.size())));
  }
  if (max_block < 0) {
    return std::nullopt; // max() of nothing: ValueError, a ModelError in Python
  }
  const int64_t depth = max_block + 1;
  if (depth > kMaxDepth) {
    return std::nullopt;
  }
  const bool swiglu = w.count("pretrained.blocks.0.mlp.w12.weight") != 0;
  const auto hidden = swiglu ? dim("pretrained.blocks.0.mlp.w3.weight", 1) : dim("pretrained.blocks.0.mlp.fc1.weight", 0);
  std::array<int64_t, 4> out{};
  for (int i = 0; i < 4; ++i) {
    const auto o = dim("depth_head.projects." + std::to_string(i) + ".weight", 0);
    if (!o) {
      return std::nullopt;
    }
    out[i] = *o;
  }
  const auto features = dim("depth_head.scratch.layer1_rn.weight", 0);
  const auto head_hidden = dim("depth_head.scratch.output_conv2.0.weight", 0);
  const auto patch = dim("pretrained.patch_embed.proj.weight", -1);
  if (!hidden || !features || !head_hidden || !patch) {
    return std::nullopt;
  }
  config.encoder.embed_dim = *embed;
  config.encoder.depth = depth;
  config.encoder.num_heads = std::max<int64_t>(1, *embed / 64);
  config.encoder.mlp_hidden = *hidden;
  config.encoder.swiglu = swiglu;
  config.encoder.patch_size = *patch;
  config.encoder.pos_embed_resize = PosEmbedResize::ScaleFactorWithOffset;
  config.head.features = *features;
  config.head.out_channels = out;
  config.head.head_hidden = *head_hidden;
  config.head.metric = metric;
  config.head.max_depth = metric ? 20.0 : 1.0;
  // Python: the preset's layers for a preset depth, otherwise quarters of the depth.
  if (depth == 12) {
    config.layers = {2, 5, 8, 11};
  } else if (depth == 24) {
    config.layers = {4, 11, 17, 23};
  } else if (depth == 40) {
    config.layers = {9, 19, 29, 39};
  } else {
    auto floor_div = [](int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); };
    config.layers = {floor_div(depth, 4) - 1, floor_div(depth, 2) - 1, floor_div(3 * depth, 4) - 1, depth - 1};
  }
  return config;
}

// Python's config_from_transformers(): numbers from a config.json, passed on as they are.
DepthAnythingV2Config config_from_json_numbers(fuzz::ByteReader& in, const Target& t) {
  static constexpr std::array<int64_t, 8> kSmall{0, 1, 2, 3, 4, 8, 16, -1};
  auto pick = [&](int64_t fallback) {
    const uint8_t v = in.u8();
    return v < 0xc0 ? fallback : kSmall[v & 7];
  };
  DepthAnythingV2Config config;
  config.encoder.embed_dim = pick(t.c);
  config.encoder.depth = pick(t.depth);
  config.encoder.num_heads = pick(1);
  config.encoder.mlp_hidden = pick(t.hidden);
  config.encoder.swiglu = t.swiglu;
  config.encoder.patch_size = pick(t.patch);
  config.encoder.pos_embed_resize = PosEmbedResize::ExactSize;
  config.head.features = pick(t.features);
  for (int i = 0; i < 4; ++i) {
    config.head.out_channels[i] = pick(t.out[i]);
  }
  config.head.head_hidden = pick(t.head_hidden);
  config.head.metric = t.metric;
  config.head.max_depth = t.metric ? 80.0 : 1.0;
  // out_indices from the config, 1-based stages made 0-based.
  const int64_t d = config.encoder.depth;
  config.layers = {d / 4 - 1, d / 2 - 1, 3 * d / 4 - 1, d - 1};
  for (auto& layer : config.layers) {
    const uint8_t v = in.u8();
    if (v >= 0xe0) {
      layer = static_cast<int64_t>(v & 15) - 2;
    }
  }
  return config;
}

void run(const uint8_t* data, size_t size) {
  fuzz::ByteReader in(data, size);
  const uint8_t first = in.u8();
  const bool transformers = (first & 0x80) != 0;
  const Target target = target_from(first, in);
  std::optional<DepthAnythingV2Config> json_config;
  if (transformers) {
    json_config = config_from_json_numbers(in, target);
  }

  WeightMap weights;
  int64_t total = 0;
  auto add = [&](const std::string& name, const std::vector<int64_t>& shape) {
    const int64_t n = elements(shape);
    if (total + n > kMaxElements) {
      return;
    }
    auto it = weights.find(name);
    if (it != weights.end()) {
      total -= it->second.numel();
    }
    total += n;
    weights[name] = at::zeros(shape, at::kFloat);
  };
  if (target.fill) {
    for (const auto& [name, shape] : complete_key_set(target)) {
      add(name, shape);
    }
  }
  for (size_t entries = 0; !in.empty() && entries < kMaxEntries; ++entries) {
    switch (in.u8() % 5) {
      case 0: {
        auto [name, key] = dictionary_key(in);
        add(name, key->shape(target));
        break;
      }
      case 1: {
        auto [name, key] = dictionary_key(in);
        add(name, shape_from(in));
        break;
      }
      case 2: {
        const std::string name = in.bytes(in.u8() % 49);
        add(name, shape_from(in));
        break;
      }
      case 3: {
        auto [name, key] = dictionary_key(in);
        auto it = weights.find(name);
        if (it != weights.end()) {
          total -= it->second.numel();
          weights.erase(it);
        }
        break;
      }
      default: {
        auto [name, key] = dictionary_key(in);
        std::vector<int64_t> shape = key->shape(target);
        if (!shape.empty()) {
          const size_t i = in.u8() % shape.size();
          const uint8_t how = in.u8() % 3;
          shape[i] = how == 0 ? 0 : (how == 1 ? shape[i] + 1 : std::max<int64_t>(0, shape[i] - 1));
        }
        add(name, shape);
        break;
      }
    }
  }

  const std::optional<DepthAnythingV2Config> config =
      transformers ? json_config : config_from_original(weights, target.metric);
  if (!config) {
    fuzz::note("no configuration (Python refuses this checkpoint)");
    return; // Python refuses this checkpoint before the C++ builder sees it
  }
  if (config->encoder.depth > kMaxDepth) {
    return;
  }
  ModelOptions options;
  // make_model_options() keeps input_size within 14..4096; at least one patch, as the
  // builder requires (an Option error otherwise, which is not what this harness is about).
  options.input_size = std::max<int64_t>(14, std::min<int64_t>(config->encoder.patch_size, 4096));

  std::unique_ptr<DepthAnythingV2> model;
  try {
    model = std::make_unique<DepthAnythingV2>("fuzz", *config, weights, options);
  } catch (const Error& e) {
    fuzz::note(std::string("build refused: ") + e.what());
    if (e.kind() != ErrorKind::Model) {
      finding(kHarness, std::string("building the model failed with a ") + error_kind_name(e.kind()) +
                            " error instead of a Model error: " + e.what());
    }
    return;
  }

  // A model that was built must run.
  const at::Tensor frames = at::full({1, 3, 6, 10}, 128, at::kByte);
  const DepthOutput out = model->infer(frames);
  if (!out.depth.defined() || out.depth.sizes() != at::IntArrayRef({1, 1, 6, 10})) {
    finding(kHarness, "infer() returned depth of the wrong shape");
  }
  fuzz::note("built and ran the model (" + std::to_string(weights.size()) + " tensors)");
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  fuzz::init_process();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fuzz::guarded(kHarness, [&] { run(data, size); });
}
