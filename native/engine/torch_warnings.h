#pragma once
// libtorch's warnings (TORCH_WARN), kept out of the server's stderr.
//
// libtorch hands each warning to a handler of the calling thread; its default one prints to
// stderr. An int8 bundle made libtorch 2.13 and later print, on load, that quantized tensors
// "are deprecated and will be removed": a line in every server's log that the server's own
// code cannot silence or act on. The engine installs a collector around each of its calls
// (load, forward pass, replica) instead; what it collects is kept, once per message, and
// reaches users through ModelInfo (this load's) and RuntimeInfo (the process's), so doctor
// and classifier.info show it. Asked per load (LoadOptions::torch_warnings_to_stderr, set by
// BERTGATE_TORCH_WARNINGS=stderr in the caller's environment), they are printed as well.

#include <c10/util/Exception.h>

#include <string>
#include <vector>

namespace bertgate {

// The most distinct messages kept per process: a warning raised on every batch with a varying
// text (a shape in it) must not grow memory for the life of a server.
inline constexpr size_t kMaxTorchWarnings = 32;

// While it lives, libtorch warnings raised on this thread are collected (and printed only
// when `to_stderr`). Nests: the previous handler returns on destruction.
class CaptureTorchWarnings {
 public:
  explicit CaptureTorchWarnings(bool to_stderr);
  // The distinct messages raised on this thread while this capture lived, in order.
  const std::vector<std::string>& seen() const;

 private:
  class Handler : public c10::WarningHandler {
   public:
    void process(const c10::Warning& warning) override;
    std::vector<std::string> seen;
    bool to_stderr = false;
  };
  Handler handler_;
  c10::WarningUtils::WarningHandlerGuard guard_;
};

// While one lives (on any thread), libtorch's warn-once warnings are raised every time. The
// deprecation of quantized tensors is one of them: without this only the first int8 load of a
// process would list it, and a second classifier's info would say nothing was warned. Held
// around loads only: forward passes keep warn-once. Counted, so overlapping loads on several
// threads restore libtorch's setting only when the last one ends.
class WarnAlwaysWhileLoading {
 public:
  WarnAlwaysWhileLoading();
  ~WarnAlwaysWhileLoading();
  WarnAlwaysWhileLoading(const WarnAlwaysWhileLoading&) = delete;
  WarnAlwaysWhileLoading& operator=(const WarnAlwaysWhileLoading&) = delete;
};

// Every distinct message collected in this process so far, oldest first (at most
// kMaxTorchWarnings).
std::vector<std::string> TorchWarningsSeen();

}  // namespace bertgate
