// One region of guest RAM: a memfd mapped MAP_SHARED into this process.
//
// The memfd (not anonymous memory) is what lets later code map the same guest pages a second
// time at a contiguous host address (GPADL page lists) and hand them to other processes.
#pragma once
#include <cstdint>
#include <memory>

namespace hvemu {

class GuestRam {
 public:
  // Creates and maps `size` bytes (page multiple) that back guest-physical `gpa`.
  static std::shared_ptr<GuestRam> Create(uint64_t gpa, uint64_t size);
  ~GuestRam();
  GuestRam(const GuestRam&) = delete;
  GuestRam& operator=(const GuestRam&) = delete;

  uint8_t* host() const { return host_; }
  uint64_t gpa() const { return gpa_; }
  uint64_t size() const { return size_; }
  int memfd() const { return memfd_; }
  // True when [gpa, gpa+len) lies inside this region (overflow-safe).
  bool Contains(uint64_t gpa, uint64_t len) const {
    return gpa >= gpa_ && len <= size_ && gpa - gpa_ <= size_ - len;
  }

 private:
  GuestRam(uint64_t gpa, uint64_t size, int memfd, uint8_t* host)
      : gpa_(gpa), size_(size), memfd_(memfd), host_(host) {}
  uint64_t gpa_;
  uint64_t size_;
  int memfd_;
  uint8_t* host_;
};

}  // namespace hvemu
