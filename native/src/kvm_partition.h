// KvmPartition: one KVM VM with its guest RAM, in-kernel irqchip, MSR filter and vCPUs.
#pragma once
#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <map>
#include <set>
#include <vector>

#include "exit_channel.h"
#include "guest_ram.h"

namespace hvemu {

class KvmVcpu;

struct RamSpec {
  uint64_t gpa;
  uint64_t size;
};

struct PartitionConfig {
  uint32_t vcpu_count = 1;
  std::vector<RamSpec> ram;
  std::vector<uint32_t> user_msrs;  // MSRs (besides 0x40000000-0x400000FF) that exit to user space
  int32_t hypercall_port = -1;      // byte OUT to this port becomes a hypercall exit (-1: none)
  bool int3_fixup = true;           // finish int3 emulation failures by injecting #BP
  bool insn_fixups = true;          // finish fwait/fnclex/emms/fild/clac/stac/popcnt emulation failures (kvm_vcpu.cc)
  bool syscall_fixup = true;        // complete SYSCALLs this KVM leaves at CPL 3 (syscall_entry.cc)
  uint32_t spin_iterations = 4000;  // vCPU-side spin before sleeping on an unanswered exit
  bool sync_regs = true;            // use KVM_CAP_SYNC_REGS (when KVM offers it) for register exits
};

// Result of probing /dev/kvm without throwing.
struct KvmProbe {
  bool ok;
  const char* code;  // host_error.h code when !ok
  std::string message;
};
KvmProbe ProbeKvm();

class KvmPartition {
 public:
  static std::unique_ptr<KvmPartition> Create(const PartitionConfig& config);
  ~KvmPartition();
  KvmPartition(const KvmPartition&) = delete;
  KvmPartition& operator=(const KvmPartition&) = delete;

  const std::vector<std::shared_ptr<GuestRam>>& ram() const { return ram_; }
  std::shared_ptr<ExitChannel> channel() const { return channel_; }
  const PartitionConfig& config() const { return config_; }
  // True when vCPUs exchange general registers through kvm_run (KVM_CAP_SYNC_REGS).
  bool sync_regs() const { return sync_regs_; }
  // Bytes of a vCPU's XSAVE image (KVM_CAP_XSAVE2; 4096 without it) and whether KVM_GET_XSAVE2 exists.
  size_t xsave_size() const { return xsave_size_; }
  bool xsave2() const { return xsave_size_ > 0 && has_xsave2_; }
  uint32_t vcpu_count() const { return static_cast<uint32_t>(vcpus_.size()); }
  KvmVcpu& vcpu(uint32_t index);

  // CPUID entries KVM can offer (system-wide KVM_GET_SUPPORTED_CPUID).
  std::vector<kvm_cpuid_entry2> SupportedCpuid() const;
  // Re-programs the MSR filter: the Hyper-V range plus `user_msrs`.
  void SetUserMsrs(const std::vector<uint32_t>& user_msrs);

  // Interrupts and doorbells.
  int SignalMsi(uint64_t address, uint32_t data);
  // Drives an in-kernel IOAPIC input (a legacy device's interrupt line): level true = asserted.
  void SetIrqLine(uint32_t gsi, bool level);
  // Creates an eventfd that, when written, injects MSI {address, data}. Returns the eventfd.
  int AddIrqfdMsi(uint64_t address, uint32_t data);
  // Creates an eventfd that counts guest writes to `addr` (MMIO, or port when `pio`).
  int AddIoeventfd(uint64_t addr, uint32_t len, bool pio, bool has_datamatch, uint64_t datamatch);
  // Deassigns an ioeventfd made by AddIoeventfd and closes it; later guest writes exit again.
  void RemoveIoeventfd(int fd);
  // Adds 1 to an irqfd made by AddIrqfdMsi (raises its MSI). Any other fd is refused: a handle
  // whose eventfd is gone must never write into whatever file now has that number.
  void TriggerIrqfd(int fd);
  // Reads and resets the count of an ioeventfd made by AddIoeventfd (0 when none); any other
  // fd is refused, for the same reason.
  uint64_t TakeIoeventfd(int fd);

  // Copies guest bytes; false when the range is not entirely RAM (never touches other memory).
  // vCPU threads call it: it holds ram_mutex_ against AddRam/RemoveRam.
  bool ReadGuest(uint64_t gpa, void* out, uint64_t len) const;

  // Guest RAM at run time (JS thread). AddRam maps a new memfd region in a free memslot and
  // returns it. RemoveRam deletes the memslot of the region that starts at `gpa` and returns
  // it: the caller detaches its JS buffers, and the mapping goes with the last reference.
  // DiscardRam punches a hole in the memfd (FALLOC_FL_PUNCH_HOLE): the pages read as zero and
  // their host memory is freed.
  std::shared_ptr<GuestRam> AddRam(uint64_t gpa, uint64_t size);
  std::shared_ptr<GuestRam> RemoveRam(uint64_t gpa);
  void DiscardRam(uint64_t gpa, uint64_t size);
  // Batched discard (ballooning): every (gpa, size) range is checked first (non-empty,
  // page-aligned, inside one RAM region); if any is not, nothing is punched. Then one
  // fallocate(PUNCH_HOLE) per range. Returns the bytes discarded.
  uint64_t DiscardRanges(const std::vector<std::pair<uint64_t, uint64_t>>& ranges);
  // Host memory each RAM region holds now: (gpa, size, allocated bytes = st_blocks * 512 of its memfd).
  struct RamUsage {
    uint64_t gpa;
    uint64_t size;
    uint64_t allocated;
  };
  std::vector<RamUsage> RamUsageNow() const;

  void StopAll();  // asks every vCPU thread to stop and joins them

 private:
  explicit KvmPartition(const PartitionConfig& config) : config_(config) {}
  void OpenVm();
  void CheckCapabilities();
  void SetUpRam();
  void SetUpPlatform();
  void CreateVcpus();

  PartitionConfig config_;
  int kvm_fd_ = -1;
  int vm_fd_ = -1;
  size_t run_size_ = 0;
  std::vector<std::shared_ptr<GuestRam>> ram_;
  std::vector<uint32_t> slots_;  // memslot of ram_[i]
  mutable std::mutex ram_mutex_;
  std::shared_ptr<ExitChannel> channel_;
  std::vector<std::unique_ptr<KvmVcpu>> vcpus_;
  std::vector<int> eventfds_;
  std::set<int> irqfds_;
  std::map<int, kvm_ioeventfd> ioeventfds_;  // by fd, to deassign
  std::vector<kvm_irq_routing_entry> msi_routes_;
  bool sync_regs_ = false;
  size_t xsave_size_ = 4096;
  bool has_xsave2_ = false;
  uint32_t next_gsi_ = 24;  // GSIs below 24 belong to the IOAPIC pins
};

}  // namespace hvemu
