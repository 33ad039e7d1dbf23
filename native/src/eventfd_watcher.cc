#include "eventfd_watcher.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "host_error.h"

namespace hvemu {

EventfdWatcher::EventfdWatcher(std::function<void()> notify) : notify_(std::move(notify)) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw HostError(kErrSystem, "epoll_create1 failed", errno);
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) {
    int e = errno;
    close(epoll_fd_);
    throw HostError(kErrSystem, "eventfd failed", e);
  }
  epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.fd = stop_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &ev);
  thread_ = std::thread([this] { Loop(); });
}

EventfdWatcher::~EventfdWatcher() { Stop(); }

void EventfdWatcher::Add(int fd, bool one_shot) {
  // Edge-triggered: every write to an eventfd wakes its waiters, so each guest doorbell
  // write after JS drained the counter produces a new event; level-triggered would spin
  // until JS got round to reading. A packet fd (a TAP) wakes its waiters for every packet
  // queued, so it is watched one-shot: the owner re-arms it when a read finds it empty.
  epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLET | (one_shot ? EPOLLONESHOT : 0u);
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) throw HostError(kErrSystem, "epoll_ctl(ADD) failed", errno);
}

void EventfdWatcher::Rearm(int fd) {
  // EPOLL_CTL_MOD polls the fd: data that arrived after the owner's last read is reported now.
  epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLET | EPOLLONESHOT;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) != 0) throw HostError(kErrSystem, "epoll_ctl(MOD) failed", errno);
}

void EventfdWatcher::Remove(int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);  // already closed or never added: nothing to do
  std::lock_guard<std::mutex> lock(mutex_);
  ready_.erase(fd);
}

std::vector<int> EventfdWatcher::TakeReady() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int> out(ready_.begin(), ready_.end());
  ready_.clear();
  return out;
}

void EventfdWatcher::Loop() {
  pthread_setname_np(pthread_self(), "hvemu-epoll");  // for top -H, /proc/*/task/*/comm
  epoll_event events[32];
  for (;;) {
    int n = epoll_wait(epoll_fd_, events, 32, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    bool was_empty;
    bool any = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      was_empty = ready_.empty();
      for (int i = 0; i < n; i++) {
        if (events[i].data.fd == stop_fd_) return;
        ready_.insert(events[i].data.fd);
        any = true;
      }
    }
    if (any && was_empty) notify_();
  }
}

void EventfdWatcher::Stop() {
  if (stopped_.exchange(true)) return;
  uint64_t one = 1;
  ssize_t w = write(stop_fd_, &one, sizeof one);
  (void)w;
  if (thread_.joinable()) thread_.join();
  close(stop_fd_);
  close(epoll_fd_);
}

}  // namespace hvemu
