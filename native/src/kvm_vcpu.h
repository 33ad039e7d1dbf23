// KvmVcpu: one vCPU fd, its run page, and the native thread that runs it.
#pragma once
#include <linux/kvm.h>
#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "exit_channel.h"

namespace hvemu {

class KvmPartition;

class KvmVcpu {
 public:
  KvmVcpu(KvmPartition& partition, uint32_t index, int fd, kvm_run* run, size_t run_size);
  ~KvmVcpu();
  KvmVcpu(const KvmVcpu&) = delete;
  KvmVcpu& operator=(const KvmVcpu&) = delete;

  uint32_t index() const { return index_; }

  void Start();        // spawns the run thread
  void RequestStop();  // makes the thread leave KVM_RUN and end; does not wait
  void Join();
  bool running() const { return running_.load(); }

  // State access. Only while the vCPU is parked: not started, ended, or stopped at a posted exit.
  kvm_regs GetRegs();
  void SetRegs(const kvm_regs& regs);
  kvm_sregs GetSregs();
  void SetSregs(const kvm_sregs& sregs);
  void SetMpState(uint32_t state);
  kvm_fpu GetFpu();
  void SetFpu(const kvm_fpu& fpu);
  void SetCpuid(const std::vector<kvm_cpuid_entry2>& entries);
  // The guest TSC frequency KVM runs this vCPU at (KVM_GET_TSC_KHZ); any time.
  uint32_t GetTscKhz();
  // The guest's IA32_TSC now (KVM_GET_MSRS); parked only.
  uint64_t GetGuestTsc();
  // The in-kernel LAPIC's register page (KVM_GET_LAPIC, 1 KiB); parked only.
  kvm_lapic_state GetLapic();

 private:
  void CheckParked() const;
  void ThreadMain();
  // Each returns false when the vCPU must stop (handler said so, or stop requested).
  bool HandleExit();
  bool HandleIo();
  bool HandleMmio();
  bool HandleMsr(bool write);
  bool HandleHypercall();
  bool HandleInternalError();
  bool PostFatal(uint32_t kind, uint64_t code, uint64_t detail, uint64_t detail2);
  bool TryFinishInt3();
  bool TryFinishEmulationGap(const uint8_t* insn, uint32_t n);
  bool TryFild(const uint8_t* insn, uint32_t n);
  // Reads guest memory at a linear address through the vCPU's page tables; false where a page
  // does not translate or is not RAM (never touches other host memory).
  bool ReadGuestLinear(uint64_t linear, void* out, uint32_t len);
  bool TranslateLinear(uint64_t linear, uint64_t* physical);
  bool WalkPageTables(uint64_t linear, uint64_t* physical);
  bool GetMsrs(const uint32_t* index, uint64_t* value, uint32_t n);
  bool SetMsr(uint32_t index, uint64_t value);
  // SYSCALL completed at CPL 0 where this kind of KVM leaves the vCPU at CPL 3 (syscall_entry.cc).
  void HandleLstar(bool write);
  uint64_t PageFaultHandler();
  void ArmSyscallWatch(uint64_t lstar);
  bool HandleSyscallWatch();
  bool TryFinishSyscall();
  bool Post();  // posts the prepared slot; false when the vCPU must stop
  void DumpState();
  uint32_t FetchInsn(uint8_t* out, uint32_t max);
  uint8_t* slot() const;

  KvmPartition& partition_;
  uint32_t index_;
  int fd_;
  kvm_run* run_;
  size_t run_size_;
  std::thread thread_;
  pthread_t native_ = {};
  std::atomic<bool> running_{false};
  std::atomic<bool> stop_{false};
  bool handler_stop_ = false;
  struct SyscallWatch {
    enum State { kIdle, kArmed, kStepping, kOff } state = kIdle;
    uint64_t lstar = 0;
    uint64_t pf_handler = 0;
  } syscall_watch_;
  void SetSyscallWatch(SyscallWatch::State state);
};

}  // namespace hvemu
