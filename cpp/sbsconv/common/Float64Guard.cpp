#include "sbsconv/common/Float64Guard.h"

#include <ATen/core/Tensor.h>
#include <ATen/record_function.h>

#include "sbsconv/common/Error.h"

namespace sbsconv {

namespace {

struct GuardState {
  int guards = 0;
  bool cpu_counts = false;
  int host_scopes = 0;
  std::vector<std::string> violations;
};

thread_local GuardState tls;

bool forbidden(const at::Tensor& t) {
  if (!t.defined() || t.scalar_type() != at::kDouble) {
    return false;
  }
  if (!t.device().is_cpu()) {
    return true; // never allowed, not even in a HostFloat64Scope
  }
  return tls.cpu_counts && tls.host_scopes == 0;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext* /*context*/) {
  if (tls.guards == 0) {
    return;
  }
  for (const c10::IValue& v : fn.outputs()) {
    bool bad = false;
    if (v.isTensor()) {
      bad = forbidden(v.toTensor());
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorVector()) {
        bad = bad || forbidden(t);
      }
    }
    if (bad && tls.violations.size() < 64) {
      tls.violations.emplace_back(fn.name());
      return;
    }
  }
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& /*fn*/) {
  return nullptr;
}

} // namespace

Float64Guard::Float64Guard(bool cpu_counts_as_device) {
  tls.guards += 1;
  tls.cpu_counts = tls.cpu_counts || cpu_counts_as_device;
  handle_ = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_start, on_end).needsOutputs(true).scopes({at::RecordScope::FUNCTION}));
}

Float64Guard::~Float64Guard() {
  at::removeCallback(handle_);
  tls.guards -= 1;
  if (tls.guards == 0) {
    tls.cpu_counts = false;
    tls.violations.clear();
  }
}

std::vector<std::string> Float64Guard::take_violations() {
  std::vector<std::string> out;
  out.swap(tls.violations);
  return out;
}

void Float64Guard::check(const char* stage) {
  const std::vector<std::string> ops = take_violations();
  if (ops.empty()) {
    return;
  }
  std::string names;
  for (size_t i = 0; i < ops.size() && i < 8; ++i) {
    names += (i ? ", " : "") + ops[i];
  }
  throw Error(
      ErrorKind::Internal,
      stage,
      "a float64 tensor was made on the model's device (" + names +
          "); see Note [No float64 on devices]");
}

HostFloat64Scope::HostFloat64Scope() {
  tls.host_scopes += 1;
}

HostFloat64Scope::~HostFloat64Scope() {
  tls.host_scopes -= 1;
}

} // namespace sbsconv
