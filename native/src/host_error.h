// HostError: a host-side failure with a stable code that TypeScript maps to a typed error.
#pragma once
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace hvemu {

// Codes are part of the addon's contract with packages/accel/src/errors.ts.
constexpr const char* kErrNoKvm = "HVEMU_NO_KVM";            // /dev/kvm missing or unusable
constexpr const char* kErrApiVersion = "HVEMU_KVM_API";      // KVM_GET_API_VERSION != 12
constexpr const char* kErrCapability = "HVEMU_CAPABILITY";   // a required capability is absent
constexpr const char* kErrMemoryMap = "HVEMU_MEMORY_MAP";    // the RAM layout is not acceptable
constexpr const char* kErrUsage = "HVEMU_USAGE";             // bad argument / wrong state
constexpr const char* kErrSystem = "HVEMU_SYSTEM";           // a syscall failed unexpectedly

class HostError : public std::runtime_error {
 public:
  HostError(const char* code, const std::string& message, int err = 0)
      : std::runtime_error(message), code_(code), errno_(err) {}
  const char* code() const { return code_; }
  int error_number() const { return errno_; }

 private:
  const char* code_;
  int errno_;
};

// Throws kErrSystem naming the failed operation and errno.
[[noreturn]] inline void ThrowErrno(const std::string& what) {
  int err = errno;
  throw HostError(kErrSystem, what + " failed: " + std::strerror(err), err);
}

}  // namespace hvemu
