// A writer thread for packet fds (see frame_writer.cc).
#pragma once
#include <napi.h>

namespace hvemu {

// Adds the FrameWriter class to the addon's exports.
void RegisterFrameWriter(Napi::Env env, Napi::Object exports);

}  // namespace hvemu
