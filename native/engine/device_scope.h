#pragma once
// Every entry point into a model (load, probe, warm-up, enqueue) starts with a DeviceScope: the
// model's device is current for the scope, and on a GPU the model's own stream too. Without
// it, a model on cuda:1 would pin memory, copy, allocate and launch with whatever device the
// calling thread had current (device 0 on a fresh thread), and every engine would share the
// legacy default stream, which serialises their batches.

#include <c10/core/Device.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>

#include <optional>

namespace bertgate {

class DeviceScope {
 public:
  DeviceScope(const c10::Device& device, const std::optional<c10::Stream>& stream) : device_(device) {
    if (stream) stream_.reset_stream(*stream);
  }

 private:
  c10::DeviceGuard device_;
  c10::OptionalStreamGuard stream_;
};

}  // namespace bertgate
