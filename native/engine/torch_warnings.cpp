#include "torch_warnings.h"

#include <algorithm>
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

// Whether `message` was new to `into` (and there was room for it).
bool Keep(std::vector<std::string>& into, const std::string& message) {
  if (into.size() >= kMaxTorchWarnings || std::find(into.begin(), into.end(), message) != into.end()) return false;
  into.push_back(message);
  return true;
}

}  // namespace

CaptureTorchWarnings::CaptureTorchWarnings(bool to_stderr) : guard_(&handler_) {
  handler_.to_stderr = to_stderr;
}

const std::vector<std::string>& CaptureTorchWarnings::seen() const {
  return handler_.seen;
}

void CaptureTorchWarnings::Handler::process(const c10::Warning& warning) {
  // libtorch calls handlers from its own noexcept paths: nothing may escape.
  try {
    const bool new_here = Keep(seen, warning.msg());
    {
      const std::lock_guard<std::mutex> hold(Lock());
      Keep(Kept(), warning.msg());
    }
    // Once per capture: a warning raised per tensor (the deprecation, once per int8 layer while
    // loads warn always) would otherwise print dozens of identical lines.
    if (to_stderr && new_here) c10::WarningHandler().process(warning);
  } catch (...) {  // NOLINT(bugprone-empty-catch): a lost warning is better than a terminated server
  }
}

namespace {

struct WarnAlwaysState {
  std::mutex lock;
  int holders = 0;
  bool before = false;  // libtorch's setting when the first holder came
};

WarnAlwaysState& WarnAlways() {
  static WarnAlwaysState state;
  return state;
}

}  // namespace

WarnAlwaysWhileLoading::WarnAlwaysWhileLoading() {
  WarnAlwaysState& state = WarnAlways();
  const std::lock_guard<std::mutex> hold(state.lock);
  if (state.holders++ == 0) {
    state.before = c10::WarningUtils::get_warnAlways();
    c10::WarningUtils::set_warnAlways(true);
  }
}

WarnAlwaysWhileLoading::~WarnAlwaysWhileLoading() {
  WarnAlwaysState& state = WarnAlways();
  const std::lock_guard<std::mutex> hold(state.lock);
  if (--state.holders == 0) c10::WarningUtils::set_warnAlways(state.before);
}

std::vector<std::string> TorchWarningsSeen() {
  const std::lock_guard<std::mutex> hold(Lock());
  return Kept();
}

}  // namespace bertgate
