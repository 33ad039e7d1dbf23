#include "kvm_partition.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "host_error.h"
#include "kvm_abi.h"
#include "kvm_vcpu.h"

namespace hvemu {
namespace {

constexpr int kKvmApiVersion = 12;
constexpr uint64_t kPageSize = 4096;
// Guest-physical space we accept RAM in: 2^46 keeps clear of any host's MAXPHYADDR we expect.
constexpr uint64_t kMaxGpa = 1ULL << 46;
// IOAPIC, LAPIC, the VMX TSS/identity-map pages and the reset vector live here; RAM may not.
constexpr uint64_t kPlatformHoleStart = 0xfec00000ULL;
constexpr uint64_t kPlatformHoleEnd = 0x100000000ULL;
constexpr uint64_t kTssAddr = 0xfeffd000ULL;
constexpr uint32_t kMaxVcpus = 256;
// Hyper-V synthetic MSRs: always handled in user space (TLFS range 0x40000000-0x400000FF).
constexpr uint32_t kHvMsrBase = 0x40000000;
constexpr uint32_t kHvMsrCount = 0x100;

int OpenKvm() {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    throw HostError(kErrNoKvm, std::string("cannot open /dev/kvm: ") + std::strerror(err), err);
  }
  return fd;
}

void CheckApiVersion(int kvm_fd) {
  int v = ioctl(kvm_fd, KVM_GET_API_VERSION, 0);
  if (v != kKvmApiVersion) {
    throw HostError(kErrApiVersion, "KVM API version is " + std::to_string(v) + ", hvemu needs " +
                                        std::to_string(kKvmApiVersion));
  }
}

void CloseAll(std::vector<int>& fds) {
  for (int fd : fds) close(fd);
  fds.clear();
}

}  // namespace

KvmProbe ProbeKvm() {
  try {
    int fd = OpenKvm();
    try {
      CheckApiVersion(fd);
    } catch (...) {
      close(fd);
      throw;
    }
    int vm = ioctl(fd, KVM_CREATE_VM, 0);
    int err = errno;
    close(fd);
    if (vm < 0) return {false, kErrNoKvm, std::string("KVM_CREATE_VM failed: ") + std::strerror(err)};
    close(vm);
    return {true, "", ""};
  } catch (const HostError& e) {
    return {false, e.code(), e.what()};
  }
}

std::unique_ptr<KvmPartition> KvmPartition::Create(const PartitionConfig& config) {
  if (config.vcpu_count == 0 || config.vcpu_count > kMaxVcpus) {
    throw HostError(kErrUsage, "vCPU count " + std::to_string(config.vcpu_count) + " is not in 1.." +
                                   std::to_string(kMaxVcpus));
  }
  std::unique_ptr<KvmPartition> p(new KvmPartition(config));
  p->OpenVm();
  p->CheckCapabilities();
  p->SetUpRam();
  p->SetUpPlatform();
  p->channel_ = std::make_shared<ExitChannel>(config.vcpu_count);
  p->channel_->set_spin_iterations(config.spin_iterations);
  p->CreateVcpus();
  return p;
}

KvmPartition::~KvmPartition() {
  StopAll();
  vcpus_.clear();
  CloseAll(eventfds_);
  if (vm_fd_ >= 0) close(vm_fd_);
  if (kvm_fd_ >= 0) close(kvm_fd_);
  // ram_ and channel_ may outlive us: JS ArrayBuffers keep their own references.
}

void KvmPartition::OpenVm() {
  kvm_fd_ = OpenKvm();
  CheckApiVersion(kvm_fd_);
  vm_fd_ = ioctl(kvm_fd_, KVM_CREATE_VM, 0);
  if (vm_fd_ < 0) {
    int err = errno;
    throw HostError(kErrNoKvm, std::string("KVM_CREATE_VM failed: ") + std::strerror(err), err);
  }
  int size = ioctl(kvm_fd_, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (size < static_cast<int>(sizeof(kvm_run))) ThrowErrno("KVM_GET_VCPU_MMAP_SIZE");
  run_size_ = static_cast<size_t>(size);
}

void KvmPartition::CheckCapabilities() {
  struct Cap {
    int id;
    const char* name;
  };
  static const Cap kRequired[] = {
      {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
      {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
      {KVM_CAP_X86_USER_SPACE_MSR, "KVM_CAP_X86_USER_SPACE_MSR"},
      {KVM_CAP_X86_MSR_FILTER, "KVM_CAP_X86_MSR_FILTER"},
      {KVM_CAP_SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
      {KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS"},
      {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
  };
  for (const Cap& cap : kRequired) {
    if (ioctl(vm_fd_, KVM_CHECK_EXTENSION, cap.id) <= 0) {
      throw HostError(kErrCapability, std::string("KVM lacks required capability ") + cap.name);
    }
  }
  // Optional: without it a hypercall exit costs four more ioctls (see KvmVcpu::HandleHypercall).
  int sync = ioctl(vm_fd_, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
  sync_regs_ = config_.sync_regs && sync > 0 && (sync & KVM_SYNC_X86_REGS) != 0;
  // The x87 fixups write the guest's XSAVE image; with AVX-512 or AMX it outgrows 4 KiB.
  int xsave2 = ioctl(vm_fd_, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
  has_xsave2_ = xsave2 > 0;
  if (xsave2 > 4096) xsave_size_ = static_cast<size_t>(xsave2);
  int max_vcpus = ioctl(vm_fd_, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
  if (max_vcpus > 0 && config_.vcpu_count > static_cast<uint32_t>(max_vcpus)) {
    throw HostError(kErrCapability, "KVM allows at most " + std::to_string(max_vcpus) + " vCPUs");
  }
}

static std::string RamWhere(uint64_t gpa) {
  char b[64];
  snprintf(b, sizeof b, "RAM region at GPA 0x%llx", (unsigned long long)gpa);
  return b;
}

// Alignment, the guest-physical limit and the platform hole (not overlap with other RAM).
static void CheckRamRange(uint64_t gpa, uint64_t size) {
  if (gpa % kPageSize != 0 || size % kPageSize != 0 || size == 0) {
    throw HostError(kErrMemoryMap, RamWhere(gpa) + " is not a non-empty, page-aligned range");
  }
  if (gpa >= kMaxGpa || size > kMaxGpa - gpa) {
    throw HostError(kErrMemoryMap, RamWhere(gpa) + " extends beyond the 2^46 guest-physical limit");
  }
  if (gpa < kPlatformHoleEnd && gpa + size > kPlatformHoleStart) {
    throw HostError(kErrMemoryMap, RamWhere(gpa) + " overlaps the platform hole 0xfec00000-0xffffffff (IOAPIC, LAPIC)");
  }
}

void KvmPartition::SetUpRam() {
  std::vector<RamSpec> sorted = config_.ram;
  if (sorted.empty()) throw HostError(kErrMemoryMap, "the memory map has no RAM regions");
  std::sort(sorted.begin(), sorted.end(), [](const RamSpec& a, const RamSpec& b) { return a.gpa < b.gpa; });
  int max_slots = ioctl(vm_fd_, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
  if (max_slots > 0 && sorted.size() > static_cast<size_t>(max_slots)) {
    throw HostError(kErrMemoryMap, "the memory map has more regions than KVM's " + std::to_string(max_slots) + " slots");
  }
  for (size_t i = 0; i < sorted.size(); i++) {
    const RamSpec& r = sorted[i];
    CheckRamRange(r.gpa, r.size);
    if (i > 0 && r.gpa < sorted[i - 1].gpa + sorted[i - 1].size) {
      throw HostError(kErrMemoryMap, RamWhere(r.gpa) + " overlaps the previous region");
    }
  }
  // Keep the caller's order for ram_ so JS can pair buffers with its specs.
  for (size_t i = 0; i < config_.ram.size(); i++) {
    const RamSpec& r = config_.ram[i];
    auto region = GuestRam::Create(r.gpa, r.size);
    kvm_userspace_memory_region mr = {};
    mr.slot = static_cast<uint32_t>(i);
    mr.guest_phys_addr = r.gpa;
    mr.memory_size = r.size;
    mr.userspace_addr = reinterpret_cast<uint64_t>(region->host());
    if (ioctl(vm_fd_, KVM_SET_USER_MEMORY_REGION, &mr) != 0) ThrowErrno("KVM_SET_USER_MEMORY_REGION");
    ram_.push_back(std::move(region));
    slots_.push_back(static_cast<uint32_t>(i));
  }
}

void KvmPartition::SetUpPlatform() {
  // Only VMX hosts need the real-mode TSS; other KVMs may refuse it, which is harmless.
  ioctl(vm_fd_, KVM_SET_TSS_ADDR, kTssAddr);
  if (ioctl(vm_fd_, KVM_CREATE_IRQCHIP, 0) != 0) ThrowErrno("KVM_CREATE_IRQCHIP");
  kvm_enable_cap cap = {};
  cap.cap = KVM_CAP_X86_USER_SPACE_MSR;
  // UNKNOWN: MSRs KVM does not implement come to us instead of a silent #GP (our default
  // answer is still #GP). FILTER: MSRs in the filter below come to us even if KVM knows them.
  cap.args[0] = KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER;
  if (ioctl(vm_fd_, KVM_ENABLE_CAP, &cap) != 0) ThrowErrno("KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)");
  SetUserMsrs(config_.user_msrs);
}

void KvmPartition::SetUserMsrs(const std::vector<uint32_t>& user_msrs) {
  std::vector<uint32_t> msrs;
  for (uint32_t m : user_msrs) {
    if (m >= kHvMsrBase && m < kHvMsrBase + kHvMsrCount) continue;  // already covered
    if (m >= 0x800 && m <= 0x8ff) {
      throw HostError(kErrUsage, "x2APIC MSRs (0x800-0x8ff) belong to the in-kernel LAPIC and cannot be trapped");
    }
    msrs.push_back(m);
  }
  std::sort(msrs.begin(), msrs.end());
  msrs.erase(std::unique(msrs.begin(), msrs.end()), msrs.end());
  // The guest's IA32_LSTAR write tells the SYSCALL fixup where the entry is (handled natively).
  std::vector<uint32_t> trapped = msrs;
  if (config_.syscall_fixup && !std::binary_search(msrs.begin(), msrs.end(), kMsrLstar)) trapped.push_back(kMsrLstar);
  if (trapped.size() > KVM_MSR_FILTER_MAX_RANGES - 1) {
    size_t room = KVM_MSR_FILTER_MAX_RANGES - 1 - (trapped.size() - msrs.size());
    throw HostError(kErrUsage, "at most " + std::to_string(room) + " extra MSRs can be trapped" +
                                   (trapped.size() > msrs.size() ? " (the SYSCALL fixup traps IA32_LSTAR)" : ""));
  }
  // A clear bitmap bit means "deny", which with KVM_MSR_EXIT_REASON_FILTER means "exit to us".
  static const uint8_t kDenyAll[kHvMsrCount / 8] = {};
  kvm_msr_filter filter = {};
  filter.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
  filter.ranges[0] = {KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE, kHvMsrCount, kHvMsrBase, const_cast<uint8_t*>(kDenyAll)};
  for (size_t i = 0; i < trapped.size(); i++) {
    filter.ranges[i + 1] = {KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE, 1, trapped[i], const_cast<uint8_t*>(kDenyAll)};
  }
  if (ioctl(vm_fd_, KVM_X86_SET_MSR_FILTER, &filter) != 0) ThrowErrno("KVM_X86_SET_MSR_FILTER");
  config_.user_msrs = msrs;
}

void KvmPartition::CreateVcpus() {
  for (uint32_t i = 0; i < config_.vcpu_count; i++) {
    int fd = ioctl(vm_fd_, KVM_CREATE_VCPU, i);
    if (fd < 0) ThrowErrno("KVM_CREATE_VCPU");
    void* run = mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (run == MAP_FAILED) {
      int err = errno;
      close(fd);
      errno = err;
      ThrowErrno("mmap of the vCPU run page");
    }
    vcpus_.push_back(std::make_unique<KvmVcpu>(*this, i, fd, static_cast<kvm_run*>(run), run_size_));
  }
}

KvmVcpu& KvmPartition::vcpu(uint32_t index) {
  if (index >= vcpus_.size()) throw HostError(kErrUsage, "no vCPU " + std::to_string(index));
  return *vcpus_[index];
}

std::vector<kvm_cpuid_entry2> KvmPartition::SupportedCpuid() const {
  for (uint32_t n = 128; n <= 4096; n *= 2) {
    FlexBuffer<CpuidListHeader, kvm_cpuid_entry2> buf(n);
    buf.header()->nent = n;
    if (ioctl(kvm_fd_, kKvmGetSupportedCpuid, buf.data()) == 0) {
      uint32_t got = buf.header()->nent < n ? buf.header()->nent : n;
      return std::vector<kvm_cpuid_entry2>(buf.entries(), buf.entries() + got);
    }
    if (errno != E2BIG) ThrowErrno("KVM_GET_SUPPORTED_CPUID");
  }
  throw HostError(kErrSystem, "KVM_GET_SUPPORTED_CPUID returned too many entries");
}

int KvmPartition::SignalMsi(uint64_t address, uint32_t data) {
  kvm_msi msi = {};
  msi.address_lo = static_cast<uint32_t>(address);
  msi.address_hi = static_cast<uint32_t>(address >> 32);
  msi.data = data;
  int r = ioctl(vm_fd_, KVM_SIGNAL_MSI, &msi);
  if (r < 0) ThrowErrno("KVM_SIGNAL_MSI");
  return r;  // >0 delivered, 0 blocked by the guest (e.g. LAPIC disabled)
}

void KvmPartition::SetIrqLine(uint32_t gsi, bool level) {
  // Only the in-kernel IOAPIC's pins (GSIs 0-23); the GSIs above are this partition's MSI routes.
  if (gsi >= 24) throw HostError(kErrUsage, "GSI " + std::to_string(gsi) + " is not an IOAPIC input (0-23)");
  kvm_irq_level line = {};
  line.irq = gsi;
  line.level = level ? 1 : 0;
  if (ioctl(vm_fd_, KVM_IRQ_LINE, &line) != 0) ThrowErrno("KVM_IRQ_LINE");
}

int KvmPartition::AddIrqfdMsi(uint64_t address, uint32_t data) {
  if (ioctl(vm_fd_, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD) <= 0) {
    throw HostError(kErrCapability, "KVM lacks KVM_CAP_IRQFD");
  }
  kvm_irq_routing_entry e = {};
  e.gsi = next_gsi_;
  e.type = KVM_IRQ_ROUTING_MSI;
  e.u.msi.address_lo = static_cast<uint32_t>(address);
  e.u.msi.address_hi = static_cast<uint32_t>(address >> 32);
  e.u.msi.data = data;
  // KVM_SET_GSI_ROUTING replaces the whole table, which on x86 starts with the default
  // IOAPIC/PIC routes. We keep only our MSI routes; GSIs 0-23 are then unrouted, which is
  // fine while no device uses IOAPIC pins (revisit when one does).
  std::vector<kvm_irq_routing_entry> routes = msi_routes_;
  routes.push_back(e);
  FlexBuffer<IrqRoutingHeader, kvm_irq_routing_entry> table(routes.size());
  table.header()->nr = static_cast<uint32_t>(routes.size());
  std::memcpy(table.entries(), routes.data(), routes.size() * sizeof(kvm_irq_routing_entry));
  if (ioctl(vm_fd_, kKvmSetGsiRouting, table.data()) != 0) ThrowErrno("KVM_SET_GSI_ROUTING");
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) ThrowErrno("eventfd");
  kvm_irqfd irqfd = {};
  irqfd.fd = static_cast<uint32_t>(efd);
  irqfd.gsi = e.gsi;
  if (ioctl(vm_fd_, KVM_IRQFD, &irqfd) != 0) {
    int err = errno;
    close(efd);
    errno = err;
    ThrowErrno("KVM_IRQFD");
  }
  msi_routes_ = std::move(routes);
  next_gsi_++;
  eventfds_.push_back(efd);
  irqfds_.insert(efd);
  return efd;
}

int KvmPartition::AddIoeventfd(uint64_t addr, uint32_t len, bool pio, bool has_datamatch, uint64_t datamatch) {
  if (ioctl(vm_fd_, KVM_CHECK_EXTENSION, KVM_CAP_IOEVENTFD) <= 0) {
    throw HostError(kErrCapability, "KVM lacks KVM_CAP_IOEVENTFD");
  }
  if (len != 0 && len != 1 && len != 2 && len != 4 && len != 8) {
    throw HostError(kErrUsage, "ioeventfd length must be 0, 1, 2, 4 or 8");
  }
  if (pio && addr > 0xffff) throw HostError(kErrUsage, "ioeventfd port must be below 0x10000");
  for (const auto& r : ram_) {
    if (!pio && r->Contains(addr, len == 0 ? 1 : len)) {
      throw HostError(kErrUsage, "ioeventfd address lies in guest RAM; guest writes there never exit");
    }
  }
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) ThrowErrno("eventfd");
  kvm_ioeventfd io = {};
  io.addr = addr;
  io.len = len;
  io.fd = efd;
  io.datamatch = datamatch;
  io.flags = (pio ? KVM_IOEVENTFD_FLAG_PIO : 0) | (has_datamatch ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0);
  if (ioctl(vm_fd_, KVM_IOEVENTFD, &io) != 0) {
    int err = errno;
    close(efd);
    errno = err;
    ThrowErrno("KVM_IOEVENTFD");
  }
  eventfds_.push_back(efd);
  ioeventfds_[efd] = io;
  return efd;
}

void KvmPartition::RemoveIoeventfd(int fd) {
  auto it = ioeventfds_.find(fd);
  if (it == ioeventfds_.end()) throw HostError(kErrUsage, "not an ioeventfd of this partition");
  kvm_ioeventfd io = it->second;
  io.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  if (ioctl(vm_fd_, KVM_IOEVENTFD, &io) != 0) ThrowErrno("KVM_IOEVENTFD(deassign)");
  ioeventfds_.erase(it);
  for (auto e = eventfds_.begin(); e != eventfds_.end(); ++e) {
    if (*e == fd) {
      eventfds_.erase(e);
      break;
    }
  }
  close(fd);
}

void KvmPartition::TriggerIrqfd(int fd) {
  if (irqfds_.count(fd) == 0) throw HostError(kErrUsage, "fd " + std::to_string(fd) + " is not an irqfd of this partition");
  uint64_t one = 1;
  // EAGAIN: the counter is at its maximum, so the interrupt is pending anyway.
  if (write(fd, &one, sizeof one) != sizeof one && errno != EAGAIN) ThrowErrno("write to irqfd");
}

uint64_t KvmPartition::TakeIoeventfd(int fd) {
  if (ioeventfds_.count(fd) == 0) throw HostError(kErrUsage, "fd " + std::to_string(fd) + " is not an ioeventfd of this partition");
  uint64_t count = 0;
  if (read(fd, &count, sizeof count) != sizeof count) {
    if (errno == EAGAIN) return 0;  // non-blocking eventfd with no writes since the last take
    ThrowErrno("read of ioeventfd");
  }
  return count;
}

std::shared_ptr<GuestRam> KvmPartition::AddRam(uint64_t gpa, uint64_t size) {
  CheckRamRange(gpa, size);
  for (const auto& r : ram_) {
    if (gpa < r->gpa() + r->size() && r->gpa() < gpa + size) throw HostError(kErrMemoryMap, RamWhere(gpa) + " overlaps RAM already mapped");
  }
  uint32_t slot = 0;
  while (std::find(slots_.begin(), slots_.end(), slot) != slots_.end()) slot++;
  int max_slots = ioctl(vm_fd_, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
  if (max_slots > 0 && slot >= static_cast<uint32_t>(max_slots)) {
    throw HostError(kErrMemoryMap, "no free memslot: KVM has " + std::to_string(max_slots));
  }
  auto region = GuestRam::Create(gpa, size);
  kvm_userspace_memory_region mr = {};
  mr.slot = slot;
  mr.guest_phys_addr = gpa;
  mr.memory_size = size;
  mr.userspace_addr = reinterpret_cast<uint64_t>(region->host());
  if (ioctl(vm_fd_, KVM_SET_USER_MEMORY_REGION, &mr) != 0) ThrowErrno("KVM_SET_USER_MEMORY_REGION");
  std::lock_guard<std::mutex> lock(ram_mutex_);
  ram_.push_back(region);
  slots_.push_back(slot);
  return region;
}

std::shared_ptr<GuestRam> KvmPartition::RemoveRam(uint64_t gpa) {
  size_t i = 0;
  while (i < ram_.size() && ram_[i]->gpa() != gpa) i++;
  if (i == ram_.size()) throw HostError(kErrUsage, "no RAM region starts at that GPA");
  if (ram_.size() == 1) throw HostError(kErrUsage, "the last RAM region cannot be removed");
  kvm_userspace_memory_region mr = {};
  mr.slot = slots_[i];
  mr.guest_phys_addr = gpa;
  mr.memory_size = 0;  // deletes the slot; KVM waits for vCPUs to leave it (SRCU)
  if (ioctl(vm_fd_, KVM_SET_USER_MEMORY_REGION, &mr) != 0) ThrowErrno("KVM_SET_USER_MEMORY_REGION(delete)");
  std::lock_guard<std::mutex> lock(ram_mutex_);
  auto region = ram_[i];
  ram_.erase(ram_.begin() + static_cast<std::ptrdiff_t>(i));
  slots_.erase(slots_.begin() + static_cast<std::ptrdiff_t>(i));
  return region;
}

void KvmPartition::DiscardRam(uint64_t gpa, uint64_t size) {
  if (gpa % kPageSize != 0 || size % kPageSize != 0 || size == 0) throw HostError(kErrUsage, "discard range is not a non-empty, page-aligned range");
  for (const auto& r : ram_) {
    if (r->Contains(gpa, size)) {
      if (fallocate(r->memfd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(gpa - r->gpa()), static_cast<off_t>(size)) != 0) {
        ThrowErrno("fallocate(PUNCH_HOLE) of guest RAM");
      }
      return;
    }
  }
  throw HostError(kErrUsage, "discard range is not inside one RAM region");
}

uint64_t KvmPartition::DiscardRanges(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  // Validate all before punching any: a bad range in the batch changes nothing.
  std::vector<const GuestRam*> owner(ranges.size(), nullptr);
  uint64_t total = 0;
  for (size_t i = 0; i < ranges.size(); i++) {
    const uint64_t gpa = ranges[i].first;
    const uint64_t size = ranges[i].second;
    if (gpa % kPageSize != 0 || size % kPageSize != 0 || size == 0) {
      throw HostError(kErrUsage, "discard range " + std::to_string(i) + " is not a non-empty, page-aligned range");
    }
    for (const auto& r : ram_) {
      if (r->Contains(gpa, size)) {
        owner[i] = r.get();
        break;
      }
    }
    if (owner[i] == nullptr) throw HostError(kErrUsage, "discard range " + std::to_string(i) + " is not inside one RAM region");
    total += size;
  }
  for (size_t i = 0; i < ranges.size(); i++) {
    const GuestRam* r = owner[i];
    if (fallocate(r->memfd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(ranges[i].first - r->gpa()),
                  static_cast<off_t>(ranges[i].second)) != 0) {
      ThrowErrno("fallocate(PUNCH_HOLE) of guest RAM");
    }
  }
  return total;
}

std::vector<KvmPartition::RamUsage> KvmPartition::RamUsageNow() const {
  std::vector<RamUsage> out;
  for (const auto& r : ram_) {
    struct stat st = {};
    if (fstat(r->memfd(), &st) != 0) ThrowErrno("fstat of guest RAM memfd");
    out.push_back({r->gpa(), r->size(), static_cast<uint64_t>(st.st_blocks) * 512u});
  }
  return out;
}

bool KvmPartition::ReadGuest(uint64_t gpa, void* out, uint64_t len) const {
  std::lock_guard<std::mutex> lock(ram_mutex_);
  for (const auto& r : ram_) {
    if (r->Contains(gpa, len)) {
      std::memcpy(out, r->host() + (gpa - r->gpa()), len);
      return true;
    }
  }
  return false;
}

void KvmPartition::StopAll() {
  for (auto& v : vcpus_) v->RequestStop();
  for (auto& v : vcpus_) v->Join();
}

}  // namespace hvemu
