#include "guest_ram.h"

#include <sys/mman.h>
#include <unistd.h>

#include "host_error.h"

namespace hvemu {

std::shared_ptr<GuestRam> GuestRam::Create(uint64_t gpa, uint64_t size) {
  int fd = memfd_create("hvemu-guest-ram", MFD_CLOEXEC);
  if (fd < 0) ThrowErrno("memfd_create");
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    ThrowErrno("ftruncate of guest RAM memfd");
  }
  // MAP_NORESERVE: a large guest should not need its whole RAM committed up front.
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    close(fd);
    errno = err;
    ThrowErrno("mmap of guest RAM");
  }
  return std::shared_ptr<GuestRam>(new GuestRam(gpa, size, fd, static_cast<uint8_t*>(p)));
}

GuestRam::~GuestRam() {
  munmap(host_, size_);
  close(memfd_);
}

}  // namespace hvemu
