// hvemu_native: the Node-API face of the native core. Argument checking and conversion only;
// the work is in kvm_partition.cc / kvm_vcpu.cc / exit_channel.cc.
#include <napi.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <map>
#include <set>

#include "eventfd_watcher.h"
#include "exit_slot.h"
#include "file_io.h"
#include "frame_io.h"
#include "frame_writer.h"
#include "host_error.h"
#include "kvm_partition.h"
#include "kvm_vcpu.h"
#include "napi_util.h"
#include "page_map.h"

namespace hvemu {
namespace {

constexpr uint32_t kCpuidWords = 7;  // function, index, flags, eax, ebx, ecx, edx
// Bounds checked before anything is sized by a caller's count (an array's length is not a
// promise of memory): more than KVM takes anyway.
constexpr uint32_t kMaxRamRegions = 1024;
constexpr uint32_t kMaxUserMsrs = 1024;
// Most ranges one discardRanges call takes (a balloon response has at most 510; a batch of many).
constexpr size_t kMaxDiscardRanges = 1u << 20;
constexpr size_t kMaxCpuidEntries = 1024;
constexpr uint32_t kRegWords = 18;
constexpr uint32_t kSregWords = 35;

[[noreturn]] void ThrowJs(Napi::Env env, const HostError& e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  err.Set("code", Napi::String::New(env, e.code()));
  if (e.error_number() != 0) err.Set("errno", Napi::Number::New(env, e.error_number()));
  throw err;
}

[[noreturn]] void Usage(Napi::Env env, const std::string& msg) { ThrowJs(env, HostError(kErrUsage, msg)); }

// Accepts a non-negative safe integer Number or a BigInt that fits in 64 bits.
uint64_t ToU64(Napi::Env env, const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) Usage(env, std::string(what) + " does not fit in 64 bits");
    return r;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<uint64_t>(d))) {
      Usage(env, std::string(what) + " must be a non-negative safe integer");
    }
    return static_cast<uint64_t>(d);
  }
  Usage(env, std::string(what) + " must be a number or bigint");
}

uint32_t ToU32(Napi::Env env, const Napi::Value& v, const char* what) {
  uint64_t r = ToU64(env, v, what);
  if (r > 0xffffffffULL) Usage(env, std::string(what) + " does not fit in 32 bits");
  return static_cast<uint32_t>(r);
}

Napi::TypedArrayOf<uint64_t> BigU64Array(Napi::Env env, const Napi::Value& v, size_t len, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array) {
    Usage(env, std::string(what) + " must be a BigUint64Array");
  }
  auto a = v.As<Napi::TypedArrayOf<uint64_t>>();
  if (a.ElementLength() != len) Usage(env, std::string(what) + " must have " + std::to_string(len) + " elements");
  return a;
}

// Segment packing shared with packages/accel/src/native/registers.ts.
void PackSegment(const kvm_segment& s, uint64_t* out) {
  out[0] = s.base;
  out[1] = s.limit;
  out[2] = static_cast<uint64_t>(s.selector) | (static_cast<uint64_t>(s.type & 0xf) << 16) |
           (static_cast<uint64_t>(s.present & 1) << 20) | (static_cast<uint64_t>(s.dpl & 3) << 21) |
           (static_cast<uint64_t>(s.db & 1) << 23) | (static_cast<uint64_t>(s.s & 1) << 24) |
           (static_cast<uint64_t>(s.l & 1) << 25) | (static_cast<uint64_t>(s.g & 1) << 26) |
           (static_cast<uint64_t>(s.avl & 1) << 27) | (static_cast<uint64_t>(s.unusable & 1) << 28);
}

void UnpackSegment(const uint64_t* in, kvm_segment& s) {
  s.base = in[0];
  s.limit = static_cast<uint32_t>(in[1]);
  uint64_t a = in[2];
  s.selector = static_cast<uint16_t>(a & 0xffff);
  s.type = (a >> 16) & 0xf;
  s.present = (a >> 20) & 1;
  s.dpl = (a >> 21) & 3;
  s.db = (a >> 23) & 1;
  s.s = (a >> 24) & 1;
  s.l = (a >> 25) & 1;
  s.g = (a >> 26) & 1;
  s.avl = (a >> 27) & 1;
  s.unusable = (a >> 28) & 1;
}

kvm_segment* SegmentAt(kvm_sregs& s, int i) {
  kvm_segment* segs[8] = {&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt};
  return segs[i];
}

// ---- external ArrayBuffers ---------------------------------------------------------------
//
// On Node 20 napi_create_external_arraybuffer makes a node::Buffer, which refuses more than
// buffer.constants.MAX_LENGTH (2^32) bytes, and when it refuses it has already run the
// finalizer; node-addon-api's ArrayBuffer::New then deletes its finalizer data a second time
// ("free(): double free detected"). So no buffer is ever asked for beyond kMaxExternalBuffer
// (guest RAM is handed out in chunks of at most that), and the finalizer bookkeeping is ours:
// whoever runs first of Node (on failure) and us owns the release.
//
// 2^32 is also the longest typed array Node 20 makes (a Uint8Array of 2^32 + 1 elements is a
// RangeError), and GuestMemory views each region through one Uint8Array.
constexpr size_t kMaxExternalBuffer = size_t{1} << 32;

struct ExternalKeep {
  std::shared_ptr<void> keep;  // what the buffer's memory belongs to
};

thread_local ExternalKeep* g_creating = nullptr;
thread_local bool g_creating_finalized = false;

void FinalizeExternal(napi_env, void*, void* hint) {
  auto* k = static_cast<ExternalKeep*>(hint);
  if (k == g_creating) g_creating_finalized = true;
  delete k;
}

// An ArrayBuffer over `size` bytes at `data` that keeps `keep` alive until it is collected
// (or detached). Never runs a finalizer twice; throws HostError instead of aborting.
Napi::ArrayBuffer NewExternalBuffer(Napi::Env env, void* data, size_t size, std::shared_ptr<void> keep) {
  if (size > kMaxExternalBuffer) {
    throw HostError(kErrUsage, "an external buffer of " + std::to_string(size) + " bytes exceeds Node's limit of " +
                                   std::to_string(kMaxExternalBuffer));
  }
  auto* hint = new ExternalKeep{std::move(keep)};
  g_creating = hint;
  g_creating_finalized = false;
  napi_value value = nullptr;
  napi_status s = napi_create_external_arraybuffer(env, data, size, FinalizeExternal, hint, &value);
  bool finalized = g_creating_finalized;
  g_creating = nullptr;
  if (s != napi_ok) {
    if (!finalized) delete hint;
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
    throw HostError(kErrSystem, "cannot make an external buffer of " + std::to_string(size) + " bytes (napi status " +
                                    std::to_string(static_cast<int>(s)) + ")");
  }
  return Napi::ArrayBuffer(env, value);
}

// ---- calls from other threads into JS -------------------------------------------------------
//
// These run on the JS thread from a threadsafe function. They use the raw napi calls: a failing
// node-addon-api call throws a C++ exception (or, while the environment is being torn down,
// even aborts while building the error), and nothing up the stack catches it here. A JS
// exception from the callback stays pending and Node reports it as uncaught; while a worker
// terminates the call just fails and nothing happens.

// Holds the exit channel alive for as long as the threadsafe function may call into JS.
struct TsfnContext {
  std::shared_ptr<ExitChannel> channel;
};

void CallJs(Napi::Env env, Napi::Function callback, TsfnContext* ctx, void*) {
  if (env == nullptr || callback.IsEmpty()) return;
  // Clear before draining: a post that lands while JS drains must queue another call.
  ctx->channel->ClearNotifyQueued();
  napi_value undefined = nullptr;
  if (napi_get_undefined(env, &undefined) != napi_ok) return;
  napi_call_function(env, undefined, callback, 0, nullptr, nullptr);
}

// Buffers made by mapPages, so that unmapPages detaches nothing else (guest RAM, the exit
// channel). Shared by every environment (workers), hence the lock.
std::mutex g_page_maps_mutex;
std::set<const void*> g_page_maps;

using ExitTsfn = Napi::TypedThreadSafeFunction<TsfnContext, void, CallJs>;

class PartitionWrap : public Napi::ObjectWrap<PartitionWrap>, public Notifier {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "KvmPartition",
                       {
                           InstanceMethod<&PartitionWrap::RamBuffers>("ramBuffers"),
                           InstanceMethod<&PartitionWrap::ExitBuffer>("exitBuffer"),
                           InstanceMethod<&PartitionWrap::SupportedCpuid>("supportedCpuid"),
                           InstanceMethod<&PartitionWrap::SetCpuid>("setCpuid"),
                           InstanceMethod<&PartitionWrap::SetUserMsrs>("setUserMsrs"),
                           InstanceMethod<&PartitionWrap::GetRegs>("getRegs"),
                           InstanceMethod<&PartitionWrap::SetRegs>("setRegs"),
                           InstanceMethod<&PartitionWrap::GetSregs>("getSregs"),
                           InstanceMethod<&PartitionWrap::SetSregs>("setSregs"),
                           InstanceMethod<&PartitionWrap::SetMpState>("setMpState"),
                           InstanceMethod<&PartitionWrap::GetXmm>("getXmm"),
                           InstanceMethod<&PartitionWrap::SetXmm>("setXmm"),
                           InstanceMethod<&PartitionWrap::GetTscKhz>("getTscKhz"),
                           InstanceMethod<&PartitionWrap::GetGuestTsc>("getGuestTsc"),
                           InstanceMethod<&PartitionWrap::GetLapic>("getLapic"),
                           InstanceMethod<&PartitionWrap::Start>("start"),
                           InstanceMethod<&PartitionWrap::Wake>("wake"),
                           InstanceMethod<&PartitionWrap::RequestStop>("requestStop"),
                           InstanceMethod<&PartitionWrap::Join>("join"),
                           InstanceMethod<&PartitionWrap::Idle>("idle"),
                           InstanceMethod<&PartitionWrap::SignalMsi>("signalMsi"),
                           InstanceMethod<&PartitionWrap::SetIrqLine>("setIrqLine"),
                           InstanceMethod<&PartitionWrap::AddIrqfdMsi>("addIrqfdMsi"),
                           InstanceMethod<&PartitionWrap::AddIoeventfd>("addIoeventfd"),
                           InstanceMethod<&PartitionWrap::RemoveIoeventfd>("removeIoeventfd"),
                           InstanceMethod<&PartitionWrap::TriggerIrqfd>("triggerIrqfd"),
                           InstanceMethod<&PartitionWrap::TakeIoeventfd>("takeIoeventfd"),
                           InstanceMethod<&PartitionWrap::MapPages>("mapPages"),
                           InstanceMethod<&PartitionWrap::AddRam>("addRam"),
                           InstanceMethod<&PartitionWrap::RemoveRam>("removeRam"),
                           InstanceMethod<&PartitionWrap::DiscardRam>("discardRam"),
                           InstanceMethod<&PartitionWrap::DiscardRanges>("discardRanges"),
                           InstanceMethod<&PartitionWrap::RamUsage>("ramUsage"),
                           InstanceMethod<&PartitionWrap::Close>("close"),
                       });
  }

  PartitionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PartitionWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      Usage(env, "new KvmPartition(config, onExitsPending)");
    }
    PartitionConfig config = ParseConfig(env, info[0].As<Napi::Object>());
    try {
      partition_ = KvmPartition::Create(config);
    } catch (const HostError& e) {
      ThrowJs(env, e);
    }
    channel_ = partition_->channel();
    auto* ctx = new TsfnContext{channel_};
    tsfn_ = ExitTsfn::New(env, info[1].As<Napi::Function>(), "hvemu-vcpu-exits", 0, 1, ctx,
                          [](Napi::Env, void*, TsfnContext* c) { delete c; });
    tsfn_.Unref(env);  // only running vCPUs keep the event loop alive (see Start/Idle)
    channel_->set_notifier(this);
    // When the environment goes (a worker terminated, the main thread ending) the vCPU threads
    // must be stopped and joined and the threadsafe function released before Node tears the
    // threadsafe function down; hooks run in reverse order of registration, so this one runs
    // before the threadsafe function's own.
    cleanup_.Register(env, this);
  }

  ~PartitionWrap() override {
    cleanup_.Unregister();
    Shutdown();
  }

  void NotifyJs() override { tsfn_.NonBlockingCall(); }

 private:
  friend class EnvCleanupHook<PartitionWrap>;

  static PartitionConfig ParseConfig(Napi::Env env, Napi::Object o) {
    PartitionConfig c;
    c.vcpu_count = ToU32(env, o.Get("vcpuCount"), "vcpuCount");
    Napi::Value ram = o.Get("ram");
    if (!ram.IsArray()) Usage(env, "config.ram must be an array of {gpa, size}");
    Napi::Array arr = ram.As<Napi::Array>();
    if (arr.Length() > kMaxRamRegions) Usage(env, "config.ram has " + std::to_string(arr.Length()) + " regions; at most " + std::to_string(kMaxRamRegions));
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value e = arr.Get(i);
      if (!e.IsObject()) Usage(env, "config.ram entries must be {gpa, size}");
      Napi::Object r = e.As<Napi::Object>();
      c.ram.push_back({ToU64(env, r.Get("gpa"), "ram.gpa"), ToU64(env, r.Get("size"), "ram.size")});
    }
    c.user_msrs = ParseMsrs(env, o.Get("userMsrs"));
    Napi::Value hc = o.Get("hypercallPort");
    if (!hc.IsUndefined() && !hc.IsNull()) {
      uint32_t port = ToU32(env, hc, "hypercallPort");
      if (port > 0xffff) Usage(env, "hypercallPort must be below 0x10000");
      c.hypercall_port = static_cast<int32_t>(port);
    }
    Napi::Value int3 = o.Get("int3Fixup");
    if (int3.IsBoolean()) c.int3_fixup = int3.As<Napi::Boolean>().Value();
    Napi::Value fixups = o.Get("instructionFixups");
    if (fixups.IsBoolean()) c.insn_fixups = fixups.As<Napi::Boolean>().Value();
    Napi::Value syscall = o.Get("syscallFixup");
    if (syscall.IsBoolean()) c.syscall_fixup = syscall.As<Napi::Boolean>().Value();
    Napi::Value sync = o.Get("syncRegs");
    if (sync.IsBoolean()) c.sync_regs = sync.As<Napi::Boolean>().Value();
    Napi::Value spin = o.Get("spinIterations");
    if (!spin.IsUndefined()) c.spin_iterations = ToU32(env, spin, "spinIterations");
    return c;
  }

  static std::vector<uint32_t> ParseMsrs(Napi::Env env, Napi::Value v) {
    std::vector<uint32_t> msrs;
    if (v.IsUndefined() || v.IsNull()) return msrs;
    if (!v.IsArray()) Usage(env, "userMsrs must be an array of MSR indices");
    Napi::Array a = v.As<Napi::Array>();
    if (a.Length() > kMaxUserMsrs) Usage(env, "userMsrs has " + std::to_string(a.Length()) + " entries; at most " + std::to_string(kMaxUserMsrs));
    for (uint32_t i = 0; i < a.Length(); i++) msrs.push_back(ToU32(env, a.Get(i), "MSR index"));
    return msrs;
  }

  KvmPartition& Part(Napi::Env env) {
    if (!partition_) Usage(env, "the partition is closed");
    return *partition_;
  }

  KvmVcpu& Vcpu(const Napi::CallbackInfo& info) {
    if (info.Length() < 1) Usage(info.Env(), "missing vCPU index");
    return Part(info.Env()).vcpu(ToU32(info.Env(), info[0], "vCPU index"));
  }

  // Runs `fn`, turning HostError into a JS error with its code (and any other C++ exception,
  // e.g. std::system_error when a thread cannot be made, into a HVEMU_SYSTEM one).
  template <typename F>
  auto Guard(Napi::Env env, F fn) -> decltype(fn()) {
    try {
      return fn();
    } catch (const HostError& e) {
      ThrowJs(env, e);
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      ThrowJs(env, HostError(kErrSystem, e.what()));
    }
  }

  // One array per RAM region (in config order) of ArrayBuffers that cover it in order, each at
  // most kMaxExternalBuffer bytes (see NewExternalBuffer): a region of 8 GiB comes as two.
  // Buffers are made once and cached: V8 builds may refuse two ArrayBuffers over one pointer.
  Napi::Value RamBuffers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!ram_buffers_.IsEmpty()) return ram_buffers_.Value();
    const auto& ram = Part(env).ram();
    Napi::Array out = Napi::Array::New(env, ram.size());
    Guard(env, [&] {
      for (uint32_t i = 0; i < ram.size(); i++) {
        Napi::Array chunks = Napi::Array::New(env);
        uint32_t n = 0;
        for (uint64_t off = 0; off < ram[i]->size(); off += kMaxExternalBuffer) {
          uint64_t len = std::min<uint64_t>(kMaxExternalBuffer, ram[i]->size() - off);
          // Each buffer owns a reference to its mapping, so RAM stays mapped while TS still
          // holds views into it, after close() too: no view can reach unmapped memory.
          chunks.Set(n++, NewExternalBuffer(env, ram[i]->host() + off, len, ram[i]));
        }
        out.Set(i, chunks);
      }
    });
    ram_buffers_ = Napi::Persistent(out);
    return out;
  }

  // Chunks of at most kMaxExternalBuffer bytes over `region`, each holding a reference to it.
  Napi::Array RegionBuffers(Napi::Env env, const std::shared_ptr<GuestRam>& region) {
    Napi::Array chunks = Napi::Array::New(env);
    uint32_t n = 0;
    for (uint64_t off = 0; off < region->size(); off += kMaxExternalBuffer) {
      uint64_t len = std::min<uint64_t>(kMaxExternalBuffer, region->size() - off);
      chunks.Set(n++, NewExternalBuffer(env, region->host() + off, len, region));
    }
    return chunks;
  }

  // addRam(gpa, size) -> ArrayBuffer[]: new RAM in a free memslot (memory hot add).
  Napi::Value AddRam(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2) Usage(env, "addRam(gpa, size)");
    uint64_t gpa = ToU64(env, info[0], "RAM gpa");
    uint64_t size = ToU64(env, info[1], "RAM size");
    return Guard(env, [&] {
      Napi::Array chunks = RegionBuffers(env, Part(env).AddRam(gpa, size));
      added_buffers_[gpa] = Napi::Persistent(chunks);
      return chunks;
    });
  }

  // removeRam(gpa): deletes the memslot, then detaches every JS buffer over the region (from
  // ramBuffers() or addRam()), so no view can touch it; the mapping goes when the buffers' last
  // reference does (detached buffers release theirs when collected).
  Napi::Value RemoveRam(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1) Usage(env, "removeRam(gpa)");
    uint64_t gpa = ToU64(env, info[0], "RAM gpa");
    Guard(env, [&] { Part(env).RemoveRam(gpa); });
    Napi::Array chunks;
    auto added = added_buffers_.find(gpa);
    if (added != added_buffers_.end()) {
      chunks = added->second.Value();
      added_buffers_.erase(added);
    } else if (!ram_buffers_.IsEmpty()) {
      const auto& cfg = Part(env).config().ram;
      for (uint32_t i = 0; i < cfg.size(); i++) {
        if (cfg[i].gpa == gpa) chunks = ram_buffers_.Value().Get(i).As<Napi::Array>();
      }
    }
    if (!chunks.IsEmpty()) {
      for (uint32_t i = 0; i < chunks.Length(); i++) {
        Napi::ArrayBuffer b = chunks.Get(i).As<Napi::ArrayBuffer>();
        if (!b.IsDetached()) b.Detach();
      }
    }
    return env.Undefined();
  }

  // discardRam(gpa, size): the pages read as zero and their host memory is freed.
  Napi::Value DiscardRam(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2) Usage(env, "discardRam(gpa, size)");
    uint64_t gpa = ToU64(env, info[0], "discard gpa");
    uint64_t size = ToU64(env, info[1], "discard size");
    Guard(env, [&] { Part(env).DiscardRam(gpa, size); });
    return env.Undefined();
  }

  // discardRanges(Float64Array [gpa0, size0, gpa1, size1, ...]) -> bytes discarded: one call
  // for a batch (a balloon response's ranges); all checked before any is punched.
  Napi::Value DiscardRanges(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
      Usage(env, "discardRanges(Float64Array of gpa, size pairs)");
    }
    auto a = info[0].As<Napi::Float64Array>();
    const size_t n = a.ElementLength();
    if (n == 0 || n % 2 != 0 || n / 2 > kMaxDiscardRanges) {
      Usage(env, "discardRanges takes 1.." + std::to_string(kMaxDiscardRanges) + " (gpa, size) pairs, not " + std::to_string(n) + " numbers");
    }
    std::vector<std::pair<uint64_t, uint64_t>> ranges(n / 2);
    for (size_t i = 0; i < n; i++) {
      double d = a[i];
      if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<uint64_t>(d))) {
        Usage(env, "discardRanges: element " + std::to_string(i) + " is not a non-negative integer");
      }
      if (i % 2 == 0) ranges[i / 2].first = static_cast<uint64_t>(d);
      else ranges[i / 2].second = static_cast<uint64_t>(d);
    }
    uint64_t total = Guard(env, [&] { return Part(env).DiscardRanges(ranges); });
    return Napi::Number::New(env, static_cast<double>(total));
  }

  // ramUsage() -> [{ gpa, size, allocated }]: host bytes each RAM region's memfd holds now.
  Napi::Value RamUsage(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto usage = Guard(env, [&] { return Part(env).RamUsageNow(); });
    Napi::Array out = Napi::Array::New(env, usage.size());
    for (uint32_t i = 0; i < usage.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("gpa", Napi::Number::New(env, static_cast<double>(usage[i].gpa)));
      o.Set("size", Napi::Number::New(env, static_cast<double>(usage[i].size)));
      o.Set("allocated", Napi::Number::New(env, static_cast<double>(usage[i].allocated)));
      out.Set(i, o);
    }
    return out;
  }

  Napi::Value ExitBuffer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!exit_buffer_.IsEmpty()) return exit_buffer_.Value();
    Part(env);
    Napi::ArrayBuffer b = Guard(env, [&] { return NewExternalBuffer(env, channel_->base(), channel_->size(), channel_); });
    exit_buffer_ = Napi::Persistent(b);
    return b;
  }

  Napi::Value SupportedCpuid(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto entries = Guard(env, [&] { return Part(env).SupportedCpuid(); });
    auto out = Napi::Uint32Array::New(env, entries.size() * kCpuidWords);
    for (size_t i = 0; i < entries.size(); i++) {
      const auto& e = entries[i];
      uint32_t w[kCpuidWords] = {e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx};
      std::memcpy(out.Data() + i * kCpuidWords, w, sizeof w);
    }
    return out;
  }

  Napi::Value SetCpuid(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
      Usage(env, "setCpuid(vp, Uint32Array)");
    }
    auto words = info[1].As<Napi::Uint32Array>();
    if (words.ElementLength() % kCpuidWords != 0) Usage(env, "CPUID entries are 7 words each");
    if (words.ElementLength() / kCpuidWords > kMaxCpuidEntries) Usage(env, "at most " + std::to_string(kMaxCpuidEntries) + " CPUID entries");
    std::vector<kvm_cpuid_entry2> entries(words.ElementLength() / kCpuidWords);
    for (size_t i = 0; i < entries.size(); i++) {
      const uint32_t* w = words.Data() + i * kCpuidWords;
      kvm_cpuid_entry2 e = {};
      e.function = w[0];
      e.index = w[1];
      e.flags = w[2];
      e.eax = w[3];
      e.ebx = w[4];
      e.ecx = w[5];
      e.edx = w[6];
      entries[i] = e;
    }
    Guard(env, [&] { Vcpu(info).SetCpuid(entries); });
    return env.Undefined();
  }

  Napi::Value SetUserMsrs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto msrs = ParseMsrs(env, info.Length() > 0 ? info[0] : env.Undefined());
    Guard(env, [&] { Part(env).SetUserMsrs(msrs); });
    return env.Undefined();
  }

  Napi::Value GetRegs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    kvm_regs r = Guard(env, [&] { return Vcpu(info).GetRegs(); });
    auto out = Napi::TypedArrayOf<uint64_t>::New(env, kRegWords, napi_biguint64_array);
    std::memcpy(out.Data(), &r, sizeof r);
    return out;
  }

  Napi::Value SetRegs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2) Usage(env, "setRegs(vp, BigUint64Array)");
    auto a = BigU64Array(env, info[1], kRegWords, "registers");
    kvm_regs r;
    std::memcpy(&r, a.Data(), sizeof r);
    Guard(env, [&] { Vcpu(info).SetRegs(r); });
    return env.Undefined();
  }

  Napi::Value GetSregs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    kvm_sregs s = Guard(env, [&] { return Vcpu(info).GetSregs(); });
    auto out = Napi::TypedArrayOf<uint64_t>::New(env, kSregWords, napi_biguint64_array);
    uint64_t* w = out.Data();
    for (int i = 0; i < 8; i++) PackSegment(*SegmentAt(s, i), w + i * 3);
    w[24] = s.gdt.base;
    w[25] = s.gdt.limit;
    w[26] = s.idt.base;
    w[27] = s.idt.limit;
    const uint64_t cr[7] = {s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base};
    std::memcpy(w + 28, cr, sizeof cr);
    return out;
  }

  Napi::Value SetSregs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2) Usage(env, "setSregs(vp, BigUint64Array)");
    auto a = BigU64Array(env, info[1], kSregWords, "special registers");
    Guard(env, [&] {
      KvmVcpu& v = Vcpu(info);
      kvm_sregs s = v.GetSregs();  // keeps the interrupt bitmap KVM owns
      const uint64_t* w = a.Data();
      for (int i = 0; i < 8; i++) UnpackSegment(w + i * 3, *SegmentAt(s, i));
      s.gdt.base = w[24];
      s.gdt.limit = static_cast<uint16_t>(w[25]);
      s.idt.base = w[26];
      s.idt.limit = static_cast<uint16_t>(w[27]);
      s.cr0 = w[28];
      s.cr2 = w[29];
      s.cr3 = w[30];
      s.cr4 = w[31];
      s.cr8 = w[32];
      s.efer = w[33];
      s.apic_base = w[34];
      v.SetSregs(s);
    });
    return env.Undefined();
  }

  // XMM0-15 as 256 bytes (fast hypercall input/output lives in XMM0-5).
  Napi::Value GetXmm(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    kvm_fpu f = Guard(env, [&] { return Vcpu(info).GetFpu(); });
    auto out = Napi::Uint8Array::New(env, sizeof f.xmm);
    std::memcpy(out.Data(), f.xmm, sizeof f.xmm);
    return out;
  }

  Napi::Value SetXmm(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
        info[1].As<Napi::Uint8Array>().ElementLength() != 256) {
      Usage(env, "setXmm(vp, Uint8Array(256))");
    }
    auto a = info[1].As<Napi::Uint8Array>();
    Guard(env, [&] {
      KvmVcpu& v = Vcpu(info);
      kvm_fpu f = v.GetFpu();  // keep x87 and MXCSR state
      std::memcpy(f.xmm, a.Data(), sizeof f.xmm);
      v.SetFpu(f);
    });
    return env.Undefined();
  }

  Napi::Value GetTscKhz(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t khz = Guard(env, [&] { return Vcpu(info).GetTscKhz(); });
    return Napi::Number::New(env, khz);
  }

  Napi::Value GetGuestTsc(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t tsc = Guard(env, [&] { return Vcpu(info).GetGuestTsc(); });
    return Napi::BigInt::New(env, tsc);
  }

  // The LAPIC register page as KVM keeps it (1 KiB; ISR at 0x100, IRR at 0x200, 16-byte stride).
  Napi::Value GetLapic(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    kvm_lapic_state s = Guard(env, [&] { return Vcpu(info).GetLapic(); });
    auto out = Napi::Uint8Array::New(env, sizeof s.regs);
    std::memcpy(out.Data(), s.regs, sizeof s.regs);
    return out;
  }

  Napi::Value SetMpState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2) Usage(env, "setMpState(vp, state)");
    uint32_t state = ToU32(env, info[1], "mp state");
    Guard(env, [&] { Vcpu(info).SetMpState(state); });
    return env.Undefined();
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Guard(env, [&] { Vcpu(info).Start(); });
    if (!refd_) {
      tsfn_.Ref(env);
      refd_ = true;
    }
    return env.Undefined();
  }

  // Called by JS after answering an exit whose slot said the vCPU thread sleeps.
  Napi::Value Wake(const Napi::CallbackInfo& info) {
    uint32_t vp = ToU32(info.Env(), info[0], "vCPU index");
    if (channel_) channel_->Wake(vp);
    return info.Env().Undefined();
  }

  Napi::Value RequestStop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (partition_) {
      for (uint32_t i = 0; i < partition_->vcpu_count(); i++) partition_->vcpu(i).RequestStop();
    }
    return env.Undefined();
  }

  Napi::Value Join(const Napi::CallbackInfo& info) {
    if (partition_) partition_->StopAll();
    return info.Env().Undefined();
  }

  // JS saw every vCPU thread end: stop keeping the event loop alive.
  Napi::Value Idle(const Napi::CallbackInfo& info) {
    if (refd_ && !released_) {
      tsfn_.Unref(info.Env());
      refd_ = false;
    }
    return info.Env().Undefined();
  }

  Napi::Value SignalMsi(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2) Usage(env, "signalMsi(address, data)");
    uint64_t addr = ToU64(env, info[0], "MSI address");
    uint32_t data = ToU32(env, info[1], "MSI data");
    return Napi::Number::New(env, Guard(env, [&] { return Part(env).SignalMsi(addr, data); }));
  }

  Napi::Value SetIrqLine(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[1].IsBoolean()) Usage(env, "setIrqLine(gsi, level)");
    uint32_t gsi = ToU32(env, info[0], "GSI");
    bool level = info[1].As<Napi::Boolean>().Value();
    Guard(env, [&] { Part(env).SetIrqLine(gsi, level); });
    return env.Undefined();
  }

  Napi::Value AddIrqfdMsi(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2) Usage(env, "addIrqfdMsi(address, data)");
    uint64_t addr = ToU64(env, info[0], "MSI address");
    uint32_t data = ToU32(env, info[1], "MSI data");
    return Napi::Number::New(env, Guard(env, [&] { return Part(env).AddIrqfdMsi(addr, data); }));
  }

  Napi::Value AddIoeventfd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3) Usage(env, "addIoeventfd(addr, len, pio, datamatch?)");
    uint64_t addr = ToU64(env, info[0], "ioeventfd address");
    uint32_t len = ToU32(env, info[1], "ioeventfd length");
    bool pio = info[2].ToBoolean().Value();
    bool has_match = info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull();
    uint64_t match = has_match ? ToU64(env, info[3], "ioeventfd datamatch") : 0;
    return Napi::Number::New(env, Guard(env, [&] { return Part(env).AddIoeventfd(addr, len, pio, has_match, match); }));
  }

  Napi::Value TriggerIrqfd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1) Usage(env, "triggerIrqfd(fd)");
    int fd = static_cast<int>(ToU32(env, info[0], "irqfd fd"));
    Guard(env, [&] { Part(env).TriggerIrqfd(fd); });
    return env.Undefined();
  }

  Napi::Value TakeIoeventfd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1) Usage(env, "takeIoeventfd(fd)");
    int fd = static_cast<int>(ToU32(env, info[0], "ioeventfd fd"));
    return Napi::BigInt::New(env, Guard(env, [&] { return Part(env).TakeIoeventfd(fd); }));
  }

  Napi::Value RemoveIoeventfd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1) Usage(env, "removeIoeventfd(fd)");
    int fd = static_cast<int>(ToU32(env, info[0], "ioeventfd fd"));
    Guard(env, [&] { Part(env).RemoveIoeventfd(fd); });
    return env.Undefined();
  }

  // mapPages(Float64Array of PFNs) -> ArrayBuffer viewing those guest pages contiguously.
  // Detaching the buffer (unmapPages) or its collection unmaps the view.
  Napi::Value MapPages(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
      Usage(env, "mapPages(Float64Array of PFNs)");
    }
    auto a = info[0].As<Napi::Float64Array>();
    if (a.ElementLength() == 0 || a.ElementLength() > PageMap::kMaxPages) {
      Usage(env, "a page list must have 1.." + std::to_string(PageMap::kMaxPages) + " pages, not " + std::to_string(a.ElementLength()));
    }
    std::vector<uint64_t> pfns(a.ElementLength());
    for (size_t i = 0; i < pfns.size(); i++) {
      double d = a[i];
      if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<uint64_t>(d))) {
        Usage(env, "PFN " + std::to_string(i) + " is not a non-negative integer");
      }
      pfns[i] = static_cast<uint64_t>(d);
    }
    std::shared_ptr<PageMap> map = Guard(env, [&] { return std::shared_ptr<PageMap>(PageMap::Create(Part(env).ram(), pfns)); });
    const void* data = map->data();
    // The registry entry goes with the mapping (its deleter), not with the buffer object.
    std::shared_ptr<PageMap> tracked(map.get(), [map](PageMap*) mutable {
      std::lock_guard<std::mutex> lock(g_page_maps_mutex);
      g_page_maps.erase(map->data());
      map.reset();
    });
    {
      std::lock_guard<std::mutex> lock(g_page_maps_mutex);
      g_page_maps.insert(data);
    }
    return Guard(env, [&] { return NewExternalBuffer(env, map->data(), map->size(), std::move(tracked)); });
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  // Stops and joins the vCPU threads, closes the VM's fds, releases the threadsafe function.
  // Idempotent; runs from close(), the environment's cleanup and the destructor, so it never
  // throws.
  void Shutdown() noexcept {
    try {
      if (partition_) {
        partition_->StopAll();
        partition_.reset();  // no vCPU thread can notify after this
      }
    } catch (...) {
    }
    if (!released_) {
      released_ = true;
      tsfn_.Release();
    }
  }

  std::unique_ptr<KvmPartition> partition_;
  std::shared_ptr<ExitChannel> channel_;
  Napi::Reference<Napi::Array> ram_buffers_;
  std::map<uint64_t, Napi::Reference<Napi::Array>> added_buffers_;  // addRam regions by GPA
  Napi::Reference<Napi::ArrayBuffer> exit_buffer_;
  ExitTsfn tsfn_;
  bool refd_ = false;
  bool released_ = false;
  EnvCleanupHook<PartitionWrap> cleanup_;
};


// ---- EventfdWatcher: doorbell eventfds reported to JS without a timer ------------------------

struct WatcherContext {
  std::shared_ptr<EventfdWatcher> watcher;
};

void CallWatcherJs(Napi::Env env, Napi::Function callback, WatcherContext* ctx, void*) {
  if (env == nullptr || callback.IsEmpty() || !ctx->watcher) return;
  std::vector<int> fds = ctx->watcher->TakeReady();
  if (fds.empty()) return;
  // Raw napi calls, as in CallJs: nothing here may throw.
  napi_value a = nullptr;
  napi_value undefined = nullptr;
  if (napi_create_array_with_length(env, fds.size(), &a) != napi_ok || napi_get_undefined(env, &undefined) != napi_ok) return;
  for (size_t i = 0; i < fds.size(); i++) {
    napi_value n = nullptr;
    if (napi_create_int32(env, fds[i], &n) != napi_ok || napi_set_element(env, a, static_cast<uint32_t>(i), n) != napi_ok) return;
  }
  napi_call_function(env, undefined, callback, 1, &a, nullptr);
}

using WatcherTsfn = Napi::TypedThreadSafeFunction<WatcherContext, void, CallWatcherJs>;

class WatcherWrap : public Napi::ObjectWrap<WatcherWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "EventfdWatcher",
                       {InstanceMethod<&WatcherWrap::Add>("add"), InstanceMethod<&WatcherWrap::Rearm>("rearm"),
                        InstanceMethod<&WatcherWrap::Remove>("remove"), InstanceMethod<&WatcherWrap::Close>("close")});
  }

  explicit WatcherWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<WatcherWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) Usage(env, "new EventfdWatcher(callback)");
    ctx_ = new WatcherContext();
    tsfn_ = WatcherTsfn::New(env, info[0].As<Napi::Function>(), "hvemu-eventfd-watcher", 0, 1, ctx_,
                             [](Napi::Env, void*, WatcherContext* c) { delete c; });
    tsfn_.Unref(env);  // watching alone does not keep the process alive; running vCPUs do
    WatcherTsfn* tsfn = &tsfn_;
    try {
      ctx_->watcher = std::make_shared<EventfdWatcher>([tsfn] { tsfn->NonBlockingCall(); });
    } catch (const HostError& e) {
      released_ = true;
      tsfn_.Release();
      ThrowJs(env, e);
    }
    // As PartitionWrap: the epoll thread is joined and the threadsafe function released before
    // Node tears the environment down.
    cleanup_.Register(env, this);
  }

  ~WatcherWrap() {
    cleanup_.Unregister();
    Shutdown();
  }

 private:
  friend class EnvCleanupHook<WatcherWrap>;

  Napi::Value Add(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (released_) Usage(env, "the eventfd watcher is closed");
    int fd = static_cast<int>(ToU32(env, info[0], "eventfd"));
    if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsBoolean()) Usage(env, "add(fd, oneShot): oneShot must be a boolean");
    bool one_shot = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    try {
      ctx_->watcher->Add(fd, one_shot);
    } catch (const HostError& e) {
      ThrowJs(env, e);
    }
    return env.Undefined();
  }

  Napi::Value Rearm(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (released_) Usage(env, "the eventfd watcher is closed");
    int fd = static_cast<int>(ToU32(env, info[0], "fd"));
    try {
      ctx_->watcher->Rearm(fd);
    } catch (const HostError& e) {
      ThrowJs(env, e);
    }
    return env.Undefined();
  }

  Napi::Value Remove(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!released_) ctx_->watcher->Remove(static_cast<int>(ToU32(env, info[0], "eventfd")));
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  void Shutdown() noexcept {
    if (released_) return;
    released_ = true;
    try {
      ctx_->watcher->Stop();  // joined: no notify can race the release below
    } catch (...) {
    }
    tsfn_.Release();
  }

  WatcherContext* ctx_ = nullptr;
  WatcherTsfn tsfn_;
  bool released_ = false;
  EnvCleanupHook<WatcherWrap> cleanup_;
};

Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  KvmProbe p = ProbeKvm();
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", Napi::Boolean::New(env, p.ok));
  o.Set("code", Napi::String::New(env, p.code));
  o.Set("message", Napi::String::New(env, p.message));
  return o;
}

// Detaches an ArrayBuffer made by mapPages, which runs its finalizer (the munmap) now.
Napi::Value UnmapPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArrayBuffer()) Usage(env, "unmapPages(ArrayBuffer)");
  Napi::ArrayBuffer b = info[0].As<Napi::ArrayBuffer>();
  if (b.IsDetached()) return env.Undefined();  // unmapped already
  {
    std::lock_guard<std::mutex> lock(g_page_maps_mutex);
    if (b.ByteLength() == 0 || g_page_maps.count(b.Data()) == 0) Usage(env, "unmapPages: the buffer is not a page-list view");
  }
  b.Detach();
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("probeKvm", Napi::Function::New(env, Probe));
  exports.Set("unmapPages", Napi::Function::New(env, UnmapPages));
  exports.Set("KvmPartition", PartitionWrap::Init(env));
  exports.Set("EventfdWatcher", WatcherWrap::Init(env));
  RegisterFileIo(env, exports);
  RegisterFrameIo(env, exports);
  RegisterFrameWriter(env, exports);
  Napi::Object layout = Napi::Object::New(env);
  layout.Set("headerSize", Napi::Number::New(env, kHeaderSize));
  layout.Set("slotSize", Napi::Number::New(env, kSlotSize));
  layout.Set("slotDataOffset", Napi::Number::New(env, kSlotDataOffset));
  exports.Set("layout", layout);
  return exports;
}

}  // namespace
}  // namespace hvemu

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return hvemu::Init(env, exports); }
NODE_API_MODULE(hvemu_native, InitModule)
