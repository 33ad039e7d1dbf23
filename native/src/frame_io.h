// Batched frame reads and writes on a file descriptor (see frame_io.cc).
#pragma once
#include <napi.h>

namespace hvemu {

// Adds readFrames and writeFrames to the addon's exports.
void RegisterFrameIo(Napi::Env env, Napi::Object exports);

}  // namespace hvemu
