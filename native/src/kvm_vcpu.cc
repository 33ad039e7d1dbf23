#include "kvm_vcpu.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <system_error>

#include "host_error.h"
#include "kvm_abi.h"
#include "kvm_partition.h"
#include "x86_decode.h"
#include "x87_state.h"

namespace hvemu {
namespace {

// The signal that kicks a vCPU thread out of KVM_RUN. A real-time signal, because Node,
// libuv and V8 leave those alone.
int KickSignal() { return SIGRTMIN + 6; }

void NoopHandler(int) {}

// Installs the kick handler once per process, without SA_RESTART so that KVM_RUN and
// futex waits return EINTR.
void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa = {};
    sa.sa_handler = NoopHandler;
    sigemptyset(&sa.sa_mask);
    sigaction(KickSignal(), &sa, nullptr);
  });
}

constexpr uint8_t kInt3 = 0xcc;
constexpr uint32_t kBpVector = 3;

uint64_t* U64(uint8_t* p) { return reinterpret_cast<uint64_t*>(p); }
uint32_t* U32(uint8_t* p) { return reinterpret_cast<uint32_t*>(p); }

}  // namespace

KvmVcpu::KvmVcpu(KvmPartition& partition, uint32_t index, int fd, kvm_run* run, size_t run_size)
    : partition_(partition), index_(index), fd_(fd), run_(run), run_size_(run_size) {
  InstallKickHandler();
}

KvmVcpu::~KvmVcpu() {
  RequestStop();
  Join();
  munmap(run_, run_size_);
  close(fd_);
}

uint8_t* KvmVcpu::slot() const { return partition_.channel()->slot(index_); }

void KvmVcpu::Start() {
  if (running_.load()) throw HostError(kErrUsage, "vCPU " + std::to_string(index_) + " is already running");
  Join();  // a previous run's thread has ended; reap it before starting again
  stop_.store(false);
  handler_stop_ = false;
  partition_.channel()->Reset(index_);
  __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST);
  running_.store(true);
  try {
    thread_ = std::thread([this] { ThreadMain(); });
  } catch (const std::system_error& e) {
    // No thread: RequestStop must not signal a thread id that was never made.
    running_.store(false);
    throw HostError(kErrSystem, std::string("cannot start the thread of vCPU ") + std::to_string(index_) + ": " + e.what(), e.code().value());
  }
  native_ = thread_.native_handle();
}

void KvmVcpu::RequestStop() {
  // Order matters: the flag first, then immediate_exit (catches a thread about to enter
  // KVM_RUN), then the signal (kicks one already inside), then the futex (one blocked on an
  // unanswered exit).
  stop_.store(true, std::memory_order_seq_cst);
  if (!running_.load()) return;
  __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
  pthread_kill(native_, KickSignal());
  partition_.channel()->Wake(index_);
}

void KvmVcpu::Join() {
  if (thread_.joinable()) thread_.join();
}

void KvmVcpu::CheckParked() const {
  // A vCPU ioctl from the JS thread while the vCPU is in KVM_RUN would block on KVM's vCPU
  // mutex until the guest exits, which may be never.
  if (!running_.load()) return;
  if (ExitChannel::Load32(slot() + kSlotState) == kPosted) return;
  throw HostError(kErrUsage, "vCPU " + std::to_string(index_) + " registers are only accessible while it is stopped at an exit or not running");
}

kvm_regs KvmVcpu::GetRegs() {
  CheckParked();
  kvm_regs r;
  if (ioctl(fd_, KVM_GET_REGS, &r) != 0) ThrowErrno("KVM_GET_REGS");
  return r;
}

void KvmVcpu::SetRegs(const kvm_regs& r) {
  CheckParked();
  if (ioctl(fd_, KVM_SET_REGS, &r) != 0) ThrowErrno("KVM_SET_REGS");
  // A handler may set registers while its exit is posted; with sync regs the vCPU thread
  // writes run->s.regs back on re-entry (hypercall RAX), so that copy must not be stale.
  if (partition_.sync_regs()) run_->s.regs.regs = r;
}

kvm_sregs KvmVcpu::GetSregs() {
  CheckParked();
  kvm_sregs s;
  if (ioctl(fd_, KVM_GET_SREGS, &s) != 0) ThrowErrno("KVM_GET_SREGS");
  return s;
}

void KvmVcpu::SetSregs(const kvm_sregs& s) {
  CheckParked();
  if (ioctl(fd_, KVM_SET_SREGS, &s) != 0) ThrowErrno("KVM_SET_SREGS");
}

kvm_fpu KvmVcpu::GetFpu() {
  CheckParked();
  kvm_fpu f;
  if (ioctl(fd_, KVM_GET_FPU, &f) != 0) ThrowErrno("KVM_GET_FPU");
  return f;
}

void KvmVcpu::SetFpu(const kvm_fpu& f) {
  CheckParked();
  if (ioctl(fd_, KVM_SET_FPU, &f) != 0) ThrowErrno("KVM_SET_FPU");
}

void KvmVcpu::SetMpState(uint32_t state) {
  CheckParked();
  kvm_mp_state mp = {state};
  if (ioctl(fd_, KVM_SET_MP_STATE, &mp) != 0) ThrowErrno("KVM_SET_MP_STATE");
}

void KvmVcpu::SetCpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  CheckParked();
  if (entries.size() > 1024) throw HostError(kErrUsage, "too many CPUID entries");
  FlexBuffer<CpuidListHeader, kvm_cpuid_entry2> buf(entries.size());
  buf.header()->nent = static_cast<uint32_t>(entries.size());
  std::memcpy(buf.entries(), entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  if (ioctl(fd_, kKvmSetCpuid2, buf.data()) != 0) ThrowErrno("KVM_SET_CPUID2");
}

uint32_t KvmVcpu::GetTscKhz() {
  int khz = ioctl(fd_, KVM_GET_TSC_KHZ, 0);
  if (khz < 0) ThrowErrno("KVM_GET_TSC_KHZ");
  return static_cast<uint32_t>(khz);
}

uint64_t KvmVcpu::GetGuestTsc() {
  CheckParked();
  constexpr uint32_t kMsrIa32Tsc = 0x10;
  FlexBuffer<MsrListHeader, kvm_msr_entry> buf(1);
  buf.header()->nmsrs = 1;
  buf.entries()[0] = kvm_msr_entry{kMsrIa32Tsc, 0, 0};
  if (ioctl(fd_, kKvmGetMsrs, buf.data()) != 1) ThrowErrno("KVM_GET_MSRS(IA32_TSC)");
  return buf.entries()[0].data;
}

kvm_lapic_state KvmVcpu::GetLapic() {
  CheckParked();
  kvm_lapic_state s;
  if (ioctl(fd_, KVM_GET_LAPIC, &s) != 0) ThrowErrno("KVM_GET_LAPIC");
  return s;
}

void KvmVcpu::ThreadMain() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, KickSignal());
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  ExitCause cause = kCauseStopRequested;
  uint64_t detail = 0;
  uint64_t* run_ns = reinterpret_cast<uint64_t*>(slot() + kSlotStatRunNs);
  // With sync regs KVM copies the general registers into run->s.regs at every exit (a
  // memcpy in the kernel), and a hypercall exit needs no register ioctl at all.
  if (partition_.sync_regs()) run_->kvm_valid_regs = KVM_SYNC_X86_REGS;
  while (!stop_.load(std::memory_order_seq_cst)) {
    uint64_t t0 = ExitChannel::NowNs();
    int r = ioctl(fd_, KVM_RUN, 0);
    *run_ns += ExitChannel::NowNs() - t0;
    if (r != 0) {
      if (errno == EINTR || errno == EAGAIN) continue;  // kicked; the loop re-checks stop_
      cause = kCauseHostError;
      detail = static_cast<uint64_t>(errno);
      break;
    }
    if (!HandleExit()) {
      cause = handler_stop_ ? kCauseHandlerStop : kCauseStopRequested;
      break;
    }
  }
  running_.store(false);
  partition_.channel()->MarkExited(index_, cause, detail);
}

bool KvmVcpu::Post() {
  if (!partition_.channel()->PostAndWait(index_, stop_)) return false;
  uint8_t* s = slot();
  if (*U32(s + kSlotAnswerStatus) == kAnswerStop) {
    handler_stop_ = true;
    return false;
  }
  return true;
}

bool KvmVcpu::HandleExit() {
  switch (run_->exit_reason) {
    case KVM_EXIT_IO:
      return HandleIo();
    case KVM_EXIT_MMIO:
      return HandleMmio();
    case KVM_EXIT_X86_RDMSR:
      return HandleMsr(false);
    case KVM_EXIT_X86_WRMSR:
      return HandleMsr(true);
    case KVM_EXIT_HLT: {
      uint8_t* s = slot();
      *U32(s + kSlotKind) = kExitHalt;
      *U32(s + kSlotFlags) = 0;
      return Post();
    }
    case KVM_EXIT_INTR:
      return true;
    case KVM_EXIT_DEBUG:
      if (HandleSyscallWatch()) return true;
      return PostFatal(kExitUnrecoverable, KVM_EXIT_DEBUG, run_->debug.arch.pc, run_->debug.arch.exception);
    case KVM_EXIT_SHUTDOWN:
      // On x86 KVM reports a triple fault this way.
      return PostFatal(kExitShutdown, KVM_EXIT_SHUTDOWN, 0, 0);
    case KVM_EXIT_SYSTEM_EVENT:
      return PostFatal(kExitShutdown, KVM_EXIT_SYSTEM_EVENT, run_->system_event.type, 0);
    case KVM_EXIT_INTERNAL_ERROR:
      return HandleInternalError();
    case KVM_EXIT_FAIL_ENTRY:
      return PostFatal(kExitUnrecoverable, KVM_EXIT_FAIL_ENTRY, run_->fail_entry.hardware_entry_failure_reason, 0);
    default:
      return PostFatal(kExitUnrecoverable, run_->exit_reason, 0, 0);
  }
}

bool KvmVcpu::HandleIo() {
  // Everything in run_->io comes from the guest's instruction: check it before using it as
  // an offset into the run page.
  const auto& io = run_->io;
  uint64_t bytes = static_cast<uint64_t>(io.size) * io.count;
  bool size_ok = io.size == 1 || io.size == 2 || io.size == 4;
  if (!size_ok || io.count == 0 || bytes > kSlotDataSize || io.data_offset > run_size_ ||
      bytes > run_size_ - io.data_offset) {
    return PostFatal(kExitUnrecoverable, KVM_EXIT_IO, 0x10000 | io.port, bytes);
  }
  bool out = io.direction == KVM_EXIT_IO_OUT;
  int32_t hc_port = partition_.config().hypercall_port;
  if (out && hc_port >= 0 && io.port == static_cast<uint32_t>(hc_port) && io.size == 1 && io.count == 1) {
    return HandleHypercall();
  }
  uint8_t* data = reinterpret_cast<uint8_t*>(run_) + io.data_offset;
  uint8_t* s = slot();
  *U32(s + kSlotKind) = kExitIo;
  *U32(s + kSlotFlags) = (out ? kFlagWrite : 0) | (io.count > 1 ? kFlagString : 0);
  *U32(s + kSlotSize_) = io.size;
  *U32(s + kSlotCount) = io.count;
  *U64(s + kSlotA0) = io.port;
  uint64_t first = 0;
  std::memcpy(&first, data, io.size);
  *U64(s + kSlotA1) = out ? first : 0;
  if (out && io.count > 1) std::memcpy(s + kSlotDataOffset, data, bytes);
  *U64(s + kSlotAnswer0) = 0;
  if (!Post()) return false;
  if (!out) {
    if (io.count > 1) {
      std::memcpy(data, s + kSlotDataOffset, bytes);
    } else {
      uint64_t v = *U64(s + kSlotAnswer0);
      std::memcpy(data, &v, io.size);
    }
  }
  return true;
}

bool KvmVcpu::HandleMmio() {
  auto& m = run_->mmio;
  if (m.len == 0 || m.len > 8) return PostFatal(kExitUnrecoverable, KVM_EXIT_MMIO, m.phys_addr, m.len);
  uint8_t* s = slot();
  *U32(s + kSlotKind) = kExitMmio;
  *U32(s + kSlotFlags) = m.is_write ? kFlagWrite : 0;
  *U32(s + kSlotSize_) = m.len;
  *U32(s + kSlotCount) = 1;
  *U64(s + kSlotA0) = m.phys_addr;
  uint64_t v = 0;
  if (m.is_write) std::memcpy(&v, m.data, m.len);
  *U64(s + kSlotA1) = v;
  *U64(s + kSlotAnswer0) = 0;
  if (!Post()) return false;
  if (!m.is_write) {
    uint64_t r = *U64(s + kSlotAnswer0);
    std::memcpy(m.data, &r, m.len);
  }
  return true;
}

bool KvmVcpu::HandleMsr(bool write) {
  auto& msr = run_->msr;
  if (msr.index == kMsrLstar && partition_.config().syscall_fixup) {
    HandleLstar(write);
    return true;
  }
  uint8_t* s = slot();
  *U32(s + kSlotKind) = write ? kExitMsrWrite : kExitMsrRead;
  *U32(s + kSlotFlags) = write ? kFlagWrite : 0;
  *U32(s + kSlotSize_) = 8;
  *U32(s + kSlotCount) = 1;
  *U64(s + kSlotA0) = msr.index;
  *U64(s + kSlotA1) = write ? msr.data : 0;
  *U64(s + kSlotA3) = msr.reason;
  *U64(s + kSlotAnswer0) = 0;
  if (!Post()) return false;
  bool gp = *U32(s + kSlotAnswerStatus) == kAnswerGp;
  msr.error = gp ? 1 : 0;
  if (!write && !gp) msr.data = *U64(s + kSlotAnswer0);
  return true;
}

// A byte OUT to the hypercall port, placed in the hypercall page by the hypercall layer:
// the Hyper-V calling convention has the control word in RCX, input/output GPAs in RDX/R8,
// and the status returns in RAX.
bool KvmVcpu::HandleHypercall() {
  kvm_regs regs;
  if (partition_.sync_regs()) {
    regs = run_->s.regs.regs;
  } else if (ioctl(fd_, KVM_GET_REGS, &regs) != 0) {
    return PostFatal(kExitUnrecoverable, KVM_EXIT_IO, 0x20000, errno);
  }
  uint8_t* s = slot();
  *U32(s + kSlotKind) = kExitHypercall;
  *U32(s + kSlotFlags) = 0;
  // A fast hypercall (control bit 16) may pass input in XMM0-5 beyond RDX/R8 (TLFS "XMM fast
  // hypercall input"); fetch them only then, it costs an ioctl.
  if ((regs.rcx >> 16) & 1) {
    kvm_fpu fpu;
    if (ioctl(fd_, KVM_GET_FPU, &fpu) == 0) {
      std::memcpy(s + kSlotXmm, fpu.xmm, 6 * 16);
      *U32(s + kSlotFlags) = kFlagXmmValid;
    }
  }
  *U32(s + kSlotSize_) = 0;
  *U32(s + kSlotCount) = 1;
  *U64(s + kSlotA0) = regs.rcx;
  *U64(s + kSlotA1) = regs.rdx;
  *U64(s + kSlotA2) = regs.r8;
  *U64(s + kSlotAnswer0) = 0;
  if (!Post()) return false;
  if (partition_.sync_regs()) {
    // KVM applies dirty sync regs at the start of the next KVM_RUN, before it completes the
    // OUT (x86.c: sync_regs, then complete_userspace_io): RIP stays as it was at the exit,
    // so the OUT is finished exactly as without RAX changing. No ioctl here.
    run_->s.regs.regs.rax = *U64(s + kSlotAnswer0);
    run_->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
    return true;
  }
  // KVM finishes the OUT (advancing RIP) only on the next KVM_RUN; run once with
  // immediate_exit so the OUT completes without entering the guest, then set RAX.
  __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
  int r = ioctl(fd_, KVM_RUN, 0);
  int err = errno;
  if (!stop_.load()) __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST);
  if (r == 0 || err != EINTR) return PostFatal(kExitUnrecoverable, KVM_EXIT_IO, 0x20001, r == 0 ? run_->exit_reason : err);
  if (ioctl(fd_, KVM_GET_REGS, &regs) != 0) return PostFatal(kExitUnrecoverable, KVM_EXIT_IO, 0x20002, errno);
  regs.rax = *U64(s + kSlotAnswer0);
  if (ioctl(fd_, KVM_SET_REGS, &regs) != 0) return PostFatal(kExitUnrecoverable, KVM_EXIT_IO, 0x20003, errno);
  return true;
}

uint32_t KvmVcpu::FetchInsn(uint8_t* out, uint32_t max) {
  const auto& ef = run_->emulation_failure;
  if (run_->internal.suberror == KVM_INTERNAL_ERROR_EMULATION && ef.ndata >= 3 &&
      (ef.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0) {
    uint32_t n = ef.insn_size < max ? ef.insn_size : max;
    if (n > sizeof(ef.insn_bytes)) n = sizeof(ef.insn_bytes);
    std::memcpy(out, ef.insn_bytes, n);
    if (n > 0) return n;
  }
  // Fall back to translating RIP and reading guest RAM ourselves (bounds-checked; a page
  // boundary inside the instruction simply shortens what we report).
  kvm_regs regs;
  kvm_sregs sregs;
  if (ioctl(fd_, KVM_GET_REGS, &regs) != 0 || ioctl(fd_, KVM_GET_SREGS, &sregs) != 0) return 0;
  kvm_translation t = {};
  t.linear_address = regs.rip + sregs.cs.base;
  if (ioctl(fd_, KVM_TRANSLATE, &t) != 0 || !t.valid) return 0;
  uint32_t in_page = static_cast<uint32_t>(4096 - (t.physical_address & 4095));
  uint32_t n = max < in_page ? max : in_page;
  while (n > 0 && !partition_.ReadGuest(t.physical_address, out, n)) n--;
  return n;
}

bool KvmVcpu::TryFinishInt3() {
  // This KVM's instruction emulator does not implement int3: it stops with an emulation
  // failure at the int3. Finish it as the CPU would: RIP past the int3, then #BP (a trap,
  // so the handler's return address is the next instruction).
  kvm_regs regs;
  kvm_vcpu_events ev;
  if (ioctl(fd_, KVM_GET_REGS, &regs) != 0 || ioctl(fd_, KVM_GET_VCPU_EVENTS, &ev) != 0) return false;
  if (ev.exception.injected || ev.exception.pending) return false;  // do not stack exceptions
  regs.rip += 1;
  if (ioctl(fd_, KVM_SET_REGS, &regs) != 0) return false;
  ev.exception.injected = 1;
  ev.exception.nr = kBpVector;
  ev.exception.has_error_code = 0;
  ev.exception.error_code = 0;
  ev.flags = 0;
  return ioctl(fd_, KVM_SET_VCPU_EVENTS, &ev) == 0;
}

namespace {

// Instructions this KVM's instruction emulator stops on (an emulation failure at RIP) that a
// kernel executes, finished here the way the CPU would, at CPL 0: KVM-NOTES.md. Exact bytes at
// RIP, no prefixes.
enum class Gap { kFwait, kFnclex, kEmms, kClac, kStac };
struct GapFixup {
  uint8_t bytes[3];
  uint8_t length;
  Gap kind;
};
constexpr GapFixup kFixups[] = {
    {{0x9b}, 1, Gap::kFwait},              // FWAIT: nothing pending once FNCLEX has run (fpu__drop)
    {{0xdb, 0xe2}, 2, Gap::kFnclex},       // FNCLEX: clear the x87 exception flags, ES and B
    {{0x0f, 0x77}, 2, Gap::kEmms},         // EMMS: every x87 tag empty (abridged tag word 0)
    {{0x0f, 0x01, 0xca}, 3, Gap::kClac},   // CLAC: RFLAGS.AC = 0
    {{0x0f, 0x01, 0xcb}, 3, Gap::kStac},   // STAC: RFLAGS.AC = 1
};
constexpr uint64_t kRflagsAc = 1ull << 18;
constexpr uint16_t kFswExceptionBits = 0x80ff;  // IE..PE, SF, ES (0-7) and B (15)

// kvm_regs in x86 register-number order (0 rax, 1 rcx, 2 rdx, 3 rbx, 4 rsp, 5 rbp, 6 rsi, 7 rdi, 8-15 r8-r15).
__u64* GprByNumber(kvm_regs& r, unsigned n) {
  __u64* const table[16] = {&r.rax, &r.rcx, &r.rdx, &r.rbx, &r.rsp, &r.rbp, &r.rsi, &r.rdi,
                               &r.r8,  &r.r9,  &r.r10, &r.r11, &r.r12, &r.r13, &r.r14, &r.r15};
  return table[n & 15];
}

// POPCNT r32/r64, r/m with a register operand: F3 [REX] 0F B8 /r, mod = 11. A kernel that
// sees POPCNT in CPUID (this kind of KVM passes the host's leaf 1 through) uses it in
// __bitmap_weight and hweight. ZF = (source == 0); CF, OF, SF, AF, PF cleared.
bool TryPopcnt(int fd, const uint8_t* insn, uint32_t n) {
  uint32_t at = 0;
  if (n < 5 || insn[at++] != 0xf3) return false;
  uint8_t rex = 0;
  if ((insn[at] & 0xf0) == 0x40) rex = insn[at++];
  if (at + 3 > n || insn[at] != 0x0f || insn[at + 1] != 0xb8) return false;
  uint8_t modrm = insn[at + 2];
  if ((modrm >> 6) != 3) return false;  // memory operands are not finished here
  kvm_regs regs;
  if (ioctl(fd, KVM_GET_REGS, &regs) != 0) return false;
  bool wide = (rex & 0x08) != 0;
  unsigned dst = ((modrm >> 3) & 7) | ((rex & 0x04) << 1);
  unsigned src = (modrm & 7) | ((rex & 0x01) << 3);
  uint64_t value = *GprByNumber(regs, src);
  if (!wide) value &= 0xffffffffull;
  uint64_t count = static_cast<uint64_t>(__builtin_popcountll(value));
  *GprByNumber(regs, dst) = count;  // a 32-bit destination zero-extends: the count fits either way
  constexpr uint64_t kArithFlags = 0x8d5;  // CF PF AF ZF SF OF
  regs.rflags &= ~kArithFlags;
  if (value == 0) regs.rflags |= 0x40;  // ZF
  regs.rip += at + 3;
  return ioctl(fd, KVM_SET_REGS, &regs) == 0;
}

// x87 state in KVM's FXSAVE-layout view: fpr[i] is ST(i), ftwx the abridged tag word with
// one bit per physical register, TOP in FSW bits 11-13 (SDM Vol. 1, 10.5.1).
constexpr uint16_t kFswIe = 1u << 0;
constexpr uint16_t kFswSf = 1u << 6;
constexpr uint16_t kFswEs = 1u << 7;
constexpr uint16_t kFswC1 = 1u << 9;
constexpr uint16_t kFswB = 1u << 15;
constexpr unsigned kFswTopShift = 11;
constexpr uint16_t kFcwIm = 1u << 0;
constexpr uint64_t kCr0Ts = 1u << 3;
constexpr uint64_t kCr0Em = 1u << 2;

// An integer as an 80-bit extended-precision value: exact, any int64 fits the 64-bit significand.
void IntToExtended(int64_t v, uint8_t out[10]) {
  std::memset(out, 0, 10);
  if (v == 0) return;
  uint64_t magnitude = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  int lz = __builtin_clzll(magnitude);
  uint64_t significand = magnitude << lz;  // explicit integer bit at 63
  uint16_t exponent = static_cast<uint16_t>(16383 + 63 - lz) | (v < 0 ? 0x8000 : 0);
  std::memcpy(out, &significand, 8);
  std::memcpy(out + 8, &exponent, 2);
}

// FLD-style push (SDM Vol. 1, 8.5.1.1 stack overflow): the register below TOP must be empty.
// If it is not, IE, SF and C1 are set; masked (FCW.IM), the real indefinite is pushed;
// unmasked, the stack is left alone and ES/B flag the pending #MF for the next waiting instruction.
void X87Push(X87State& x, const uint8_t value[10]) {
  uint16_t fsw = static_cast<uint16_t>(x.fsw() & ~kFswC1);
  unsigned top = (fsw >> kFswTopShift) & 7;
  unsigned new_top = (top - 1) & 7;
  uint8_t pushed[10];
  std::memcpy(pushed, value, 10);
  if (x.ftw() & (1u << new_top)) {
    fsw |= kFswIe | kFswSf | kFswC1;
    if (!(x.fcw() & kFcwIm)) {
      x.set_fsw(fsw | kFswEs | kFswB);
      return;
    }
    const uint8_t indefinite[10] = {0, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0xff};
    std::memcpy(pushed, indefinite, 10);
  }
  for (unsigned i = 7; i > 0; i--) std::memcpy(x.st(i), x.st(i - 1), 16);
  std::memset(x.st(0), 0, 16);
  std::memcpy(x.st(0), pushed, 10);
  x.set_ftw(static_cast<uint8_t>(x.ftw() | (1u << new_top)));
  x.set_fsw(static_cast<uint16_t>((fsw & ~(7u << kFswTopShift)) | (new_top << kFswTopShift)));
}

// The FILD forms: DF /0 m16int, DB /0 m32int, DF /5 m64int (memory operands only).
uint32_t FildOperandBytes(uint8_t opcode, uint8_t reg) {
  if (opcode == 0xdb && reg == 0) return 4;
  if (opcode == 0xdf && reg == 0) return 2;
  if (opcode == 0xdf && reg == 5) return 8;
  return 0;
}

int64_t SignExtend(uint64_t raw, uint32_t bytes) {
  unsigned shift = 64 - 8 * bytes;
  return static_cast<int64_t>(raw << shift) >> shift;
}

}  // namespace

// FILD with a memory operand: Linux's FPU restore path runs FNCLEX; EMMS; FILD m32int on CPUs
// with the FXSAVE pointer leak (AMD), and this kind of KVM's emulator stops on it. Finished as
// the CPU would in 64-bit mode: the operand read through the guest's page tables, converted
// exactly, pushed with the stack-overflow rules, FOP/FIP/FDP updated (through the XSAVE image:
// x87_state.h says why not KVM_SET_FPU). Anything this cannot do
// the CPU's way (not 64-bit mode, CR0.EM/TS set (#NM), a pending unmasked x87 exception (#MF),
// an operand that does not translate to RAM (#PF)) is left as the reported emulation failure.
bool KvmVcpu::TryFild(const uint8_t* insn, uint32_t n) {
  Prefixes p;
  if (!ParsePrefixes(insn, n, &p) || p.length + 1 >= n) return false;
  uint8_t opcode = insn[p.length];
  if (opcode != 0xdb && opcode != 0xdf) return false;
  uint8_t modrm = insn[p.length + 1];
  uint32_t bytes = FildOperandBytes(opcode, (modrm >> 3) & 7);
  if (bytes == 0 || (modrm >> 6) == 3) return false;
  kvm_regs regs;
  kvm_sregs sregs;
  X87State x87(partition_.xsave_size());
  if (ioctl(fd_, KVM_GET_REGS, &regs) != 0 || ioctl(fd_, KVM_GET_SREGS, &sregs) != 0 || !x87.Load(fd_, partition_.xsave2())) return false;
  if (!sregs.cs.l || (sregs.cr0 & (kCr0Ts | kCr0Em)) || (x87.fsw() & kFswEs)) return false;
  MemOperand m;
  if (!DecodeMemOperand(insn, n, p.length + 1, 0, p, regs, sregs, &m)) return false;
  uint64_t raw = 0;
  if (!ReadGuestLinear(m.linear, &raw, bytes)) return false;
  uint8_t value[10];
  IntToExtended(SignExtend(raw, bytes), value);
  X87Push(x87, value);
  x87.set_fop(static_cast<uint16_t>(((opcode & 7) << 8) | modrm));
  x87.set_fip(regs.rip);
  x87.set_fdp(m.offset);
  regs.rip += m.length;
  return x87.Store(fd_) && ioctl(fd_, KVM_SET_REGS, &regs) == 0;
}

// Walks the guest's long-mode page tables from CR3 (4 or 5 levels, 1 GiB and 2 MiB pages),
// reading each entry through the bounds-checked RAM. Only presence matters: this is for reads
// the host makes on the guest's behalf, not an access check.
bool KvmVcpu::WalkPageTables(uint64_t linear, uint64_t* physical) {
  constexpr uint64_t kPresent = 1, kLarge = 0x80, kAddrMask = 0x000ffffffffff000ull;
  constexpr uint64_t kCr4La57 = 1ull << 12;
  kvm_sregs s;
  if (ioctl(fd_, KVM_GET_SREGS, &s) != 0 || !(s.efer & (1u << 10))) return false;  // EFER.LMA
  int levels = (s.cr4 & kCr4La57) ? 5 : 4;
  uint64_t table = s.cr3 & kAddrMask;
  for (int level = levels; level >= 1; level--) {
    unsigned shift = 12 + 9 * (level - 1);
    uint64_t entry;
    if (!partition_.ReadGuest(table + ((linear >> shift) & 511) * 8, &entry, 8) || !(entry & kPresent)) return false;
    if (level == 1 || (level <= 3 && (entry & kLarge))) {
      uint64_t page_mask = (1ull << shift) - 1;
      *physical = (entry & kAddrMask & ~page_mask) | (linear & page_mask);
      return true;
    }
    table = entry & kAddrMask;
  }
  return false;
}

// KVM_TRANSLATE first; where it finds nothing, the guest's own page tables. This kind of KVM
// answered "not valid" for user-space addresses that the guest had mapped and was executing
// (measured at the SYSCALL fixup: RCX of Linux's /init); a software walk of the same CR3 found them.
bool KvmVcpu::TranslateLinear(uint64_t linear, uint64_t* physical) {
  kvm_translation t = {};
  t.linear_address = linear;
  if (ioctl(fd_, KVM_TRANSLATE, &t) == 0 && t.valid) {
    *physical = t.physical_address;
    return true;
  }
  return WalkPageTables(linear, physical);
}

bool KvmVcpu::ReadGuestLinear(uint64_t linear, void* out, uint32_t len) {
  uint8_t* dst = static_cast<uint8_t*>(out);
  while (len > 0) {
    uint64_t physical;
    if (!TranslateLinear(linear, &physical)) return false;
    uint32_t in_page = static_cast<uint32_t>(4096 - (linear & 4095));
    uint32_t chunk = len < in_page ? len : in_page;
    if (!partition_.ReadGuest(physical, dst, chunk)) return false;
    dst += chunk;
    linear += chunk;
    len -= chunk;
  }
  return true;
}

bool KvmVcpu::TryFinishEmulationGap(const uint8_t* insn, uint32_t n) {
  if (TryPopcnt(fd_, insn, n) || TryFild(insn, n)) return true;
  for (const GapFixup& f : kFixups) {
    if (n < f.length || std::memcmp(insn, f.bytes, f.length) != 0) continue;
    kvm_regs regs;
    if (ioctl(fd_, KVM_GET_REGS, &regs) != 0) return false;
    if (f.kind == Gap::kFnclex || f.kind == Gap::kEmms) {
      X87State x87(partition_.xsave_size());
      if (!x87.Load(fd_, partition_.xsave2())) return false;
      if (f.kind == Gap::kFnclex) x87.set_fsw(static_cast<uint16_t>(x87.fsw() & ~kFswExceptionBits));
      if (f.kind == Gap::kEmms) x87.set_ftw(0);
      if (!x87.Store(fd_)) return false;
    }
    if (f.kind == Gap::kClac) regs.rflags &= ~kRflagsAc;
    if (f.kind == Gap::kStac) regs.rflags |= kRflagsAc;
    regs.rip += f.length;
    return ioctl(fd_, KVM_SET_REGS, &regs) == 0;
  }
  return false;
}

bool KvmVcpu::HandleInternalError() {
  uint32_t sub = run_->internal.suberror;
  uint8_t* s = slot();
  uint8_t insn[16] = {};
  uint32_t n = sub == KVM_INTERNAL_ERROR_EMULATION ? FetchInsn(insn, 15) : 0;
  if (n >= 1 && insn[0] == kInt3 && partition_.config().int3_fixup && TryFinishInt3()) return true;
  if (n >= 1 && partition_.config().insn_fixups && TryFinishEmulationGap(insn, n)) return true;
  std::memcpy(s + kSlotInsnBytes, insn, sizeof insn);
  *U32(s + kSlotInsnLen) = n;
  uint64_t data0 = run_->internal.ndata > 0 ? run_->internal.data[0] : 0;
  return PostFatal(kExitUnrecoverable, KVM_EXIT_INTERNAL_ERROR, sub, data0);
}

void KvmVcpu::DumpState() {
  uint8_t* s = slot();
  kvm_regs r;
  kvm_sregs sr;
  if (ioctl(fd_, KVM_GET_REGS, &r) != 0 || ioctl(fd_, KVM_GET_SREGS, &sr) != 0) return;
  // The same order as kvm_regs, which TypeScript decodes by name (exit-slot.ts REG_NAMES).
  static_assert(sizeof(kvm_regs) == 18 * 8, "kvm_regs layout");
  std::memcpy(s + kSlotRegs, &r, sizeof r);
  const uint64_t sregs[7] = {sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.cr8, sr.efer, sr.apic_base};
  std::memcpy(s + kSlotSregs, sregs, sizeof sregs);
  *U32(s + kSlotFlags) |= kFlagRegsValid;
}

bool KvmVcpu::PostFatal(uint32_t kind, uint64_t code, uint64_t detail, uint64_t detail2) {
  uint8_t* s = slot();
  bool insn_valid = kind == kExitUnrecoverable && code == KVM_EXIT_INTERNAL_ERROR && *U32(s + kSlotInsnLen) > 0;
  if (!insn_valid) *U32(s + kSlotInsnLen) = 0;
  *U32(s + kSlotKind) = kind;
  *U32(s + kSlotFlags) = insn_valid ? kFlagInsnValid : 0;
  *U32(s + kSlotSize_) = 0;
  *U32(s + kSlotCount) = 0;
  *U64(s + kSlotA0) = 0;
  *U64(s + kSlotA3) = code;
  *U64(s + kSlotA1) = detail;
  *U64(s + kSlotA4) = detail2;
  DumpState();
  // The default answer to a fatal exit is to stop; a handler may repair state and resume.
  *U32(s + kSlotAnswerStatus) = kAnswerStop;
  return Post();
}

}  // namespace hvemu
