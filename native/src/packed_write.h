// Writing frames packed back to back in one buffer to a packet fd, one write(2) per frame (a TAP
// takes one frame per call): shared by writeFrames (on the JS thread) and the FrameWriter's thread.
#pragma once
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace hvemu {

struct PackedWriteResult {
  uint32_t consumed;   // frames written or refused
  int32_t failed;      // frames refused with an error (dropped)
  int32_t last_errno;  // the last refusal's errno, 0 if none
};

// Writes the `count` frames of `data` (lengths[i] bytes each, in order). A frame refused with an
// error other than EAGAIN is consumed and counted. At EAGAIN, `retry()` says whether to try that
// frame again (true) or stop before it (false: it and the rest are not consumed). A length that
// reaches past `bytes` refuses that frame and the rest (EINVAL) without reading past the buffer.
template <typename Retry>
PackedWriteResult WritePacked(int fd, const uint8_t* data, size_t bytes, const uint32_t* lengths, uint32_t count, Retry retry) {
  PackedWriteResult r = {0, 0, 0};
  size_t at = 0;
  while (r.consumed < count) {
    uint32_t length = lengths[r.consumed];
    if (length > bytes - at) {
      r.failed += static_cast<int32_t>(count - r.consumed);
      r.last_errno = EINVAL;
      r.consumed = count;
      break;
    }
    ssize_t n = write(fd, data + at, length);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        if (retry()) continue;
        break;
      }
      r.failed++;
      r.last_errno = errno;
    }
    at += length;
    r.consumed++;
  }
  return r;
}

}  // namespace hvemu
