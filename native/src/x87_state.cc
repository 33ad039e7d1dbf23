#include "x87_state.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstring>

#include "kvm_abi.h"

namespace hvemu {
namespace {

constexpr size_t kXstateBvOffset = 512;  // the XSAVE header follows the 512-byte legacy area
constexpr uint8_t kXfeatureX87 = 1;

}  // namespace

bool X87State::Load(int vcpu_fd, bool xsave2) {
  // KVM_GET_XSAVE copies 4 KiB; KVM_GET_XSAVE2 the whole image (larger with AVX-512 or AMX).
  unsigned long request = xsave2 ? kKvmGetXsave2 : kKvmGetXsave;
  return ioctl(vcpu_fd, request, image_.data()) == 0;
}

bool X87State::Store(int vcpu_fd) {
  // The state is no longer the initial one: say so, or XRSTOR would initialise it again.
  image_[kXstateBvOffset] |= kXfeatureX87;
  return ioctl(vcpu_fd, kKvmSetXsave, image_.data()) == 0;
}

void X87State::Set16(size_t at, uint16_t v) {
  image_[at] = static_cast<uint8_t>(v);
  image_[at + 1] = static_cast<uint8_t>(v >> 8);
}

void X87State::Set64(size_t at, uint64_t v) {
  for (int i = 0; i < 8; i++) image_[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace hvemu
