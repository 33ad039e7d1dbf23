// EventfdWatcher: one thread that waits (epoll) on eventfds the kernel bumps without a
// user-space exit (KVM ioeventfd doorbells) and tells JavaScript which ones became readable.
// It only reports readiness; JS reads (and so resets) the counters itself, so a write that
// lands after the report is reported again rather than lost.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace hvemu {

class EventfdWatcher {
 public:
  // `notify` is called on the watcher thread whenever the ready set goes from empty to
  // non-empty; the receiver calls TakeReady() later (on its own thread) to collect the fds.
  explicit EventfdWatcher(std::function<void()> notify);
  ~EventfdWatcher();
  EventfdWatcher(const EventfdWatcher&) = delete;
  EventfdWatcher& operator=(const EventfdWatcher&) = delete;

  // one_shot: reported once, then silent until Rearm(fd) (a busy reader is not woken for
  // every packet that arrives while it is still draining the fd).
  void Add(int fd, bool one_shot = false);
  // Arms a one-shot fd again; if it is readable already, that is reported at once.
  void Rearm(int fd);
  void Remove(int fd);
  // The fds that were signalled since the last call (each once), in ascending order.
  std::vector<int> TakeReady();
  // Stops and joins the thread; idempotent.
  void Stop();

 private:
  void Loop();

  std::function<void()> notify_;
  int epoll_fd_ = -1;
  int stop_fd_ = -1;
  std::thread thread_;
  std::mutex mutex_;
  std::set<int> ready_;
  std::atomic<bool> stopped_{false};
};

}  // namespace hvemu
