// Page-cache reads for disk backends: preadv2(RWF_NOWAIT) straight into the request's buffers,
// on the calling (JS) thread. RWF_NOWAIT never waits for the disk: data not in the page cache is
// EAGAIN, and the caller reads it on the libuv pool instead. One crossing, one syscall: a 4 KiB
// hit costs ~1 us here (through koffi it cost ~9 us, most of it marshalling the iovec array).
#include "file_io.h"

#include "napi_util.h"

#include <sys/uio.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

namespace hvemu {
namespace {

constexpr uint32_t kMaxIov = 1024;  // IOV_MAX

// readNowait(fd, offset, targets: Uint8Array[]): bytes read into the targets in order (short at
// end of file or where the cache stops), or -errno (-EAGAIN: nothing cached at `offset`).
Napi::Value ReadNowait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string call = "readNowait(fd, offset, targets)";
  if (info.Length() < 3) ThrowUsage(env, call + ": three arguments");
  int fd = FdArg(env, info[0], call);
  if (!info[1].IsNumber()) ThrowUsage(env, call + ": offset must be a number");
  double offset = info[1].As<Napi::Number>().DoubleValue();
  if (!(offset >= 0 && offset <= 9007199254740991.0) || offset != static_cast<double>(static_cast<int64_t>(offset))) {
    ThrowUsage(env, call + ": offset must be a non-negative safe integer");
  }
  if (!info[2].IsArray()) ThrowUsage(env, call + ": targets must be an array of Uint8Array");
  Napi::Array targets = info[2].As<Napi::Array>();
  uint32_t count = targets.Length();
  if (count > kMaxIov) ThrowUsage(env, call + ": at most 1024 targets");
  iovec stack_iov[16];
  std::vector<iovec> heap_iov;
  iovec* iov = stack_iov;
  if (count > 16) {
    heap_iov.resize(count);
    iov = heap_iov.data();
  }
  for (uint32_t i = 0; i < count; i++) {
    Napi::Value t = targets.Get(i);
    if (!t.IsTypedArray() || t.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) ThrowUsage(env, call + ": targets[" + std::to_string(i) + "] must be a Uint8Array");
    Napi::Uint8Array bytes = t.As<Napi::Uint8Array>();
    iov[i].iov_base = bytes.Data();
    iov[i].iov_len = bytes.ByteLength();
  }
  if (count == 0) return Napi::Number::New(env, 0);
  for (;;) {
    ssize_t n = preadv2(fd, iov, static_cast<int>(count), static_cast<off_t>(offset), RWF_NOWAIT);
    if (n >= 0) return Napi::Number::New(env, static_cast<double>(n));
    if (errno != EINTR) return Napi::Number::New(env, -errno);
  }
}

}  // namespace

void RegisterFileIo(Napi::Env env, Napi::Object exports) { exports.Set("readNowait", Napi::Function::New(env, ReadNowait)); }

}  // namespace hvemu
