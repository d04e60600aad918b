// Reading the validated argument objects of src/*.ts in C++. The TypeScript layer has checked every shape
// and option; these checks repeat only what memory safety depends on (array classes, lengths, indices), so a
// caller that bypasses the TypeScript layer gets a TypeError or RangeError, never an out-of-bounds access.
//
// Read once, then check, then run: the argument object is read in full first (Snapshot: every property,
// and those of its plain-object values, each read once, so getters and Proxy traps run before any check),
// and nothing after the snapshot runs JavaScript. Sizes are 64-bit and their products checked.
//
// What the kernel reads: integer arrays (indices, offsets, masks) are always copied before they are checked,
// so neither a later change nor another thread writing a SharedArrayBuffer can move an index out of range
// after its check. Float arrays are read in place by a sync call (no JavaScript runs until it returns) and
// copied by an async one (Placement::copy), so a buffer changed, detached, transferred or resized while the
// job runs is never read by it.
//
// The same reader serves both native backends. For the cpu backend the pointers are into the host arrays or
// the job's copies. For the cuda backend (a GpuCall is given) a host typed array is checked here and
// uploaded (through a pinned copy, which is what the checks read), and a device tensor `{ device: handle }`
// has its indices checked by the kernel (a device flag, then a RangeError); the pointers are device pointers.
#pragma once
#include <napi.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "env.h"
#include "gpu.h"
#include "rlhf/common.h"

namespace rk::addon {


// The names of common.h's enum lists in ordinal order: an enum option arrives as its index (Args::choice).
inline constexpr const char* kReductions[] = {RK_REDUCTIONS(RK_ENUM_NAME)};
inline constexpr const char* kAggregations[] = {RK_AGGREGATIONS(RK_ENUM_NAME)};

// The largest element count or size the addon accepts: 2^53 - 1, the exact integers of a JS number.
constexpr int64_t kMaxCount = (int64_t(1) << 53) - 1;

// Host blocks for the copies of async calls' inputs, reused across calls (process-wide, any thread): a fresh
// block costs a page fault per 4 KiB on first touch, several times the copy itself at a few MB and more, and
// a reused one only the copy. At most kCachedBytes are kept while unused.
class CopyPool {
 public:
  static constexpr size_t kCachedBytes = size_t(512) << 20;
  static CopyPool& instance() {
    static CopyPool* pool = new CopyPool;  // never destroyed: a job may still finish during exit
    return *pool;
  }
  // A block of at least `bytes` (at most twice that when it is a cached one); throws std::bad_alloc.
  std::pair<char*, size_t> take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      size_t best = free_.size();
      for (size_t i = 0; i < free_.size(); i++) {
        const size_t n = free_[i].second;
        if (n >= bytes && n / 2 <= bytes && (best == free_.size() || n < free_[best].second)) best = i;
      }
      if (best < free_.size()) {
        auto block = free_[best];
        free_.erase(free_.begin() + std::ptrdiff_t(best));
        cached_ -= block.second;
        return block;
      }
    }
    return {new char[bytes], bytes};
  }
  void give(std::pair<char*, size_t> block) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + block.second <= kCachedBytes) {
        free_.push_back(block);
        cached_ += block.second;
        return;
      }
    }
    delete[] block.first;
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<char*, size_t>> free_;
  size_t cached_ = 0;
};

// Keeps what a job reads or writes alive until it is done (async jobs run on the libuv pool): the JS objects
// it writes (outputs), and the copies of inputs it reads.
class Pins {
 public:
  Pins() = default;
  Pins(const Pins&) = delete;
  Pins& operator=(const Pins&) = delete;
  ~Pins() {
    for (auto& block : copies_) CopyPool::instance().give(block);
  }
  void pin(const Napi::Value& v) {
    if (v.IsObject()) refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }
  // A copy of `bytes` bytes that lives as long as the job.
  const void* copy(const void* from, size_t bytes) {
    void* block = scratch(bytes);
    std::memcpy(block, from, bytes);
    return block;
  }
  // A block of `bytes` bytes (from the copy pool) that lives as long as the job.
  void* scratch(size_t bytes) {
    copies_.reserve(copies_.size() + 1);  // so that push_back cannot throw with the block taken
    copies_.push_back(CopyPool::instance().take(bytes));
    return copies_.back().first;
  }
  // The host memory of an input (as the caller gave it, before any copy): caller-provided outputs must not
  // share a byte with one (Outputs::check_given).
  struct Range {
    const char* key;
    const char* begin;
    const char* end;
  };
  void note_input(const char* key, const void* data, size_t bytes) {
    if (bytes > 0) inputs_.push_back({key, static_cast<const char*>(data), static_cast<const char*>(data) + bytes});
  }
  const std::vector<Range>& inputs() const { return inputs_; }

 private:
  std::vector<Napi::ObjectReference> refs_;
  std::vector<std::pair<char*, size_t>> copies_;
  std::vector<Range> inputs_;
};

// A typed array as the engine describes it now (no JavaScript runs to read this).
struct TypedView {
  napi_typedarray_type type = napi_int8_array;
  size_t length = 0;  // elements (0 once detached, or out of bounds of a shrunk resizable buffer)
  void* data = nullptr;
};

inline TypedView view_of(const Napi::TypedArray& a) {
  TypedView v{};
  napi_value buffer;
  size_t offset;
  if (napi_get_typedarray_info(a.Env(), a, &v.type, &v.length, &v.data, &buffer, &offset) != napi_ok) {
    throw coded_error(a.Env(), "ERR_NATIVE", "cannot read a typed array");
  }
  return v;
}

// The element data of a typed array, offset included (never through ArrayBuffer(): it may be shared).
inline void* data_of(const Napi::TypedArray& a) { return view_of(a).data; }

// An argument object read once: each enumerable property's value (for ... in order), and the same for every
// value that is a plain object (float inputs, layout, agg, device tensors), to `depth` levels.
//
// The reading is done by a JavaScript function made once per env (job.h snapshot(), kSnapshotReader), which
// returns the keys and values as one flat array: [key, value, …], and for a value it read into, the marker 0,
// then key, value and that value's own flat array. The N-API way (the key accumulator, then one
// napi_get_property per key) cost about half of a small call (issue 13). Every getter and Proxy trap still runs
// in the reading, before any check; this side then reads only that fresh array, which no caller can reach.
// Whether a nested value counts as an object is decided again here (plain_object), so the reader's own test
// only saves reading into typed arrays and arrays.
inline constexpr const char* kSnapshotReader = R"((function () {
  'use strict'
  const isView = ArrayBuffer.isView
  const isArray = Array.isArray
  const read = (o, depth) => {
    const out = []
    for (const key in o) {
      const value = o[key]
      if (depth > 0 && typeof value === 'object' && value !== null && !isView(value) && !isArray(value)) out.push(0, key, value, read(value, depth - 1))
      else out.push(key, value)
    }
    return out
  }
  return read
})())";

class Snapshot {
 public:
  struct Entry {
    std::string key;
    Napi::Value value;
    std::unique_ptr<Snapshot> object;  // the value's own snapshot, when it is a plain object
  };
  // `flat`: what kSnapshotReader returned. A key arrives in one call into a stack buffer (N-API cuts a long key
  // at a character boundary, so up to 3 bytes may stay unused: a key of 60 bytes or more is read again in full).
  Snapshot(Napi::Env env, Napi::Array flat) {
    const uint32_t n = flat.Length();
    entries_.reserve(n / 2);
    for (uint32_t i = 0; i < n;) {
      Napi::Value key = flat.Get(i++);
      char name[64];
      size_t length = 0;
      const bool nested = !key.IsString();  // the marker 0: key, value, then the value's flat array
      if (nested) key = flat.Get(i++);
      if (napi_get_value_string_utf8(env, key, name, sizeof name, &length) != napi_ok) throw_type(env, "rlhf-kernels", "argument snapshot: a key is not a string");
      Entry e{length + 4 < sizeof name ? std::string(name, length) : key.As<Napi::String>().Utf8Value(), flat.Get(i++), nullptr};
      if (nested) {
        Napi::Value inner = flat.Get(i++);
        if (!inner.IsArray()) throw_type(env, "rlhf-kernels", "argument snapshot: a nested object was not read");
        if (plain_object(env, e.value)) e.object = std::make_unique<Snapshot>(env, inner.As<Napi::Array>());
      }
      entries_.push_back(std::move(e));
    }
  }
  const Entry* find(const char* key) const {
    const size_t n = std::strlen(key);  // once, not per entry
    for (const Entry& e : entries_) if (e.key.size() == n && std::memcmp(e.key.data(), key, n) == 0) return &e;
    return nullptr;
  }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  // An object that is not a typed array, an array, an ArrayBuffer or a DataView (a function is not one).
  static bool plain_object(napi_env env, napi_value v) {
    napi_valuetype type;
    bool is = false;
    if (napi_typeof(env, v, &type) != napi_ok || type != napi_object) return false;
    if (napi_is_typedarray(env, v, &is) != napi_ok || is) return false;
    if (napi_is_array(env, v, &is) != napi_ok || is) return false;
    if (napi_is_arraybuffer(env, v, &is) != napi_ok || is) return false;
    return napi_is_dataview(env, v, &is) == napi_ok && !is;
  }
  std::vector<Entry> entries_;
};

// Where the kernel reads a float input: in place (sync cpu calls), or a copy the job owns (async cpu calls).
enum class Placement { in_place, copy };

class Args {
 public:
  Args(Napi::Env env, const char* op, const Snapshot& s, Pins& pins, Placement placement, GpuCall* gpu = nullptr)
      : env_(env), op_(op), s_(s), pins_(pins), placement_(placement), gpu_(gpu) {}
  Napi::Env env() const { return env_; }
  const char* op() const { return op_; }

  bool has(const char* key) const {
    Napi::Value v = get(key);
    return !v.IsUndefined() && !v.IsNull();
  }

  double number(const char* key) const {
    Napi::Value v = get(key);
    if (!v.IsNumber()) throw_type(env_, op_, std::string(key) + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  }
  bool is_number(const char* key) const { return get(key).IsNumber(); }
  double number_or(const char* key, double fallback) const { return has(key) ? number(key) : fallback; }
  int64_t count(const char* key) const {
    const double d = number(key);
    if (!(d >= 0 && d <= double(kMaxCount)) || d != double(int64_t(d))) throw_range(env_, op_, std::string(key) + " must be a count");
    return int64_t(d);
  }
  int32_t int32(const char* key) const {
    const double d = number(key);
    if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != double(int32_t(d))) throw_range(env_, op_, std::string(key) + " must be an int32");
    return int32_t(d);
  }
  // a * b, the element count of an [a, b] input: a RangeError beyond kMaxCount
  int64_t product(const char* what, int64_t a, int64_t b) const {
    int64_t p;
    if (__builtin_mul_overflow(a, b, &p) || p > kMaxCount) {
      throw_range(env_, op_, std::string(what) + " has " + std::to_string(a) + " x " + std::to_string(b) + " elements, more than 2^53 - 1");
    }
    return p;
  }
  bool boolean(const char* key) const {
    Napi::Value v = get(key);
    if (!v.IsBoolean()) throw_type(env_, op_, std::string(key) + " must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }
  std::string string(const char* key) const {
    Napi::Value v = get(key);
    if (!v.IsString()) throw_type(env_, op_, std::string(key) + " must be a string");
    return v.As<Napi::String>().Utf8Value();
  }
  // An enum option, passed as its ordinal: the index of its name in `names` (the list of src/choices.ts).
  template <typename E, size_t N>
  E choice(const char* key, const char* const (&names)[N]) const {
    const double d = number(key);
    if (!(d >= 0 && d < double(N)) || d != double(int32_t(d))) {
      std::string list;
      for (size_t i = 0; i < N; i++) list += (i ? ", " : "") + std::to_string(i) + " " + names[i];
      throw_range(env_, op_, std::string(key) + " must be the ordinal of one of " + list);
    }
    return E(int32_t(d));
  }
  // An option that can be disabled: its number, or NaN (off, common.h is_on) when absent or null.
  double optional(const char* key) const {
    if (!has(key)) return NAN;
    const double d = number(key);
    if (d != d) throw_range(env_, op_, std::string(key) + " must be a number, or null for off");
    return d;
  }
  Args object(const char* key) const {
    const Snapshot::Entry* e = s_.find(key);
    if (e == nullptr || !e->object) throw_type(env_, op_, std::string(key) + " must be an object");
    return Args(env_, op_, *e->object, pins_, placement_, gpu_);
  }
  bool on_gpu() const { return gpu_ != nullptr; }

  // A { data, dtype } float input with exactly `length` elements (length < 0: any).
  FloatIn floats(const char* key, int64_t length) const {
    const Snapshot::Entry* e = s_.find(key);
    if (e == nullptr || !e->object) throw_type(env_, op_, std::string(key) + " must be a float input");
    const Args f = object(key);
    const std::string dtype = f.get("dtype").IsString() ? f.string("dtype") : "";
    FloatIn in;
    napi_typedarray_type want;
    if (dtype == "float32") { in.dtype = DType::f32; want = napi_float32_array; }
    else if (dtype == "float64") { in.dtype = DType::f64; want = napi_float64_array; }
    else if (dtype == "bfloat16") { in.dtype = DType::bf16; want = napi_uint16_array; }
    else if (dtype == "float16") { in.dtype = DType::f16; want = napi_uint16_array; }
    else throw_type(env_, op_, std::string(key) + ".dtype must be a float dtype");
    const size_t es = in.dtype == DType::f64 ? 8 : in.dtype == DType::f32 ? 4 : 2;
    const void* device = nullptr;
    TypedView host;
    if (!f.device_input(key, es, in.size, device)) {
      Napi::Value data = f.get("data");
      if (!data.IsTypedArray()) throw_type(env_, op_, std::string(key) + ".data must be a typed array");
      host = view_of(data.As<Napi::TypedArray>());
      if (host.type != want) throw_type(env_, op_, std::string(key) + ".data does not match its dtype " + dtype);
      in.size = int64_t(host.length);
      pins_.note_input(key, host.data, host.length * es);
    }
    if (length >= 0 && in.size != length) throw_length(key, length, in.size);
    in.data = device ? device : place(host.data, host.length * es, placement_ == Placement::copy);
    static const double empty = 0;
    if (in.data == nullptr) in.data = &empty;  // a given but empty input is present(), and never read
    return in;
  }
  FloatIn floats_or_absent(const char* key, int64_t length) const { return has(key) ? floats(key, length) : FloatIn{}; }

  // An integer array of exactly `length` elements (length < 0: any), copied (see the top of this file).
  template <typename E, napi_typedarray_type Want>
  const E* typed(const char* key, int64_t length, const char* what, int64_t* size = nullptr) const {
    Napi::Value v = get(key);
    const void* device = nullptr;
    int64_t n = 0;
    if (v.IsObject() && !v.IsTypedArray() && has_object(key) && object(key).device_input(key, sizeof(E), n, device)) {
      if (length >= 0 && n != length) throw_length(key, length, n);
      if (size) *size = n;
      return static_cast<const E*>(device);
    }
    if (!v.IsTypedArray()) throw_type(env_, op_, std::string(key) + " must be " + what);
    const TypedView a = view_of(v.As<Napi::TypedArray>());
    if (a.type != Want) throw_type(env_, op_, std::string(key) + " must be " + what);
    if (length >= 0 && int64_t(a.length) != length) throw_length(key, length, int64_t(a.length));
    if (size) *size = int64_t(a.length);
    pins_.note_input(key, a.data, a.length * sizeof(E));
    return static_cast<const E*>(place(a.data, a.length * sizeof(E), true));
  }

  // The host copy of an array this reader returned: itself on the cpu backend (a copy for integer arrays),
  // the pinned copy that was uploaded on the cuda backend, null for a device tensor (nothing to check).
  template <typename E>
  const E* host_view(const E* p) const {
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu_) return static_cast<const E*>(gpu_->host_of(p));
#endif
    return p;
  }
  const int32_t* int32s(const char* key, int64_t length) const {
    return typed<int32_t, napi_int32_array>(key, length, "an Int32Array");
  }
  // offsets: an Int32Array of any length ≥ 1 (n + 1 entries for n groups), its entry count in `n`
  const int32_t* offsets(const char* key, int64_t& n) const { return typed<int32_t, napi_int32_array>(key, -1, "an Int32Array", &n); }
  // a 0/1 Uint8Array of `length`, or null
  const uint8_t* mask(const char* key, int64_t length) const {
    if (!has(key)) return nullptr;
    const uint8_t* m = typed<uint8_t, napi_uint8_array>(key, length, "a Uint8Array");
    // a device mask counts a token where it is nonzero, as the TypeScript layer reads every mask
    if (const uint8_t* h = host_view(m)) {
      for (int64_t i = 0; i < length; i++) if (h[i] > 1) throw_range(env_, op_, std::string(key) + " must hold 0 or 1");
    }
    return m;
  }

  // Every index in [0, limit) or equal to `ignore` (when allowed); the first bad row is named.
  // Device indices are checked by the kernel, which flags the first bad row for the binding to name.
  void check_indices(const char* key, const int32_t* idx, int64_t n, int64_t limit, bool has_ignore, int32_t ignore) const {
    const std::string expected = "in [0, " + std::to_string(limit) + ")" + (has_ignore ? " or equal to ignoreIndex (" + std::to_string(ignore) + ")" : "");
    idx = host_view(idx);
    if (idx == nullptr) return device_indices(key, expected);
    for (int64_t i = 0; i < n; i++) {
      const int32_t y = idx[i];
      if ((y < 0 || y >= limit) && !(has_ignore && y == ignore)) {
        throw_range(env_, op_, std::string(key) + "[" + std::to_string(i) + "] must be " + expected + ", got " + std::to_string(y));
      }
    }
  }
  // Each group's label (host data) in [0, K_n) for its K_n = offsets[n+1] − offsets[n], or equal to ignore;
  // the first bad group is named (rewardLoss's and preferenceLoss's chosen).
  void check_group_labels(const char* key, const int32_t* labels, const int32_t* offsets, int64_t groups, int32_t ignore) const {
    for (int64_t n = 0; n < groups; n++) {
      const int32_t b = labels[n];
      const int64_t K = offsets[n + 1] - offsets[n];
      if ((b < 0 || b >= K) && b != ignore) {
        throw_range(env_, op_, std::string(key) + "[" + std::to_string(n) + "] must be in [0, " + std::to_string(K) + ") or equal to ignoreIndex, got " + std::to_string(b));
      }
    }
  }
  // Indices on the device: the kernel flags the first bad one; this names the array and its valid range.
  void device_indices(const std::string& key, const std::string& expected) const {
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu_) gpu_->device_indices(key, expected);
#endif
    (void)key; (void)expected;
  }

  // offsets[0] = 0, non-decreasing, offsets[last] = total; n ≥ 1 entries
  void check_offsets(const char* key, const int32_t* off, int64_t n, int64_t total) const {
    off = host_view(off);
    if (n >= 1 && off == nullptr) throw_type(env_, op_, std::string(key) + " must be host data (an Int32Array), not a device tensor");
    if (n < 1 || off[0] != 0 || off[n - 1] != total) throw_range(env_, op_, std::string(key) + " must run from 0 to " + std::to_string(total));
    for (int64_t i = 1; i < n; i++) if (off[i] < off[i - 1]) throw_range(env_, op_, std::string(key) + " must be non-decreasing");
  }

  // the token layout, mask and aggregation shared by the per-token ops (src/policy.ts, TokenBatch)
  TokenBatch token_batch() const {
    TokenBatch b;
    Args layout = object("layout");
    b.tokens = layout.count("tokens");
    int64_t n = 0;
    b.offsets = layout.offsets("offsets", n);
    layout.check_offsets("layout.offsets", b.offsets, n, b.tokens);
    b.num_seqs = n - 1;
    b.width = layout.count("width");
    b.mask = mask("mask", b.tokens);
    if (has("agg")) {
      Args agg = object("agg");
      b.mode = agg.choice<Aggregation>("mode", kAggregations);
      b.global_tokens = agg.optional("globalTokenCount");
      b.global_seqs = agg.optional("globalSeqCount");
      b.norm_const = agg.optional("normConst");
    }
    return b;
  }

  // gradDtype: true for the logits' own 16-bit dtype (the kernels round the float32 gradient once)
  bool grad16(DType logits) const {
    if (!has("gradDtype") || string("gradDtype") == "float32") return false;
    if (logits != DType::bf16 && logits != DType::f16) throw_type(env_, op_, "gradDtype 'input' needs bfloat16 or float16 logits");
    return true;
  }

  Reduction reduction() const { return choice<Reduction>("reduction", kReductions); }

 private:
  Napi::Value get(const char* key) const {
    const Snapshot::Entry* e = s_.find(key);
    return e ? e->value : env_.Undefined();
  }
  bool has_object(const char* key) const {
    const Snapshot::Entry* e = s_.find(key);
    return e != nullptr && e->object != nullptr;
  }
  [[noreturn]] void throw_length(const char* key, int64_t want, int64_t got) const {
    throw_range(env_, op_, std::string(key) + " must have " + std::to_string(want) + " elements, got " + std::to_string(got));
  }
  // This object as a device tensor `{ device: handle }` (cuda backend only): its pointer and element count.
  bool device_input(const char* key, size_t es, int64_t& n, const void*& ptr) const {
    if (s_.find("device") == nullptr) return false;
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu_) {
      DeviceBlock* b = gpu_->env().unwrap(get("device"));
      if (b == nullptr) throw coded_error(env_, "ERR_DISPOSED", std::string(op_) + ": " + key + " is a disposed device tensor (or one of another thread)");
      pins_.pin(get("device"));
      n = int64_t(b->bytes / es);
      ptr = b->ptr;
      return true;
    }
#endif
    (void)es; (void)n; (void)ptr;
    throw_type(env_, op_, std::string(key) + " is a device tensor: it runs on the cuda backend only");
  }
  // Where the kernel reads a host array: in place or a copy the job owns (cpu), or uploaded (cuda).
  const void* place(const void* host, size_t bytes, bool copy) const {
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu_) return gpu_->upload(env_, host, bytes);
#endif
    // an empty input is present all the same (FloatIn::present): a non-null pointer that is never read
    static const char empty = 0;
    if (bytes == 0) return &empty;
    return copy ? pins_.copy(host, bytes) : host;
  }

  Napi::Env env_;
  const char* op_;
  const Snapshot& s_;
  Pins& pins_;
  Placement placement_;
  GpuCall* gpu_;
};

// Output arrays: V8 Float32Arrays made on the JS thread (so results are ordinary typed arrays), held (arrays_)
// for the job, written by the kernel.
//
// Caller-provided outputs (`out`, src/outputs.ts): when the arguments hold `out: { name: typedArray }`, make()
// returns the given array's memory instead of a new array (after checking its class and length), and the
// result holds the given array. A sync call writes into it directly (no JavaScript runs until it returns);
// an async one writes into a block of the copy pool, which deliver() copies into the array on the JS thread
// once the kernel is done, if the array still has its length (else ERR_OUTPUT_CHANGED): an array detached,
// transferred or shrunk meanwhile is never written. After prepare, check_given() refuses a given output the
// job did not make, or one sharing memory with an input or another output.
class Outputs {
 public:
  explicit Outputs(Napi::Env env, Pins& pins) : env_(env), pins_(pins) {}
  GpuCall* gpu = nullptr;  // cuda backend: outputs are device blocks (gpu.h)
  const char* op = "rlhf-kernels";  // the op, for error messages
  const Snapshot* given = nullptr;  // the arguments' `out` object, or null
  bool deferred = false;            // async: given outputs are written by deliver()
  float* make(const char* name, int64_t n) {
    if (void* p = from_given(name, n, napi_float32_array, sizeof(float), "a Float32Array")) return static_cast<float*>(p);
    host_fits(name, n, sizeof(float));
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu) return static_cast<float*>(gpu->output(env_, name, n));
#endif
    return fresh<float>(name, n);
  }
  // an output of n 16-bit elements of the logits' dtype (gradDtype 'input'): a Uint16Array of bit patterns
  uint16_t* make16(const char* name, int64_t n, DType dtype) {
    if (void* p = from_given(name, n, napi_uint16_array, sizeof(uint16_t), "a Uint16Array")) return static_cast<uint16_t*>(p);
    host_fits(name, n, sizeof(uint16_t));
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu) return static_cast<uint16_t*>(gpu->output(env_, name, n, dtype == DType::bf16 ? "bfloat16" : "float16"));
#endif
    (void)dtype;
    return fresh<uint16_t>(name, n);
  }
  // an output that becomes a host typed array (every one but a cuda call's device results) must fit one
  void host_fits(const char* name, int64_t n, size_t es) const {
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu && gpu->device_results()) return;
#endif
    check_host_array(env_, op, name, n, es);
  }
  // every output, under its name, in the order made
  void put(OutputList& list) const {
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu) return gpu->put(env_, list);
#endif
    for (size_t i = 0; i < names_.size(); i++) list.add(names_[i], arrays_[i].Value());
  }

  // After prepare: every given output was made by this call, and none shares a byte with an input or
  // another given output.
  void check_given() const {
    if (given == nullptr) return;
    for (const Snapshot::Entry& e : given->entries()) {
      if (e.value.IsUndefined() || e.value.IsNull()) continue;
      bool made = false;
      for (const Given& g : given_) made = made || e.key == g.name;
      if (!made) throw_type(env_, op, "out." + e.key + " must be absent: this call makes no " + e.key);
    }
    for (size_t i = 0; i < given_.size(); i++) {
      const Given& g = given_[i];
      const char* end = g.data + g.bytes;
      for (const Pins::Range& r : pins_.inputs()) {
        if (g.bytes > 0 && g.data < r.end && r.begin < end) throw_range(env_, op, std::string("out.") + g.name + " must not share memory with the input " + r.key);
      }
      for (size_t j = 0; j < i; j++) {
        const Given& h = given_[j];
        if (g.bytes > 0 && h.bytes > 0 && g.data < h.data + h.bytes && h.data < end) {
          throw_range(env_, op, std::string("out.") + g.name + " must not share memory with out." + h.name);
        }
      }
    }
  }
  // Async calls, on the JS thread after the kernel: the job's blocks copied into the given arrays, each
  // read again now (it may have been detached, transferred or resized while the kernel ran).
  void deliver() const {
    for (const Given& g : given_) {
      if (g.block == nullptr) continue;
      const TypedView now = view_of(arrays_[g.array].Value().As<Napi::TypedArray>());
      if (now.length * g.element != g.bytes || (g.bytes > 0 && now.data == nullptr)) {
        throw coded_error(env_, "ERR_OUTPUT_CHANGED", std::string(op) + ": out." + g.name + " was detached or resized while the call ran; the result was not written into it");
      }
      if (g.bytes > 0) std::memcpy(now.data, g.block, g.bytes);
    }
  }

 private:
  struct Given {
    const char* name;
    size_t array;      // its index in arrays_ (which keeps it alive)
    const char* data;  // the array's memory when checked
    size_t bytes;
    size_t element;
    void* block;       // async: where the kernel writes (copied into the array by deliver)
  };
  // A new host array of n elements, pinned and recorded as output `name`.
  template <typename E>
  E* fresh(const char* name, int64_t n) {
    Napi::TypedArrayOf<E> a = Napi::TypedArrayOf<E>::New(env_, size_t(n));
    names_.push_back(name);
    arrays_.push_back(Napi::Persistent(Napi::Object(a)));
    return a.Data();
  }
  // The given output `name` checked (class, length) and recorded, or null when none was given.
  void* from_given(const char* name, int64_t n, napi_typedarray_type want, size_t es, const char* what) {
    if (given == nullptr) return nullptr;
    const Snapshot::Entry* e = given->find(name);
    if (e == nullptr || e->value.IsUndefined() || e->value.IsNull()) return nullptr;
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu) throw_type(env_, op, "out is read by the cpu backend only");
#endif
    if (!e->value.IsTypedArray()) throw_type(env_, op, std::string("out.") + name + " must be " + what);
    Napi::TypedArray a = e->value.As<Napi::TypedArray>();
    const TypedView v = view_of(a);
    if (v.type != want) throw_type(env_, op, std::string("out.") + name + " must be " + what);
    if (int64_t(v.length) != n) {
      throw_range(env_, op, std::string("out.") + name + " must have " + std::to_string(n) + " elements, got " + std::to_string(v.length));
    }
    static char empty[16];
    const size_t bytes = size_t(n) * es;
    void* block = deferred && bytes > 0 ? pins_.scratch(bytes) : nullptr;
    given_.push_back({name, arrays_.size(), static_cast<const char*>(v.data), bytes, es, block});
    names_.push_back(name);
    arrays_.push_back(Napi::Persistent(Napi::Object(a)));
    return block ? block : bytes > 0 ? v.data : static_cast<void*>(empty);
  }

  Napi::Env env_;
  Pins& pins_;
  std::vector<const char*> names_;
  std::vector<Napi::ObjectReference> arrays_;
  std::vector<Given> given_;
};

}  // namespace rk::addon
