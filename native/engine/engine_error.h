#pragma once
// Inside the engine library failures travel as EngineError; the library boundary
// (engine_library.cpp) turns them into Failure values.

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

}  // namespace bertgate
