// FrameWriter: a thread of its own that writes batches of packed frames to a packet fd (a TAP),
// so that the JS thread's work on the next frames overlaps the write(2)s of the last ones (a
// TAP takes one frame per write; those calls were about a third of a guest frame's cost).
//
// JS hands over a fixed set of slots once, at construction: slot k is buffers[k] (frames back
// to back) with lengths[k], and four status words status[4k..4k+3] = state, frames consumed,
// frames refused with an error, the last errno. The writer keeps strong references to all of
// them for its lifetime, so nothing it may touch can be collected. submit(k, count) queues
// slot k; the thread writes queued slots in submission order, fills in the status words and
// stores state DONE last (release order: a JS Atomics.load that sees DONE sees the counts), then
// calls onDone() on the JS thread. EAGAIN is waited out on the writer thread (poll), never on
// the event loop. close() writes what is queued (without waiting on EAGAIN) and joins.
#include "frame_writer.h"

#include "napi_util.h"
#include "packed_write.h"

#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace hvemu {
namespace {

constexpr int32_t kSlotIdle = 0;
constexpr int32_t kSlotQueued = 1;
constexpr int32_t kSlotDone = 2;
constexpr uint32_t kStatusWords = 4;
constexpr uint32_t kMaxSlots = 64;
// How long one poll for POLLOUT waits before the stop flag is looked at again.
constexpr int kPollMs = 50;
// After a batch of at least kBusyBatch frames (busy traffic), the thread naps this long up to
// kNaps times before it sleeps until woken; after a smaller one (a quiet link) it sleeps at once.
constexpr useconds_t kNapUs = 50;
constexpr int kNaps = 40;
constexpr uint32_t kBusyBatch = 32;

struct Slot {
  const uint8_t* data;
  size_t bytes;
  const uint32_t* lengths;
  uint32_t max_count;
  uint32_t count = 0;
};

// The thread and its queue; no Node-API in here.
class Writer {
 public:
  Writer(int fd, std::vector<Slot> slots, int32_t* status, std::function<void()> notify)
      : fd_(fd), slots_(std::move(slots)), status_(status), notify_(std::move(notify)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~Writer() { Stop(); }

  // Caller (the JS thread) checked the slot is not queued and count fits it.
  void Submit(uint32_t slot, uint32_t count) {
    slots_[slot].count = count;
    __atomic_store_n(&status_[slot * kStatusWords], kSlotQueued, __ATOMIC_RELEASE);
    bool asleep;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(slot);
      asleep = sleeping_;
    }
    if (asleep) wake_.notify_one();
  }

  // Writes what is queued (no EAGAIN waits once stopping), then joins. Idempotent.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) {
        if (thread_.joinable()) thread_.join();
        return;
      }
      stopping_ = true;
    }
    stop_.store(true);
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    pthread_setname_np(pthread_self(), "hvemu-frames");  // for top -H, /proc/*/task/*/comm
    int naps_left = 0;
    for (;;) {
      uint32_t slot;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (queue_.empty() && !stopping_ && naps_left > 0) {
          // Busy traffic: nap instead of sleeping on the condition variable, so the JS thread's
          // next submit finds this thread awake and need not wake it (a wake-up costs the JS
          // thread an IPI, and often its CPU: the woken thread tends to land there).
          lock.unlock();
          usleep(kNapUs);
          naps_left--;
          continue;
        }
        sleeping_ = true;
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        sleeping_ = false;
        if (queue_.empty()) return;  // stopping, and everything queued is written
        slot = queue_.front();
        queue_.pop_front();
      }
      // Read before WriteSlot publishes DONE: from then on the JS thread may submit the slot again.
      bool busy = slots_[slot].count >= kBusyBatch;
      WriteSlot(slot);
      naps_left = busy ? kNaps : 0;
      notify_();
    }
  }

  void WriteSlot(uint32_t index) {
    const Slot& s = slots_[index];
    int32_t* st = &status_[index * kStatusWords];
    // EAGAIN: wait for room on this thread; once stopping, the rest is not consumed.
    PackedWriteResult r = WritePacked(fd_, s.data, s.bytes, s.lengths, s.count, [this] { return WaitWritable(); });
    st[1] = static_cast<int32_t>(r.consumed);
    st[2] = r.failed;
    st[3] = r.last_errno;
    __atomic_store_n(&st[0], kSlotDone, __ATOMIC_RELEASE);
  }

  // False when the writer is stopping (the frame is not waited for).
  bool WaitWritable() {
    while (!stop_.load()) {
      pollfd p = {fd_, POLLOUT, 0};
      int r = poll(&p, 1, kPollMs);
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return true;  // let write() report the error
    }
    return false;
  }

  int fd_;
  std::vector<Slot> slots_;
  int32_t* status_;
  std::function<void()> notify_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<uint32_t> queue_;
  bool stopping_ = false;
  bool sleeping_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct WriterContext {};

void CallDoneJs(Napi::Env env, Napi::Function callback, WriterContext*, void*) {
  if (env == nullptr || callback.IsEmpty()) return;
  napi_value undefined = nullptr;
  if (napi_get_undefined(env, &undefined) != napi_ok) return;
  napi_call_function(env, undefined, callback, 0, nullptr, nullptr);  // nothing here may throw
}

using DoneTsfn = Napi::TypedThreadSafeFunction<WriterContext, void, CallDoneJs>;

class FrameWriterWrap : public Napi::ObjectWrap<FrameWriterWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "FrameWriter",
                       {InstanceMethod<&FrameWriterWrap::Submit>("submit"), InstanceMethod<&FrameWriterWrap::Close>("close")});
  }

  // new FrameWriter(fd, buffers: Uint8Array[], lengths: Uint32Array[], status: Int32Array, onDone)
  explicit FrameWriterWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FrameWriterWrap>(info) {
    Napi::Env env = info.Env();
    const std::string call = "new FrameWriter(fd, buffers, lengths, status, onDone)";
    if (info.Length() < 5) ThrowUsage(env, call + ": five arguments");
    int fd = FdArg(env, info[0], call);
    if (!info[1].IsArray() || !info[2].IsArray()) ThrowUsage(env, call + ": buffers and lengths must be arrays");
    Napi::Array buffers = info[1].As<Napi::Array>();
    Napi::Array lengths = info[2].As<Napi::Array>();
    uint32_t count = buffers.Length();
    if (count == 0 || count > kMaxSlots || lengths.Length() != count) {
      ThrowUsage(env, call + ": buffers and lengths must have the same length, 1 to " + std::to_string(kMaxSlots));
    }
    if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
        info[3].As<Napi::Int32Array>().ElementLength() < count * kStatusWords) {
      ThrowUsage(env, call + ": status must be an Int32Array of 4 words per slot");
    }
    if (!info[4].IsFunction()) ThrowUsage(env, call + ": onDone must be a function");
    std::vector<Slot> slots;
    for (uint32_t i = 0; i < count; i++) {
      Napi::Value b = buffers.Get(i);
      Napi::Value l = lengths.Get(i);
      if (!b.IsTypedArray() || b.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) ThrowUsage(env, call + ": buffers[" + std::to_string(i) + "] must be a Uint8Array");
      if (!l.IsTypedArray() || l.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) ThrowUsage(env, call + ": lengths[" + std::to_string(i) + "] must be a Uint32Array");
      Napi::Uint8Array buffer = b.As<Napi::Uint8Array>();
      Napi::Uint32Array length = l.As<Napi::Uint32Array>();
      slots.push_back(Slot{buffer.Data(), buffer.ByteLength(), length.Data(), static_cast<uint32_t>(length.ElementLength())});
      // Strong references for the writer's lifetime: the thread reads these memories.
      refs_.push_back(Napi::Persistent(b.As<Napi::Object>()));
      refs_.push_back(Napi::Persistent(l.As<Napi::Object>()));
    }
    Napi::Int32Array status = info[3].As<Napi::Int32Array>();
    refs_.push_back(Napi::Persistent(info[3].As<Napi::Object>()));
    status_ = status.Data();
    status_words_ = status.ElementLength();
    for (uint32_t i = 0; i < count * kStatusWords; i++) status_[i] = 0;
    slot_count_ = count;
    max_counts_.reserve(count);
    for (const Slot& s : slots) max_counts_.push_back(s.max_count);
    ctx_ = new WriterContext();
    tsfn_ = DoneTsfn::New(env, info[4].As<Napi::Function>(), "hvemu-frame-writer", 0, 1, ctx_,
                          [](Napi::Env, void*, WriterContext* c) { delete c; });
    tsfn_.Unref(env);  // queued frames alone do not keep the process alive
    DoneTsfn* tsfn = &tsfn_;
    try {
      writer_ = std::make_unique<Writer>(fd, std::move(slots), status_, [tsfn] { tsfn->NonBlockingCall(); });
    } catch (const std::exception& e) {
      released_ = true;
      tsfn_.Release();
      ThrowUsage(env, std::string("FrameWriter: cannot start its thread: ") + e.what());
    }
    cleanup_.Register(env, this);
  }

  ~FrameWriterWrap() {
    cleanup_.Unregister();
    Shutdown();
  }

  // Joins the thread first (it may still read the slots), then lets the slots go.
  void Shutdown() noexcept {
    if (released_) return;
    released_ = true;
    try {
      writer_->Stop();
    } catch (...) {
    }
    tsfn_.Release();
    for (auto& r : refs_) r.Reset();
  }

 private:

  // submit(slot, count): queues slot `slot` with its first `count` frames.
  Napi::Value Submit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const std::string call = "submit(slot, count)";
    if (released_) ThrowUsage(env, "the frame writer is closed");
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) ThrowUsage(env, call + ": two numbers");
    double slot = info[0].As<Napi::Number>().DoubleValue();
    double count = info[1].As<Napi::Number>().DoubleValue();
    if (!(slot >= 0 && slot < slot_count_) || slot != static_cast<double>(static_cast<uint32_t>(slot))) ThrowUsage(env, call + ": no such slot");
    uint32_t k = static_cast<uint32_t>(slot);
    if (!(count >= 0 && count <= max_counts_[k]) || count != static_cast<double>(static_cast<uint32_t>(count))) {
      ThrowUsage(env, call + ": count must be an integer from 0 to the slot's lengths");
    }
    if (__atomic_load_n(&status_[k * kStatusWords], __ATOMIC_ACQUIRE) == kSlotQueued) ThrowUsage(env, call + ": the slot is still queued");
    writer_->Submit(k, static_cast<uint32_t>(count));
    return env.Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  std::unique_ptr<Writer> writer_;
  std::vector<Napi::ObjectReference> refs_;
  std::vector<uint32_t> max_counts_;
  int32_t* status_ = nullptr;
  size_t status_words_ = 0;
  uint32_t slot_count_ = 0;
  WriterContext* ctx_ = nullptr;
  DoneTsfn tsfn_;
  bool released_ = false;
  EnvCleanupHook<FrameWriterWrap> cleanup_;
};

}  // namespace

void RegisterFrameWriter(Napi::Env env, Napi::Object exports) { exports.Set("FrameWriter", FrameWriterWrap::Init(env)); }

}  // namespace hvemu
