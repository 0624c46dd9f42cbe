#pragma once
// Settling Promises from completion callbacks, in plain N-API calls whose statuses are
// checked. While an environment is torn down (a worker thread terminated, the process
// exiting) those calls fail; node-addon-api would turn each failure into a C++ exception,
// and one thrown through N-API's C callbacks aborts the whole process. Here a failed call
// means only that nobody is left to tell.

#include <node_api.h>

#include <string>

namespace bertgate {

// Each returns false when the environment could not take the value (it is going away).
bool ResolveUndefined(napi_env env, napi_deferred deferred) noexcept;
bool Reject(napi_env env, napi_deferred deferred, const std::string& code, const std::string& message) noexcept;

// A handle scope that is only closed when it was opened.
class SafeHandleScope {
 public:
  explicit SafeHandleScope(napi_env env) noexcept : env_(env) {
    if (napi_open_handle_scope(env_, &scope_) != napi_ok) scope_ = nullptr;
  }
  ~SafeHandleScope() {
    if (scope_ != nullptr) napi_close_handle_scope(env_, scope_);
  }
  SafeHandleScope(const SafeHandleScope&) = delete;
  SafeHandleScope& operator=(const SafeHandleScope&) = delete;
  bool ok() const { return scope_ != nullptr; }

 private:
  napi_env env_;
  napi_handle_scope scope_ = nullptr;
};

}  // namespace bertgate
