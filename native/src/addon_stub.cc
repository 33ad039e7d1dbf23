// hvemu_native on platforms without a backend yet: loads, and says so through probeKvm, so
// `npm ci` and the TypeScript layer work everywhere and KVM tests skip with a clear message.
#include <napi.h>

static Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", Napi::Boolean::New(env, false));
  o.Set("code", Napi::String::New(env, "HVEMU_NO_KVM"));
  o.Set("message", Napi::String::New(env, "hvemu's native backends support Linux x86-64 only so far"));
  return o;
}

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("probeKvm", Napi::Function::New(env, Probe));
  return exports;
}

NODE_API_MODULE(hvemu_native, InitModule)
