// Page-cache reads for disk backends (see file_io.cc).
#pragma once
#include <napi.h>

namespace hvemu {

// Adds readNowait to the addon's exports.
void RegisterFileIo(Napi::Env env, Napi::Object exports);

}  // namespace hvemu
