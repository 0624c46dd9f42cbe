#include "torch_warnings.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace bertgate {
namespace {

std::mutex& Lock() {
  static std::mutex lock;
  return lock;
}

std::vector<std::string>& Kept() {
  static std::vector<std::string> kept;
  return kept;
}

bool AlsoToStderr() {
  static const bool on = [] {
    const char* value = std::getenv("BERTGATE_TORCH_WARNINGS");
    return value != nullptr && std::strcmp(value, "stderr") == 0;
  }();
  return on;
}

void Keep(std::vector<std::string>& into, const std::string& message) {
  if (into.size() < kMaxTorchWarnings && std::find(into.begin(), into.end(), message) == into.end()) {
    into.push_back(message);
  }
}

}  // namespace

CaptureTorchWarnings::CaptureTorchWarnings() : guard_(&handler_) {}

const std::vector<std::string>& CaptureTorchWarnings::seen() const {
  return handler_.seen;
}

void CaptureTorchWarnings::Handler::process(const c10::Warning& warning) {
  // libtorch calls handlers from its own noexcept paths: nothing may escape.
  try {
    Keep(seen, warning.msg());
    {
      const std::lock_guard<std::mutex> hold(Lock());
      Keep(Kept(), warning.msg());
    }
    if (AlsoToStderr()) c10::WarningHandler().process(warning);
  } catch (...) {  // NOLINT(bugprone-empty-catch): a lost warning is better than a terminated server
  }
}

std::vector<std::string> TorchWarningsSeen() {
  const std::lock_guard<std::mutex> hold(Lock());
  return Kept();
}

}  // namespace bertgate
