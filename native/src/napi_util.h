// Small Node-API helpers shared by the addon's classes and functions.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

namespace hvemu {

// A usage error (bad argument, wrong state): JS sees code HVEMU_USAGE (AccelUsageError).
[[noreturn]] inline void ThrowUsage(Napi::Env env, const std::string& msg) {
  Napi::Error err = Napi::Error::New(env, msg);
  err.Set("code", Napi::String::New(env, "HVEMU_USAGE"));
  throw err;
}

// A file descriptor argument: a non-negative integer Number.
inline int FdArg(Napi::Env env, const Napi::Value& v, const std::string& call) {
  if (!v.IsNumber()) ThrowUsage(env, call + ": fd must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 0x7fffffff) || d != static_cast<double>(static_cast<int64_t>(d))) ThrowUsage(env, call + ": fd must be a non-negative integer");
  return static_cast<int>(d);
}

// Calls the owner's Shutdown() when Node tears the environment down (threads joined and
// threadsafe functions released before the environment goes), unless the owner was destroyed
// first. The owner calls Register once constructed and Unregister in its destructor.
template <typename Owner>
class EnvCleanupHook {
 public:
  void Register(napi_env env, Owner* owner) {
    env_ = env;
    owner_ = owner;
    hooked_ = napi_add_env_cleanup_hook(env, Run, this) == napi_ok;
  }
  void Unregister() {
    if (hooked_) napi_remove_env_cleanup_hook(env_, Run, this);
    hooked_ = false;
  }

 private:
  static void Run(void* arg) {
    auto* self = static_cast<EnvCleanupHook*>(arg);
    self->hooked_ = false;
    self->owner_->Shutdown();
  }
  napi_env env_ = nullptr;
  Owner* owner_ = nullptr;
  bool hooked_ = false;
};

}  // namespace hvemu
