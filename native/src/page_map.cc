#include "page_map.h"

#include <sys/mman.h>

#include <string>

#include "host_error.h"

namespace hvemu {
namespace {

constexpr uint64_t kPage = 4096;

const GuestRam* RegionOf(const std::vector<std::shared_ptr<GuestRam>>& ram, uint64_t pfn) {
  if (pfn > (UINT64_MAX / kPage)) return nullptr;
  for (const auto& r : ram) {
    if (r->Contains(pfn * kPage, kPage)) return r.get();
  }
  return nullptr;
}

}  // namespace

std::unique_ptr<PageMap> PageMap::Create(const std::vector<std::shared_ptr<GuestRam>>& ram, const std::vector<uint64_t>& pfns) {
  if (pfns.empty() || pfns.size() > kMaxPages) {
    throw HostError(kErrUsage, "a page list must have 1.." + std::to_string(kMaxPages) + " pages");
  }
  // Check every page before mapping any: a bad PFN must not leave a half-built view behind.
  std::vector<const GuestRam*> regions(pfns.size());
  for (size_t i = 0; i < pfns.size(); i++) {
    regions[i] = RegionOf(ram, pfns[i]);
    if (regions[i] == nullptr) {
      throw HostError(kErrUsage, "page-list entry " + std::to_string(i) + " (PFN " + std::to_string(pfns[i]) + ") is not guest RAM");
    }
  }
  size_t size = pfns.size() * kPage;
  // Reserve the whole range first so the pieces land side by side.
  void* base = mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) ThrowErrno("mmap reserving a page-list view");
  std::unique_ptr<PageMap> map(new PageMap(static_cast<uint8_t*>(base), size));
  for (size_t i = 0; i < pfns.size();) {
    // One mmap per run of pages consecutive in the same region (each run is one VMA).
    size_t run = 1;
    while (i + run < pfns.size() && pfns[i + run] == pfns[i] + run && regions[i + run] == regions[i]) run++;
    const GuestRam* r = regions[i];
    off_t offset = static_cast<off_t>(pfns[i] * kPage - r->gpa());
    void* at = map->base_ + i * kPage;
    if (mmap(at, run * kPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, r->memfd(), offset) == MAP_FAILED) {
      ThrowErrno("mmap of guest pages into a page-list view");  // ~PageMap unmaps the range
    }
    i += run;
  }
  for (const auto& r : ram) map->keep_.push_back(r);
  return map;
}

PageMap::~PageMap() { munmap(base_, size_); }

}  // namespace hvemu
