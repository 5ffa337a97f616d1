#include "sbsconv/common/DeviceSync.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <cstring>
#include <map>

namespace sbsconv {

namespace {

struct SyncState {
  int counters = 0;
  bool cpu_counts = false;
  int host_scopes = 0;
  int in_transfer = 0; // inside to_host/HostReadback, which count themselves
  int64_t observed = 0;
  int64_t explicit_transfers = 0;
  std::vector<std::string> names;
};

thread_local SyncState tls;

void note(const char* name) {
  tls.observed += 1;
  if (tls.names.size() < 16) {
    tls.names.emplace_back(name);
  }
}

bool on_device(const c10::IValue& v) {
  return v.isTensor() && v.toTensor().defined() && !v.toTensor().device().is_cpu();
}

bool counts_as_device(const c10::IValue& v) {
  if (!v.isTensor() || !v.toTensor().defined()) {
    return false;
  }
  if (!v.toTensor().device().is_cpu()) {
    return true;
  }
  return tls.cpu_counts && tls.host_scopes == 0;
}

// Operations whose result the host must wait for: a scalar read, or an output whose size
// depends on the data.
bool waits_for_data(const char* name) {
  static const char* const kOps[] = {
      "aten::_local_scalar_dense",
      "aten::nonzero",
      "aten::masked_select",
      "aten::_unique2",
      "aten::unique_dim",
      "aten::unique_consecutive",
      "aten::equal",
  };
  for (const char* op : kOps) {
    if (std::strcmp(name, op) == 0) {
      return true;
    }
  }
  return false;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext* /*context*/) {
  if (tls.counters == 0 || tls.in_transfer > 0) {
    return;
  }
  const char* name = fn.name();
  const auto inputs = fn.inputs();
  if (inputs.empty()) {
    return;
  }
  if (waits_for_data(name)) {
    if (counts_as_device(inputs[0])) {
      note(name);
    }
    return;
  }
  // A copy between the host and a device outside to_host: device -> host always waits;
  // host -> device waits too when the host memory is not pinned.
  if (std::strcmp(name, "aten::copy_") == 0 && inputs.size() >= 2 && inputs[0].isTensor() &&
      inputs[1].isTensor()) {
    const at::Tensor& dst = inputs[0].toTensor();
    const at::Tensor& src = inputs[1].toTensor();
    if (!dst.defined() || !src.defined()) {
      return;
    }
    if (dst.device().is_cpu() && on_device(inputs[1])) {
      note("device-to-host copy");
    } else if (src.device().is_cpu() && on_device(inputs[0]) && !src.is_pinned()) {
      note("host-to-device copy from pageable memory");
    }
  }
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& /*fn*/) {
  return nullptr;
}

struct TransferScope {
  TransferScope() {
    tls.in_transfer += 1;
    tls.explicit_transfers += 1;
    if (tls.counters > 0) {
      note("to_host");
    }
  }
  ~TransferScope() {
    tls.in_transfer -= 1;
  }
};

} // namespace

HostSyncCounter::HostSyncCounter(bool cpu_counts_as_device) {
  tls.counters += 1;
  tls.cpu_counts = tls.cpu_counts || cpu_counts_as_device;
  handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(on_start, on_end)
                                           .needsInputs(true)
                                           .scopes({at::RecordScope::FUNCTION}));
}

HostSyncCounter::~HostSyncCounter() {
  at::removeCallback(handle_);
  tls.counters -= 1;
  if (tls.counters == 0) {
    tls.cpu_counts = false;
    tls.observed = 0;
    tls.names.clear();
  }
}

int64_t HostSyncCounter::count() const {
  return tls.observed;
}

std::vector<std::string> HostSyncCounter::names() const {
  return tls.names;
}

int64_t explicit_host_transfers() {
  return tls.explicit_transfers;
}

HostScope::HostScope() {
  tls.host_scopes += 1;
}

HostScope::~HostScope() {
  tls.host_scopes -= 1;
}

at::Tensor to_host(const at::Tensor& t) {
  TransferScope scope;
  if (!t.defined() || t.device().is_cpu()) {
    return t;
  }
  if (!t.is_cuda()) {
    return t.to(at::kCPU); // MPS and others: their own copy, which orders itself
  }
  at::Tensor host = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
  host.copy_(t, /*non_blocking=*/true);
  c10::Event done(t.device().type());
  c10::impl::VirtualGuardImpl impl(t.device().type());
  done.record(impl.getStream(t.device()));
  done.synchronize();
  return host;
}

at::Tensor to_device(const at::Tensor& host, const at::Device& device) {
  if (host.device() == device) {
    return host;
  }
  if (!device.is_cuda() || !host.is_cpu()) {
    return host.to(device);
  }
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

void wait_for_current_stream(const at::Device& device) {
  if (!device.is_cuda()) {
    return;
  }
  c10::Event done(device.type());
  c10::impl::VirtualGuardImpl impl(device.type());
  done.record(impl.getStream(device));
  done.synchronize();
}

at::Tensor device_values(const std::vector<double>& values, const at::TensorOptions& options) {
  if (options.device().is_cpu()) {
    return at::tensor(values, options); // made in its own type, nothing to copy
  }
  at::Tensor out = at::empty({static_cast<int64_t>(values.size())}, options);
  for (size_t i = 0; i < values.size(); ++i) {
    out.select(0, static_cast<int64_t>(i)).fill_(values[i]);
  }
  return out;
}

std::vector<at::Tensor> to_host_all(const std::vector<at::Tensor>& tensors) {
  // One transfer per element type on the device (a stage's state: float32 alone).
  std::vector<at::Tensor> out(tensors.size());
  std::map<at::ScalarType, std::vector<size_t>> groups;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    if (!t.defined() || t.device().is_cpu()) {
      out[i] = t;
    } else {
      groups[t.scalar_type()].push_back(i);
    }
  }
  for (const auto& [type, members] : groups) {
    std::vector<at::Tensor> flat;
    for (size_t i : members) {
      flat.push_back(tensors[i].reshape({-1}));
    }
    const at::Tensor host = to_host(at::cat(flat));
    int64_t offset = 0;
    for (size_t i : members) {
      const at::Tensor& t = tensors[i];
      out[i] = host.narrow(0, offset, t.numel()).view(t.sizes()).clone();
      offset += t.numel();
    }
  }
  return out;
}

void HostReadback::submit(const at::Tensor& t) {
  TransferScope scope;
  ready_.reset();
  if (!t.defined() || t.device().is_cpu()) {
    host_ = t.defined() ? t.clone() : t;
    return;
  }
  if (!t.is_cuda()) {
    host_ = t.to(at::kCPU);
    return;
  }
  host_ = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
  host_.copy_(t, /*non_blocking=*/true);
  ready_ = std::make_unique<c10::Event>(t.device().type());
  c10::impl::VirtualGuardImpl impl(t.device().type());
  ready_->record(impl.getStream(t.device()));
}

at::Tensor HostReadback::take() {
  if (ready_) {
    ready_->synchronize();
    ready_.reset();
  }
  at::Tensor out = host_;
  host_ = at::Tensor();
  return out;
}

StageStream::StageStream(const at::Device& device) {
  if (!device.is_cuda()) {
    return;
  }
  c10::impl::VirtualGuardImpl impl(device.type());
  previous_ = impl.getStream(device);
  stream_ = impl.getStreamFromGlobalPool(device);
  impl.exchangeStream(*stream_);
}

StageStream::~StageStream() {
  if (stream_ && previous_) {
    c10::impl::VirtualGuardImpl impl(stream_->device_type());
    impl.exchangeStream(*previous_);
  }
}

std::shared_ptr<c10::Event> StageStream::mark() const {
  if (!stream_) {
    return nullptr;
  }
  auto event = std::make_shared<c10::Event>(stream_->device_type());
  event->record(*stream_);
  return event;
}

void StageStream::receive(const std::shared_ptr<c10::Event>& ready, const std::vector<at::Tensor*>& tensors) const {
  if (!stream_) {
    return;
  }
  if (ready) {
    ready->block(*stream_);
  }
  c10::impl::VirtualGuardImpl impl(stream_->device_type());
  for (at::Tensor* t : tensors) {
    if (t->defined() && t->device() == stream_->device() && t->has_storage()) {
      impl.recordDataPtrOnStream(t->storage().data_ptr(), *stream_);
    }
  }
}

} // namespace sbsconv
