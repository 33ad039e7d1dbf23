// The exit channel's shared memory layout: one header page, then one slot per vCPU.
//
// This is the contract between a vCPU thread and the JS thread, so it is backend-neutral: the
// KVM run loop (and later MSHV/WHPX) translate their exits into it. The TypeScript mirror is
// packages/accel/src/native/exit-slot.ts; change both together.
//
// Ownership of a slot follows its `state` word:
//   RUNNING  -> the vCPU thread owns the slot (and the vCPU is in, or about to enter, the guest)
//   POSTED   -> an exit is described in the slot; JS owns it until it writes the answer
//   ANSWERED -> JS is done; the vCPU thread reads the answer and moves to RUNNING
//   EXITED   -> the vCPU thread has ended; `a3` says why
#pragma once
#include <cstddef>
#include <cstdint>

namespace hvemu {

constexpr size_t kHeaderSize = 4096;
constexpr size_t kSlotSize = 8192;
constexpr size_t kSlotDataOffset = 4096;  // string-I/O data lives in the slot's second page
constexpr size_t kSlotDataSize = 4096;

// Header offsets (u32 words).
constexpr size_t kHdrJsPolling = 0;  // non-zero while JS is polling slots (no wake-up needed)

// Slot offsets.
constexpr size_t kSlotState = 0;      // u32 SlotState
constexpr size_t kSlotSleeping = 4;   // u32: vCPU thread is (about to be) blocked in futex_wait
constexpr size_t kSlotKind = 8;       // u32 ExitKind
constexpr size_t kSlotFlags = 12;     // u32 ExitFlags
constexpr size_t kSlotSize_ = 16;     // u32 access size in bytes
constexpr size_t kSlotCount = 20;     // u32 repeat count (string I/O)
constexpr size_t kSlotA0 = 24;        // u64 port / gpa / msr / leaf / hypercall control
constexpr size_t kSlotA1 = 32;        // u64 data / value / hypercall input gpa (rdx)
constexpr size_t kSlotA2 = 40;        // u64 subleaf / hypercall output gpa (r8)
constexpr size_t kSlotA3 = 48;        // u64 backend code / reason / exit cause
constexpr size_t kSlotAnswerStatus = 56;  // u32 AnswerStatus
constexpr size_t kSlotAnswer0 = 64;       // u64 x4: value (or cpuid eax, ebx, ecx, edx)
constexpr size_t kSlotSeq = 96;           // u32 number of exits posted so far
constexpr size_t kSlotWakeGen = 100;      // u32 futex word: bumped by every wake-up
constexpr size_t kSlotA4 = 104;           // u64 extra payload (suberror detail)
constexpr size_t kSlotStatWaitNs = 112;   // u64 total ns the vCPU thread waited for answers
constexpr size_t kSlotStatRunNs = 120;    // u64 total ns spent inside KVM_RUN (guest + kernel)
constexpr size_t kSlotRegs = 128;         // u64 x 18, kRegNames order (register dump)
constexpr size_t kSlotSregs = 272;        // u64 x 7: cr0 cr2 cr3 cr4 cr8 efer apic_base
constexpr size_t kSlotInsnLen = 328;      // u32
constexpr size_t kSlotInsnBytes = 332;    // u8 x 16
constexpr size_t kSlotXmm = 352;          // u8 x 6 x 16: XMM0-5 of a fast hypercall

enum SlotState : uint32_t { kRunning = 0, kPosted = 1, kAnswered = 2, kExited = 3 };

enum ExitKind : uint32_t {
  kExitIo = 1,
  kExitMmio = 2,
  kExitMsrRead = 3,
  kExitMsrWrite = 4,
  kExitCpuid = 5,
  kExitHypercall = 6,
  kExitHalt = 7,
  kExitShutdown = 8,
  kExitUnrecoverable = 9,
};

// Exit flags (slot kSlotFlags); plain constants because they are OR-ed together.
constexpr uint32_t kFlagWrite = 1;      // io out / mmio write
constexpr uint32_t kFlagString = 2;     // string I/O: data in the slot's data page
constexpr uint32_t kFlagRegsValid = 4;  // register dump present
constexpr uint32_t kFlagInsnValid = 8;  // instruction bytes present
constexpr uint32_t kFlagXmmValid = 16;  // XMM0-5 present (fast hypercall)

enum AnswerStatus : uint32_t {
  kAnswerContinue = 0,
  kAnswerGp = 1,    // inject #GP (MSR access)
  kAnswerStop = 2,  // stop this vCPU
};

// Why a vCPU thread ended (slot a3 when state == EXITED).
enum ExitCause : uint32_t {
  kCauseStopRequested = 1,  // the host asked all vCPUs to stop
  kCauseHandlerStop = 2,    // a handler answered kAnswerStop
  kCauseHostError = 3,      // a host-side failure (errno in a1)
};

}  // namespace hvemu
