#pragma once
// libtorch's warnings (TORCH_WARN), kept out of the server's stderr.
//
// libtorch hands each warning to a handler of the calling thread; its default one prints to
// stderr. An int8 bundle made libtorch 2.13 and later print, on load, that quantized tensors
// "are deprecated and will be removed": a line in every server's log that the server's own
// code cannot silence or act on. The engine installs a collector around each of its calls
// (load, forward pass, replica) instead; what it collects is kept, once per message, and
// reaches users through ModelInfo (this load's) and RuntimeInfo (the process's), so doctor
// and classifier.info show it. BERTGATE_TORCH_WARNINGS=stderr prints them as well.

#include <c10/util/Exception.h>

#include <string>
#include <vector>

namespace bertgate {

// The most distinct messages kept per process: a warning raised on every batch with a varying
// text (a shape in it) must not grow memory for the life of a server.
inline constexpr size_t kMaxTorchWarnings = 32;

// While it lives, libtorch warnings raised on this thread are collected (and printed only
// with BERTGATE_TORCH_WARNINGS=stderr). Nests: the previous handler returns on destruction.
class CaptureTorchWarnings {
 public:
  CaptureTorchWarnings();
  // The distinct messages raised on this thread while this capture lived, in order.
  const std::vector<std::string>& seen() const;

 private:
  class Handler : public c10::WarningHandler {
   public:
    void process(const c10::Warning& warning) override;
    std::vector<std::string> seen;
  };
  Handler handler_;
  c10::WarningUtils::WarningHandlerGuard guard_;
};

// Every distinct message collected in this process so far, oldest first (at most
// kMaxTorchWarnings).
std::vector<std::string> TorchWarningsSeen();

}  // namespace bertgate
