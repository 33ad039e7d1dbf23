// Frame I/O for packet devices (a TAP's fd): many frames per call, one read(2) or write(2)
// each, so a burst costs one crossing from JavaScript instead of one per frame (the per-call
// cost of an FFI call was most of a 64-byte frame's time). Frames are packed back to back in
// one caller buffer with their lengths in a Uint32Array.
#include "frame_io.h"

#include "napi_util.h"
#include "packed_write.h"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

namespace hvemu {
namespace {

Napi::Uint8Array BytesArg(Napi::Env env, const Napi::Value& v, const char* call) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) ThrowUsage(env, std::string(call) + ": buffer must be a Uint8Array");
  return v.As<Napi::Uint8Array>();
}

Napi::Uint32Array LengthsArg(Napi::Env env, const Napi::Value& v, const char* call) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) ThrowUsage(env, std::string(call) + ": lengths must be a Uint32Array");
  return v.As<Napi::Uint32Array>();
}

uint32_t CountArg(Napi::Env env, const Napi::Value& v, const char* call, const char* what, uint64_t max) {
  if (!v.IsNumber()) ThrowUsage(env, std::string(call) + ": " + what + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= static_cast<double>(max)) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    ThrowUsage(env, std::string(call) + ": " + what + " must be an integer from 0 to " + std::to_string(max));
  }
  return static_cast<uint32_t>(d);
}

// readFrames(fd, buffer, lengths, maxFrame): reads frames into buffer back to back while at
// least maxFrame bytes are left (a TAP truncates a frame longer than the read) and lengths has
// room. Returns how many; 0 at EAGAIN or end of file; -errno for another error before any frame
// (after one, the count: the error comes back on the next call).
Napi::Value ReadFrames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "readFrames(fd, buffer, lengths, maxFrame)";
  if (info.Length() < 4) ThrowUsage(env, std::string(call) + ": four arguments");
  int fd = FdArg(env, info[0], call);
  Napi::Uint8Array buffer = BytesArg(env, info[1], call);
  Napi::Uint32Array lengths = LengthsArg(env, info[2], call);
  uint32_t max_frame = CountArg(env, info[3], call, "maxFrame", 1 << 20);
  if (max_frame == 0) ThrowUsage(env, std::string(call) + ": maxFrame must be positive");
  uint8_t* base = buffer.Data();
  size_t left = buffer.ByteLength();
  size_t at = 0;
  uint32_t count = 0;
  while (count < lengths.ElementLength() && left - at >= max_frame) {
    ssize_t n = read(fd, base + at, max_frame);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n < 0 && errno != EAGAIN && count == 0) return Napi::Number::New(env, -errno);
      break;
    }
    lengths[count++] = static_cast<uint32_t>(n);
    at += static_cast<size_t>(n);
  }
  return Napi::Number::New(env, count);
}

// writeFrames(fd, buffer, lengths, count, status): writes `count` frames packed in buffer, one
// write(2) each. Returns the frames consumed: written, or refused with an error other than
// EAGAIN (status[0] counts those, status[1] is the last errno). It stops at EAGAIN: that frame
// and the rest are not consumed.
Napi::Value WriteFrames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* call = "writeFrames(fd, buffer, lengths, count, status)";
  if (info.Length() < 5) ThrowUsage(env, std::string(call) + ": five arguments");
  int fd = FdArg(env, info[0], call);
  Napi::Uint8Array buffer = BytesArg(env, info[1], call);
  Napi::Uint32Array lengths = LengthsArg(env, info[2], call);
  uint32_t count = CountArg(env, info[3], call, "count", lengths.ElementLength());
  if (!info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array || info[4].As<Napi::Int32Array>().ElementLength() < 2) {
    ThrowUsage(env, std::string(call) + ": status must be an Int32Array of at least 2");
  }
  Napi::Int32Array status = info[4].As<Napi::Int32Array>();
  uint64_t total = 0;
  for (uint32_t i = 0; i < count; i++) total += lengths[i];
  if (total > buffer.ByteLength()) ThrowUsage(env, std::string(call) + ": the lengths add up to more than the buffer");
  PackedWriteResult r = WritePacked(fd, buffer.Data(), buffer.ByteLength(), lengths.Data(), count, [] { return false; });
  status[0] = r.failed;
  status[1] = r.last_errno;
  return Napi::Number::New(env, r.consumed);
}

}  // namespace

void RegisterFrameIo(Napi::Env env, Napi::Object exports) {
  exports.Set("readFrames", Napi::Function::New(env, ReadFrames));
  exports.Set("writeFrames", Napi::Function::New(env, WriteFrames));
}

}  // namespace hvemu
