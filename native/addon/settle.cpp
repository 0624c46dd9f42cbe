#include "settle.h"

namespace bertgate {

bool ResolveUndefined(napi_env env, napi_deferred deferred) noexcept {
  napi_value undefined;
  return napi_get_undefined(env, &undefined) == napi_ok && napi_resolve_deferred(env, deferred, undefined) == napi_ok;
}

bool Reject(napi_env env, napi_deferred deferred, const std::string& code, const std::string& message) noexcept {
  napi_value js_code, js_message, error;
  if (napi_create_string_utf8(env, code.c_str(), code.size(), &js_code) != napi_ok) return false;
  if (napi_create_string_utf8(env, message.c_str(), message.size(), &js_message) != napi_ok) return false;
  if (napi_create_error(env, nullptr, js_message, &error) != napi_ok) return false;
  if (napi_set_named_property(env, error, "code", js_code) != napi_ok) return false;
  return napi_reject_deferred(env, deferred, error) == napi_ok;
}

}  // namespace bertgate
