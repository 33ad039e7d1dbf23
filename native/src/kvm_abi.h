// KVM ioctls whose argument struct ends in a flexible array.
//
// The uapi headers declare those arrays with __DECLARE_FLEX_ARRAY, which under C++ adds an
// empty struct member: sizeof(kvm_cpuid2) becomes 12 instead of 8. That changes both the
// ioctl number (the size is encoded in it; KVM answers EINVAL) and the array's offset. So we
// build these calls from C-layout headers of our own.
#pragma once
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace hvemu {

struct CpuidListHeader {  // struct kvm_cpuid2 without its entries
  uint32_t nent;
  uint32_t padding;
};
struct IrqRoutingHeader {  // struct kvm_irq_routing without its entries
  uint32_t nr;
  uint32_t flags;
};
struct MsrListHeader {  // struct kvm_msrs without its entries
  uint32_t nmsrs;
  uint32_t pad;
};
struct XsaveRegion {  // struct kvm_xsave without its flexible `extra` (KVM_CAP_XSAVE2 sizes)
  uint32_t region[1024];
};
static_assert(sizeof(CpuidListHeader) == 8 && sizeof(IrqRoutingHeader) == 8 && sizeof(MsrListHeader) == 8, "uapi header sizes");

constexpr unsigned long kKvmGetSupportedCpuid = _IOWR(KVMIO, 0x05, CpuidListHeader);
constexpr unsigned long kKvmSetCpuid2 = _IOW(KVMIO, 0x90, CpuidListHeader);
constexpr unsigned long kKvmGetMsrs = _IOWR(KVMIO, 0x88, MsrListHeader);
constexpr unsigned long kKvmSetMsrs = _IOW(KVMIO, 0x89, MsrListHeader);
constexpr uint32_t kMsrLstar = 0xc0000082;  // IA32_LSTAR: the 64-bit SYSCALL entry
constexpr unsigned long kKvmSetGsiRouting = _IOW(KVMIO, 0x6a, IrqRoutingHeader);
constexpr unsigned long kKvmGetXsave = _IOR(KVMIO, 0xa4, XsaveRegion);
constexpr unsigned long kKvmSetXsave = _IOW(KVMIO, 0xa5, XsaveRegion);
constexpr unsigned long kKvmGetXsave2 = _IOR(KVMIO, 0xcf, XsaveRegion);

// A header followed by `n` entries, laid out as the kernel expects.
template <typename Header, typename Entry>
class FlexBuffer {
 public:
  explicit FlexBuffer(size_t n) : bytes_(sizeof(Header) + n * sizeof(Entry)) {}
  Header* header() { return reinterpret_cast<Header*>(bytes_.data()); }
  Entry* entries() { return reinterpret_cast<Entry*>(bytes_.data() + sizeof(Header)); }
  void* data() { return bytes_.data(); }

 private:
  std::vector<uint8_t> bytes_;  // std::vector<uint8_t> storage from new[] is suitably aligned
};

}  // namespace hvemu
