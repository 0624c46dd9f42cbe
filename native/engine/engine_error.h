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

// c10::Error::what() carries a C++ backtrace; users need the first sentence.
inline std::string Brief(const c10::Error& e) {
  std::string message = e.what_without_backtrace();
  const auto newline = message.find('\n');
  return newline == std::string::npos ? message : message.substr(0, newline);
}

}  // namespace bertgate
