#pragma once

#include <ATen/core/Tensor.h>

#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace sbsconv {

// Weights enter C++ as a name -> tensor map (Python reads the checkpoint and maps key names;
// C++ never unpickles). Names are those of the original reference implementation.
using WeightMap = std::unordered_map<std::string, at::Tensor>;

// Hands out a model's parameters by name, checking their shapes, and moves them to the
// model's device and dtype. Problems are collected, not thrown one at a time, so that the
// ModelError lists every missing key, every unexpected key and every shape mismatch at once
// (check() throws it).
//
// Threading: not thread-safe; used only while a model is being built.
class WeightReader {
 public:
  WeightReader(const WeightMap& weights, at::Device device, at::ScalarType dtype, std::string model);

  // The tensor `name`, which must have `shape` (-1 matches any size in that dimension).
  at::Tensor take(const std::string& name, const std::vector<int64_t>& shape);
  // As take(), but kept in float32 whatever the model's dtype (position tables, norms that
  // must stay exact).
  at::Tensor take_fp32(const std::string& name, const std::vector<int64_t>& shape);
  // As take(), for a tensor that must already be of `dtype`, whatever the model's (int8
  // weights prepared earlier); another type is listed by check() as a mismatch.
  at::Tensor take_as(const std::string& name, const std::vector<int64_t>& shape, at::ScalarType dtype);
  // Marks keys that the checkpoint may hold but the model does not use.
  void ignore(const std::string& name);
  void ignore_prefix(const std::string& prefix);
  bool has(const std::string& name) const;
  // The shape of `name` in the checkpoint, for reading a configuration off the weights.
  std::vector<int64_t> shape_of(const std::string& name) const;
  at::Device device() const {
    return device_;
  }

  // Throws a Model error listing everything wrong, if anything is.
  void check() const;

 private:
  at::Tensor fetch(const std::string& name, const std::vector<int64_t>& shape, at::ScalarType dtype);

  const WeightMap& weights_;
  at::Device device_;
  at::ScalarType dtype_;
  std::string model_;
  std::set<std::string> used_;
  std::vector<std::string> ignored_prefixes_;
  std::vector<std::string> missing_;
  std::vector<std::string> mismatched_;
};

} // namespace sbsconv
