// SYSCALL from CPL 3 on this kind of KVM (an instruction-emulating KVM, KVM-NOTES.md): the
// emulator loads RIP from IA32_LSTAR, RCX, R11 and the masked RFLAGS as the CPU would, but the
// vCPU stays at CPL 3, so the first fetch at the kernel's entry faults (#PF, error 0x15: a user
// instruction fetch from a supervisor page). Measured with Linux 6.1: `init[1]: segfault at
// ffffffff81400040 ip ffffffff81400040 ... error 15`. SYSRET works.
//
// hvemu finishes the SYSCALL itself. It learns the entry when the guest writes IA32_LSTAR (the
// MSR filter sends that write here; it is applied with KVM_SET_MSRS) and watches two addresses
// with hardware breakpoints (KVM_SET_GUEST_DEBUG): the guest's #PF handler, read from its IDT,
// and the entry itself.
//   - At the #PF handler with a frame that says "user fetch at the entry" and the two bytes
//     before RCX being 0f 05: the fault is this bug. The frame is dropped and the SYSCALL
//     completed at CPL 0 (CS/SS from IA32_STAR, RSP back to the user's, RFLAGS from R11 masked
//     by IA32_FMASK). A user jump to the entry (RCX not after a SYSCALL) keeps its #PF.
//   - At the entry at CPL 0 without us: this KVM runs SYSCALL itself; the watch is switched off
//     for good, so a correct KVM pays nothing after the first system call.
// Breakpoints here are not suppressed by RFLAGS.RF (measured: the same breakpoint hit again),
// so the watch steps over the instruction at a breakpoint (KVM_GUESTDBG_SINGLESTEP) and arms the
// breakpoints again at the next debug exit. Cost: every guest page fault takes two extra exits.
// The guest cannot use its own hardware breakpoints while the watch is armed.
#include <sys/ioctl.h>

#include <cstring>

#include "kvm_abi.h"
#include "kvm_partition.h"
#include "kvm_vcpu.h"

namespace hvemu {
namespace {

constexpr uint32_t kMsrStar = 0xc0000081;
constexpr uint32_t kMsrFmask = 0xc0000084;
constexpr unsigned kPageFaultVector = 14;
constexpr uint64_t kPfPresent = 1, kPfUser = 4, kPfFetch = 0x10;
constexpr uint64_t kRflagsFixed = 2, kRflagsRf = 1ull << 16;
constexpr uint64_t kDr7L0 = 1, kDr7L1 = 4;  // local enables; R/W and LEN 0: execute, 1 byte

// A flat 64-bit segment at DPL 0, as SYSCALL loads it (SDM Vol. 2B, SYSCALL operation).
kvm_segment FlatSegment(uint16_t selector, bool code) {
  kvm_segment s = {};
  s.selector = selector;
  s.limit = 0xffffffff;
  s.type = code ? 0xb : 0x3;  // execute/read accessed : read/write accessed
  s.s = 1;
  s.present = 1;
  s.l = code ? 1 : 0;
  s.db = code ? 0 : 1;
  s.g = 1;
  return s;
}

}  // namespace

bool KvmVcpu::GetMsrs(const uint32_t* index, uint64_t* value, uint32_t n) {
  FlexBuffer<MsrListHeader, kvm_msr_entry> buf(n);
  buf.header()->nmsrs = n;
  for (uint32_t i = 0; i < n; i++) buf.entries()[i] = kvm_msr_entry{index[i], 0, 0};
  if (ioctl(fd_, kKvmGetMsrs, buf.data()) != static_cast<int>(n)) return false;
  for (uint32_t i = 0; i < n; i++) value[i] = buf.entries()[i].data;
  return true;
}

bool KvmVcpu::SetMsr(uint32_t index, uint64_t value) {
  FlexBuffer<MsrListHeader, kvm_msr_entry> buf(1);
  buf.header()->nmsrs = 1;
  buf.entries()[0] = kvm_msr_entry{index, 0, value};
  return ioctl(fd_, kKvmSetMsrs, buf.data()) == 1;
}

// The guest's IA32_LSTAR access, routed here by the MSR filter. A write KVM refuses (a
// non-canonical address) is a #GP, as on the CPU.
void KvmVcpu::HandleLstar(bool write) {
  auto& msr = run_->msr;
  if (!write) {
    uint64_t v = 0;
    msr.error = GetMsrs(&msr.index, &v, 1) ? 0 : 1;
    msr.data = v;
    return;
  }
  if (!SetMsr(kMsrLstar, msr.data)) {
    msr.error = 1;
    return;
  }
  msr.error = 0;
  ArmSyscallWatch(msr.data);
}

// The #PF handler's address from the guest's IDT (a present 64-bit interrupt or trap gate), or 0.
uint64_t KvmVcpu::PageFaultHandler() {
  kvm_sregs s;
  if (ioctl(fd_, KVM_GET_SREGS, &s) != 0) return 0;
  if (s.idt.limit < kPageFaultVector * 16 + 15) return 0;
  uint8_t gate[16];
  if (!ReadGuestLinear(s.idt.base + kPageFaultVector * 16, gate, sizeof gate)) return 0;
  uint8_t type = gate[5] & 0x0f;
  bool present = (gate[5] & 0x80) != 0;
  if (!present || (type != 0xe && type != 0xf)) return 0;
  uint64_t offset = static_cast<uint64_t>(gate[0] | gate[1] << 8) | static_cast<uint64_t>(gate[6] | gate[7] << 8) << 16;
  uint32_t high;
  std::memcpy(&high, gate + 8, 4);
  return offset | static_cast<uint64_t>(high) << 32;
}

void KvmVcpu::ArmSyscallWatch(uint64_t lstar) {
  if (syscall_watch_.state == SyscallWatch::kOff) return;  // this KVM runs SYSCALL itself
  uint64_t handler = PageFaultHandler();
  if (handler == 0 || lstar == 0) return;  // nothing to watch yet: no IDT, or SYSCALL disabled
  syscall_watch_.lstar = lstar;
  syscall_watch_.pf_handler = handler;
  SetSyscallWatch(SyscallWatch::kArmed);
}

void KvmVcpu::SetSyscallWatch(SyscallWatch::State state) {
  kvm_guest_debug dbg = {};
  if (state == SyscallWatch::kArmed) {
    dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
    dbg.arch.debugreg[0] = syscall_watch_.pf_handler;
    dbg.arch.debugreg[1] = syscall_watch_.lstar;
    dbg.arch.debugreg[7] = kDr7L0 | kDr7L1;
  } else if (state == SyscallWatch::kStepping) {
    dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
  }
  if (ioctl(fd_, KVM_SET_GUEST_DEBUG, &dbg) != 0) state = SyscallWatch::kIdle;  // report debug exits as before
  syscall_watch_.state = state;
}

// A KVM_EXIT_DEBUG. False when it is not the watch's (the caller reports it).
bool KvmVcpu::HandleSyscallWatch() {
  SyscallWatch& w = syscall_watch_;
  if (w.state == SyscallWatch::kStepping) {
    SetSyscallWatch(SyscallWatch::kArmed);  // stepped past the breakpoint: arm again
    return true;
  }
  if (w.state != SyscallWatch::kArmed) return false;
  uint64_t pc = run_->debug.arch.pc;
  if (pc == w.lstar) {
    kvm_sregs s;
    if (ioctl(fd_, KVM_GET_SREGS, &s) == 0 && s.cs.dpl == 0 && (s.cs.selector & 3) == 0) {
      SetSyscallWatch(SyscallWatch::kOff);  // SYSCALL reached its entry at CPL 0 without us
      return true;
    }
    SetSyscallWatch(SyscallWatch::kStepping);
    return true;
  }
  if (pc != w.pf_handler) return false;
  TryFinishSyscall();
  SetSyscallWatch(SyscallWatch::kStepping);  // past the handler's first instruction, or the entry's
  return true;
}

// At the #PF handler: finishes the SYSCALL if the fault is the CPL-3 fetch at its entry.
bool KvmVcpu::TryFinishSyscall() {
  kvm_regs regs;
  kvm_sregs sregs;
  if (ioctl(fd_, KVM_GET_REGS, &regs) != 0 || ioctl(fd_, KVM_GET_SREGS, &sregs) != 0) return false;
  uint64_t frame[6];  // error code, RIP, CS, RFLAGS, RSP, SS, as the CPU pushed them
  if (!ReadGuestLinear(regs.rsp, frame, sizeof frame)) return false;
  const uint64_t want = kPfPresent | kPfUser | kPfFetch;
  if (frame[1] != syscall_watch_.lstar || (frame[2] & 3) != 3 || (frame[0] & want) != want) return false;
  uint8_t insn[2];
  if (!ReadGuestLinear(regs.rcx - 2, insn, 2) || insn[0] != 0x0f || insn[1] != 0x05) return false;
  const uint32_t idx[2] = {kMsrStar, kMsrFmask};
  uint64_t msr[2];
  if (!GetMsrs(idx, msr, 2)) return false;
  uint16_t cs = static_cast<uint16_t>((msr[0] >> 32) & 0xfffc);
  sregs.cs = FlatSegment(cs, true);
  sregs.ss = FlatSegment(static_cast<uint16_t>(cs + 8), false);
  // RCX (the next RIP) and R11 (RFLAGS before) are the emulator's and right; the frame's RSP is
  // the user's, which SYSCALL keeps; RF clear as after any completed instruction.
  regs.rip = syscall_watch_.lstar;
  regs.rsp = frame[4];
  regs.rflags = ((regs.r11 & ~msr[1]) & ~kRflagsRf) | kRflagsFixed;
  return ioctl(fd_, KVM_SET_SREGS, &sregs) == 0 && ioctl(fd_, KVM_SET_REGS, &regs) == 0;
}

}  // namespace hvemu
