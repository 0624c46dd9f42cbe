#pragma once
// Inside the engine library failures travel as EngineError; the library boundary
// (engine_library.cpp) turns them into Failure values.

#include <c10/util/Exception.h>

#include <stdexcept>
#include <string>

#include "engine_api.h"

namespace bertgate {

class EngineError : public std::runtime_error {
 public:
  EngineError(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// Errors from libtorch carry a C++ backtrace, or, from the TorchScript interpreter, both
// tracebacks with the cause on the last line ("RuntimeError: index out of range in self").
// Users need that one sentence.
inline std::string Brief(const std::string& message) {
  if (message.find("Traceback of TorchScript") != std::string::npos) {
    auto end = message.find_last_not_of(" \n");
    auto start = message.rfind('\n', end);
    return message.substr(start == std::string::npos ? 0 : start + 1,
                          end - (start == std::string::npos ? 0 : start + 1) + 1);
  }
  const auto newline = message.find('\n');
  return newline == std::string::npos ? message : message.substr(0, newline);
}
inline std::string Brief(const c10::Error& e) {
  return Brief(e.what_without_backtrace());
}

// Allocation failures do not always arrive as c10::OutOfMemoryError: the CPU allocator
// raises a plain c10::Error, and the TorchScript interpreter may rethrow an op's error as a
// std::runtime_error carrying the message. The messages are libtorch's own and stable.
inline bool LooksLikeOutOfMemory(const std::string& message) {
  return message.find("can't allocate memory") != std::string::npos ||
         message.find("CUDA out of memory") != std::string::npos ||
         message.find("CUDA error: out of memory") != std::string::npos;
}

}  // namespace bertgate
