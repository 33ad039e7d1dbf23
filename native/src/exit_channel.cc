#include "exit_channel.h"

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ctime>
#include <cstring>

#include "host_error.h"

namespace hvemu {
namespace {

void FutexWait(uint8_t* word, uint32_t expected) {
  // Spurious returns (EINTR from the stop kick, EAGAIN when the word moved) are fine: the
  // caller re-checks its condition.
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

void FutexWakeAll(uint8_t* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
}

}  // namespace

uint64_t ExitChannel::NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

namespace {

inline void CpuRelax() { __builtin_ia32_pause(); }

}  // namespace

ExitChannel::ExitChannel(uint32_t vcpu_count)
    : vcpu_count_(vcpu_count), size_(kHeaderSize + static_cast<size_t>(vcpu_count) * kSlotSize) {
  // Page-aligned, zeroed, never moved: JS holds an external ArrayBuffer over it.
  void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) ThrowErrno("mmap of the exit channel");
  base_ = static_cast<uint8_t*>(p);
}

ExitChannel::~ExitChannel() { munmap(base_, size_); }

void ExitChannel::Reset(uint32_t vp) {
  uint8_t* s = slot(vp);
  Store32(s + kSlotSleeping, 0);
  *reinterpret_cast<uint64_t*>(s + kSlotStatWaitNs) = 0;
  *reinterpret_cast<uint64_t*>(s + kSlotStatRunNs) = 0;
  Store32(s + kSlotState, kRunning);
}

void ExitChannel::NotifyJs() {
  // JS is scanning slots right now and will see ours; see the header comment for why this
  // check cannot lose a post.
  if (Load32(base_ + kHdrJsPolling) != 0) return;
  if (notify_queued_.exchange(true, std::memory_order_seq_cst)) return;
  if (notifier_ != nullptr) notifier_->NotifyJs();
}

bool ExitChannel::PostAndWait(uint32_t vp, const std::atomic<bool>& stop) {
  uint8_t* s = slot(vp);
  uint64_t t0 = NowNs();
  bool answered = WaitForAnswer(vp, stop);
  // Statistics only the vCPU thread writes; JS reads them when the vCPU is parked or done.
  *reinterpret_cast<uint64_t*>(s + kSlotStatWaitNs) += NowNs() - t0;
  return answered;
}

bool ExitChannel::WaitForAnswer(uint32_t vp, const std::atomic<bool>& stop) {
  uint8_t* s = slot(vp);
  Store32(s + kSlotSeq, Load32(s + kSlotSeq) + 1);
  Store32(s + kSlotState, kPosted);
  NotifyJs();
  // Spin first: a JS handler that answers within microseconds saves the futex sleep/wake.
  for (uint32_t i = 0; i < spin_iterations_; i++) {
    if (Load32(s + kSlotState) == kAnswered) return true;
    CpuRelax();
  }
  Store32(s + kSlotSleeping, 1);
  for (;;) {
    uint32_t gen = Load32(s + kSlotWakeGen);
    if (Load32(s + kSlotState) == kAnswered) break;
    if (stop.load(std::memory_order_seq_cst)) {
      Store32(s + kSlotSleeping, 0);
      return false;
    }
    FutexWait(s + kSlotWakeGen, gen);
  }
  Store32(s + kSlotSleeping, 0);
  return true;
}

void ExitChannel::MarkExited(uint32_t vp, ExitCause cause, uint64_t detail) {
  uint8_t* s = slot(vp);
  __atomic_store_n(reinterpret_cast<uint64_t*>(s + kSlotA3), static_cast<uint64_t>(cause), __ATOMIC_SEQ_CST);
  __atomic_store_n(reinterpret_cast<uint64_t*>(s + kSlotA1), detail, __ATOMIC_SEQ_CST);
  Store32(s + kSlotState, kExited);
  NotifyJs();
}

void ExitChannel::Wake(uint32_t vp) {
  if (vp >= vcpu_count_) return;
  uint8_t* s = slot(vp);
  __atomic_fetch_add(reinterpret_cast<uint32_t*>(s + kSlotWakeGen), 1, __ATOMIC_SEQ_CST);
  FutexWakeAll(s + kSlotWakeGen);
}

}  // namespace hvemu
