#include "sbsconv/depth/Weights.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <sstream>

#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

std::string shape_string(at::IntArrayRef shape) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    out << (i ? ", " : "") << shape[i];
  }
  out << ")";
  return out.str();
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    out << (i ? ", " : "");
    if (shape[i] < 0) {
      out << "*";
    } else {
      out << shape[i];
    }
  }
  out << ")";
  return out.str();
}

std::string join_limited(const std::vector<std::string>& items, size_t limit = 40) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < limit; ++i) {
    out += (i ? ", " : "") + items[i];
  }
  if (items.size() > limit) {
    out += ", ... (" + std::to_string(items.size() - limit) + " more)";
  }
  return out;
}

} // namespace

WeightReader::WeightReader(
    const WeightMap& weights,
    at::Device device,
    at::ScalarType dtype,
    std::string model)
    : weights_(weights), device_(device), dtype_(dtype), model_(std::move(model)) {}

at::Tensor WeightReader::fetch(
    const std::string& name,
    const std::vector<int64_t>& shape,
    at::ScalarType dtype) {
  used_.insert(name);
  auto it = weights_.find(name);
  if (it == weights_.end()) {
    missing_.push_back(name);
    return at::zeros(
        std::vector<int64_t>(shape.size(), 1), at::TensorOptions().dtype(dtype).device(device_));
  }
  const at::Tensor& t = it->second;
  bool ok = t.dim() == static_cast<int64_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) {
    ok = shape[i] < 0 || t.size(static_cast<int64_t>(i)) == shape[i];
  }
  if (!ok) {
    mismatched_.push_back(
        name + ": expected " + shape_string(shape) + ", found " + shape_string(t.sizes()));
    return at::zeros(
        std::vector<int64_t>(shape.size(), 1), at::TensorOptions().dtype(dtype).device(device_));
  }
  return t.to(device_, dtype, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

at::Tensor WeightReader::take(const std::string& name, const std::vector<int64_t>& shape) {
  return fetch(name, shape, dtype_);
}

at::Tensor WeightReader::take_as(const std::string& name, const std::vector<int64_t>& shape, at::ScalarType dtype) {
  auto it = weights_.find(name);
  if (it != weights_.end() && it->second.scalar_type() != dtype) {
    used_.insert(name);
    mismatched_.push_back(
        name + ": expected " + std::string(c10::toString(dtype)) + ", found " + c10::toString(it->second.scalar_type()));
    return at::zeros(std::vector<int64_t>(shape.size(), 1), at::TensorOptions().dtype(dtype).device(device_));
  }
  return fetch(name, shape, dtype);
}

at::Tensor WeightReader::take_fp32(const std::string& name, const std::vector<int64_t>& shape) {
  return fetch(name, shape, at::kFloat);
}

void WeightReader::ignore(const std::string& name) {
  used_.insert(name);
}

void WeightReader::ignore_prefix(const std::string& prefix) {
  ignored_prefixes_.push_back(prefix);
}

bool WeightReader::has(const std::string& name) const {
  return weights_.count(name) != 0;
}

std::vector<int64_t> WeightReader::shape_of(const std::string& name) const {
  auto it = weights_.find(name);
  if (it == weights_.end()) {
    throw Error(ErrorKind::Model, "load weights", model_ + ": the checkpoint has no '" + name + "'");
  }
  return it->second.sizes().vec();
}

void WeightReader::check() const {
  std::vector<std::string> unexpected;
  for (const auto& [name, _] : weights_) {
    if (used_.count(name)) {
      continue;
    }
    const bool ignored = std::any_of(
        // the binding captured by name: clang before 16 cannot capture structured bindings
        ignored_prefixes_.begin(), ignored_prefixes_.end(), [&, &name = name](const std::string& prefix) {
          return name.rfind(prefix, 0) == 0;
        });
    if (!ignored) {
      unexpected.push_back(name);
    }
  }
  std::sort(unexpected.begin(), unexpected.end());
  if (missing_.empty() && unexpected.empty() && mismatched_.empty()) {
    return;
  }
  std::string reason = model_ + ": the checkpoint does not fit the model.";
  if (!missing_.empty()) {
    reason += " Missing keys (" + std::to_string(missing_.size()) + "): " + join_limited(missing_) + ".";
  }
  if (!unexpected.empty()) {
    reason += " Unexpected keys (" + std::to_string(unexpected.size()) + "): " +
        join_limited(unexpected) + ".";
  }
  if (!mismatched_.empty()) {
    reason += " Shape mismatches: " + join_limited(mismatched_) + ".";
  }
  throw Error(ErrorKind::Model, "load weights", reason);
}

} // namespace sbsconv
