// The guest's x87 state, read and written through its XSAVE image (KVM_GET/SET_XSAVE).
//
// Why not KVM_GET/SET_FPU: KVM_SET_FPU writes the legacy FXSAVE area of the guest's fpstate but
// leaves XSTATE_BV alone. While the x87 component is in its initial state (XSTATE_BV bit 0 clear,
// e.g. right after FNINIT or EMMS) the next XRSTOR into the CPU re-initialises it and the values
// written are lost: measured with a FILD after FNCLEX; EMMS (the guest's FXSAVE showed the old
// state, KVM_GET_FPU the new one). Writing the XSAVE image with bit 0 set is what the CPU sees.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace hvemu {

class X87State {
 public:
  // `xsave_size`: bytes KVM_GET_XSAVE(2) fills (KvmPartition::xsave_size()).
  explicit X87State(size_t xsave_size) : image_(xsave_size < 4096 ? 4096 : xsave_size) {}
  bool Load(int vcpu_fd, bool xsave2);
  bool Store(int vcpu_fd);

  // FXSAVE-layout fields (SDM Vol. 1, 10.5.1, 64-bit format).
  uint16_t fcw() const { return Get16(0); }
  uint16_t fsw() const { return Get16(2); }
  void set_fsw(uint16_t v) { Set16(2, v); }
  uint8_t ftw() const { return image_[4]; }  // abridged: one bit per physical register, 1 = valid
  void set_ftw(uint8_t v) { image_[4] = v; }
  void set_fop(uint16_t v) { Set16(6, v); }
  void set_fip(uint64_t v) { Set64(8, v); }
  void set_fdp(uint64_t v) { Set64(16, v); }
  uint8_t* st(unsigned i) { return &image_[32 + 16 * (i & 7)]; }  // ST(i), 10 bytes used of 16

 private:
  uint16_t Get16(size_t at) const { return static_cast<uint16_t>(image_[at] | image_[at + 1] << 8); }
  void Set16(size_t at, uint16_t v);
  void Set64(size_t at, uint64_t v);
  std::vector<uint8_t> image_;
};

}  // namespace hvemu
