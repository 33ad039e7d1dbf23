// ExitChannel: hands exits from vCPU threads to the JS thread and answers back.
//
// A vCPU thread describes its exit in its slot, publishes state=POSTED and blocks. The JS
// thread learns of it in one of two ways:
//   * it is already polling slots (header word kHdrJsPolling != 0) right after answering an
//     earlier exit: it sees the slot on its next scan, no wake-up at all;
//   * otherwise the channel asks the Notifier (a napi threadsafe function) to run the JS drain
//     callback. Requests coalesce: one queued callback serves every slot posted before it runs.
// The vCPU thread spins briefly, then sleeps on a per-slot futex generation word. JS publishes
// state=ANSWERED and calls Wake() only if the slot says the thread is sleeping. Both sides use
// sequentially consistent accesses for the publish-then-check pairs, so no wake-up is lost.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "exit_slot.h"

namespace hvemu {

class Notifier {
 public:
  virtual ~Notifier() = default;
  // Called from a vCPU thread; must not block.
  virtual void NotifyJs() = 0;
};

class ExitChannel {
 public:
  explicit ExitChannel(uint32_t vcpu_count);
  ~ExitChannel();
  ExitChannel(const ExitChannel&) = delete;
  ExitChannel& operator=(const ExitChannel&) = delete;

  void set_notifier(Notifier* n) { notifier_ = n; }
  void set_spin_iterations(uint32_t n) { spin_iterations_ = n; }

  // The whole shared area (header + slots) and its size, for the external ArrayBuffer.
  uint8_t* base() const { return base_; }
  size_t size() const { return size_; }
  uint8_t* slot(uint32_t vp) const { return base_ + kHeaderSize + static_cast<size_t>(vp) * kSlotSize; }
  uint32_t vcpu_count() const { return vcpu_count_; }

  // vCPU thread: publish the slot's exit and block until JS answers or `stop` becomes true.
  // Returns true when answered.
  bool PostAndWait(uint32_t vp, const std::atomic<bool>& stop);
  // vCPU thread: the thread is ending; tell JS why.
  void MarkExited(uint32_t vp, ExitCause cause, uint64_t detail);
  // vCPU thread: reset the slot to RUNNING before the thread starts (called by the host).
  void Reset(uint32_t vp);

  // Any thread: wake a vCPU thread blocked in PostAndWait (after an answer or a stop request).
  void Wake(uint32_t vp);
  // JS thread: the notifier's callback is about to drain; later posts must notify again.
  void ClearNotifyQueued() { notify_queued_.store(false, std::memory_order_seq_cst); }

  static uint64_t NowNs();
  static uint32_t Load32(const uint8_t* p) { return __atomic_load_n(reinterpret_cast<const uint32_t*>(p), __ATOMIC_SEQ_CST); }
  static void Store32(uint8_t* p, uint32_t v) { __atomic_store_n(reinterpret_cast<uint32_t*>(p), v, __ATOMIC_SEQ_CST); }

 private:
  void NotifyJs();
  bool WaitForAnswer(uint32_t vp, const std::atomic<bool>& stop);

  uint32_t vcpu_count_;
  size_t size_;
  uint8_t* base_;
  Notifier* notifier_ = nullptr;
  uint32_t spin_iterations_ = 4000;
  std::atomic<bool> notify_queued_{false};
};

}  // namespace hvemu
