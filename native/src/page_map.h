// PageMap: a flat host view of guest pages that are scattered in guest-physical memory
// (a GPADL page list), made by mapping each run of the memfd pages again, side by side.
// Writes through the view are writes to guest RAM and vice versa: no copy, no sync.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "guest_ram.h"

namespace hvemu {

class PageMap {
 public:
  // Every PFN must be guest RAM (throws HostError otherwise). At most kMaxPages pages.
  static std::unique_ptr<PageMap> Create(const std::vector<std::shared_ptr<GuestRam>>& ram, const std::vector<uint64_t>& pfns);
  ~PageMap();
  PageMap(const PageMap&) = delete;
  PageMap& operator=(const PageMap&) = delete;

  uint8_t* data() const { return base_; }
  size_t size() const { return size_; }

  static constexpr uint64_t kMaxPages = 1u << 18;  // 1 GiB per view

 private:
  PageMap(uint8_t* base, size_t size) : base_(base), size_(size) {}
  uint8_t* base_;
  size_t size_;
  std::vector<std::shared_ptr<GuestRam>> keep_;  // the memfds must outlive the mapping
};

}  // namespace hvemu
