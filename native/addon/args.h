// Reading the validated argument objects of src/*.ts in C++. The TypeScript layer has checked every shape
// and option; these checks repeat only what memory safety depends on (array classes, lengths, indices), so a
// caller that bypasses the TypeScript layer gets a TypeError or RangeError, never an out-of-bounds access.
//
// Read once, then check, then run: the argument object is read in full first (Snapshot: every property,
// and those of its plain-object values, each read once, so getters and Proxy traps run before any check),
// and nothing after the snapshot runs JavaScript. Sizes are 64-bit and their products checked.
//
// What the kernel reads: index arrays (indices, labels, offsets) are always copied before they are checked,
// so neither a later change nor another thread writing a SharedArrayBuffer can move an index out of range
// after its check. Every other input is read in place by a sync call (no JavaScript runs until it returns)
// and copied by an async one (Placement::copy), so a buffer changed, detached, transferred or resized while
// the job runs is never read by it: float arrays, and masks. An async call reads these in place too when
// they are views of a SharedArrayBuffer (the job holds the view): such a buffer is never detached, never
// shrinks and never frees its memory while it is referenced, so only its values can change, as they can
// during a sync call (below). A mask is no index: every kernel counts a
// token (or row) where its byte is nonzero, and no size, offset or address is derived from its values, so
// memory safety does not depend on them; its 0/1 check (a RangeError for a caller that bypasses the
// TypeScript layer) is on the bytes as read then, and a byte another thread changes during a sync call
// changes at most which tokens count.
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
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "env.h"
#include "gpu.h"
#include "pages.h"
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
    char* block = new char[bytes];
    advise_huge_pages(block, bytes);  // written in full (a copy, or an output) before it is read
    return {block, bytes};
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

// A list of a job's (an op's inputs, its copies): the first N held inline, so a call of a few inputs
// allocates nothing for it; the rest on the heap.
template <typename T, size_t N>
class InlineList {
 public:
  void push_back(const T& v) {
    if (n_ < N) inline_[n_] = v;
    else more_.push_back(v);
    n_++;
  }
  size_t size() const { return n_; }
  const T& operator[](size_t i) const { return i < N ? inline_[i] : more_[i - N]; }
  T& back() { return n_ <= N ? inline_[n_ - 1] : more_.back(); }
  // room for one more, so that push_back cannot throw
  void reserve_one() {
    if (n_ >= N) more_.reserve(n_ + 1 - N);
  }

 private:
  T inline_[N] = {};
  std::vector<T> more_;
  size_t n_ = 0;
};

// Keeps what a job reads or writes alive until it is done (async jobs run on the libuv pool): the JS objects
// it writes (outputs), and the copies of inputs it reads.
class Pins {
 public:
  Pins() = default;
  Pins(const Pins&) = delete;
  Pins& operator=(const Pins&) = delete;
  ~Pins() {
    for (size_t i = 0; i < copies_.size(); i++) CopyPool::instance().give(copies_[i]);
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
  // A block of `bytes` bytes that lives as long as the job: in the job itself while kSmallBytes last (a
  // tiny call's offsets and labels), else from the copy pool.
  void* scratch(size_t bytes) {
    held_ += bytes;
    const size_t at = (small_used_ + 63) & ~size_t(63);
    if (bytes <= kSmallBytes && at + bytes <= kSmallBytes) {
      small_used_ = at + bytes;
      return small_ + at;
    }
    copies_.reserve_one();
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
  const InlineList<Range, 16>& inputs() const { return inputs_; }
  // The bytes this job holds until it settles: its scratch() blocks (input copies, the blocks of caller-
  // provided outputs an async job writes) and the fresh output arrays of an async job (held_too). What counts
  // against the async memory bound (scheduler.h).
  int64_t held_bytes() const { return int64_t(held_); }
  void held_too(size_t bytes) { held_ += bytes; }

 private:
  static constexpr size_t kSmallBytes = 512;
  std::vector<Napi::ObjectReference> refs_;
  InlineList<std::pair<char*, size_t>, 8> copies_;
  InlineList<Range, 16> inputs_;
  alignas(64) char small_[kSmallBytes];
  size_t small_used_ = 0;
  size_t held_ = 0;
};

// A typed array as the engine describes it now (no JavaScript runs to read this).
struct TypedView {
  napi_typedarray_type type = napi_int8_array;
  size_t length = 0;  // elements (0 once detached, or out of bounds of a shrunk resizable buffer)
  void* data = nullptr;
  napi_value buffer = nullptr;  // its ArrayBuffer or SharedArrayBuffer
};

// (A value known to be a typed array is read by the (env, value) form: Napi::TypedArray's constructor asks
// the engine for the same information once more.)
inline TypedView view_of(napi_env env, napi_value a) {
  TypedView v{};
  size_t offset;
  if (napi_get_typedarray_info(env, a, &v.type, &v.length, &v.data, &v.buffer, &offset) != napi_ok) {
    throw coded_error(env, "ERR_NATIVE", "cannot read a typed array");
  }
  return v;
}

// True when a typed array's buffer is a SharedArrayBuffer (a typed array's buffer is an ArrayBuffer or one):
// it cannot be detached, transferred or shrunk, and its memory lives while the view is referenced.
inline bool over_shared_memory(napi_env env, const TypedView& v) {
  bool is_plain = true;
  return v.buffer != nullptr && napi_is_arraybuffer(env, v.buffer, &is_plain) == napi_ok && !is_plain;
}
inline TypedView view_of(const Napi::TypedArray& a) { return view_of(a.Env(), a); }

// The element data of a typed array, offset included (never through ArrayBuffer(): it may be shared).
inline void* data_of(const Napi::TypedArray& a) { return view_of(a).data; }

// An argument object read once: each enumerable property's value (for ... in order), and the same for every
// value that is a plain object (float inputs, layout, agg, device tensors), to two levels.
//
// The reading is done by a JavaScript function made once per env (job.h snapshot(), kSnapshotReader). Every
// getter and Proxy trap runs in the reading, before any check. The reader writes one record of four float64
// per property into a Float64Array of its own: [key, kind, value, end]. A key is a small integer, the id the
// reader gave that string the first time it saw it (interned: a Map in the reader, at most kMaxNames ids of
// strings of at most 64 UTF-16 units, both limits the reader's alone; another key is -(i + 1) for the string at objects[i]); a number or a
// boolean is the record's value; an interned string value (a dtype) is its id. Only what must stay a
// JavaScript value (an object, a typed array, a long string, a function) goes into a fresh array, `objects`,
// at the index the record's value holds, and a plain object's own records follow its record up to `end`.
// The reader returns `objects`, whose slot 0 is the records' Float64Array (slot 0 of the records: their end)
// and slot 1 the reader's list of interned strings, which C++ copies once per id (EnvData::snapshot_names).
// So C++ reads one array element per object value, not two per property, and compares no UTF-8 copies.
//
// The records and the list of strings live in the reader's closure and in what it returns to C++: no caller
// can reach them, and C++ reads them at once, before any JavaScript runs again. A getter that calls an op
// while the arguments are being read (re-entry) gets a block of its own; the outer read goes on with its own.
// Whether a nested value counts as an object is decided again here (plain_object), so the reader's own test
// only saves reading into typed arrays and arrays.
inline constexpr const char* kSnapshotReader = R"((function () {
  'use strict'
  const isView = ArrayBuffer.isView
  const isArray = Array.isArray
  const ids = new Map()
  const names = []
  const intern = (s) => {
    const id = ids.get(s)
    if (id !== undefined) return id
    if (names.length >= 4096 || s.length > 64) return -1
    ids.set(s, names.length)
    return names.push(s) - 1
  }
  // the key (and string value) last read at each record position, and its id: a call with the keys of the
  // call before, in the same order, finds each by one compare instead of a Map lookup
  const remembered = () => {
    const last = [], lastId = []
    return (s, slot) => {
      if (last[slot] === s) return lastId[slot]
      const id = intern(s)
      last[slot] = s
      lastId[slot] = id
      return id
    }
  }
  const keyId = remembered(), valueId = remembered()
  let block = new Float64Array(256)
  let b = block, n = 0, objects = null, busy = false
  const record = () => {
    if (n + 4 > b.length) {
      const grown = new Float64Array(2 * b.length)
      grown.set(b)
      b = grown
    }
    n += 4
    return n - 4
  }
  const walk = (o, depth) => {
    for (const key in o) {
      const value = o[key]
      const at = record()
      const id = keyId(key, at >> 2)
      b[at] = id >= 0 ? id : -objects.push(key)
      if (value === undefined) b[at + 1] = 0
      else if (value === null) b[at + 1] = 1
      else {
        switch (typeof value) {
          case 'number': b[at + 1] = 2; b[at + 2] = value; break
          case 'boolean': b[at + 1] = 3; b[at + 2] = value ? 1 : 0; break
          case 'string': {
            const s = valueId(value, at >> 2)
            if (s >= 0) { b[at + 1] = 4; b[at + 2] = s } else { b[at + 1] = 5; b[at + 2] = objects.push(value) - 1 }
            break
          }
          case 'object':
            if (depth > 0 && !isView(value) && !isArray(value)) {
              b[at + 1] = 6
              b[at + 2] = objects.push(value) - 1
              walk(value, depth - 1)
              b[at + 3] = n
              break
            }
          // fall through: an array or a typed array, or an object below the depth read
          default: b[at + 1] = 5; b[at + 2] = objects.push(value) - 1
        }
      }
    }
  }
  return function read(o) {
    const outer = b, outerN = n, outerObjects = objects, wasBusy = busy
    b = busy ? new Float64Array(256) : block
    n = 4
    objects = [null, names]
    busy = true
    try {
      walk(o, 2)
      b[0] = n
      if (!wasBusy) block = b
      objects[0] = b
      return objects
    } finally {
      b = outer
      n = outerN
      objects = outerObjects
      busy = wasBusy
    }
  }
})())";

// One object's entries as C++ reads them: a view of a range of the entries of a SnapshotRead (its own or
// its env's reusable arena), children of one object contiguous, nested objects as views of their own.
class Snapshot {
 public:
  // what a record holds (kSnapshotReader's kinds, in its order)
  enum class Kind : uint8_t { undefined, null, number, boolean, name, value, object };
  struct Entry {
    std::string_view key;            // an interned name (EnvData::snapshot_names) or own_key
    Kind kind = Kind::undefined;
    double number = 0;               // a number; a boolean as 0 or 1
    std::string_view name;           // an interned string value
    Napi::Value value;               // Kind::value and Kind::object: the value itself
    const Snapshot* object = nullptr;  // the value's own snapshot, when it is a plain object
    std::unique_ptr<std::string> own_key;  // a key that was not interned
    bool nullish() const { return kind == Kind::undefined || kind == Kind::null; }
    // JavaScript's ToBoolean of the value
    bool truthy() const {
      switch (kind) {
        case Kind::undefined: case Kind::null: return false;
        case Kind::number: return number == number && number != 0;
        case Kind::boolean: return number != 0;
        case Kind::name: return !name.empty();
        default: return value.ToBoolean().Value();
      }
    }
  };
  struct Range {
    const Entry* first;
    const Entry* last;
    const Entry* begin() const { return first; }
    const Entry* end() const { return last; }
  };
  Snapshot() = default;
  Snapshot(const Entry* first, const Entry* last) : first_(first), last_(last) {}
  const Entry* find(const char* key) const {
    const std::string_view k(key);  // its length once, not per entry
    for (const Entry* e = first_; e != last_; e++) if (e->key == k) return e;
    return nullptr;
  }
  Range entries() const { return {first_, last_}; }

 protected:
  const Entry* first_ = nullptr;
  const Entry* last_ = nullptr;
};

// The entries and nested views of one read. Their storage is reserved once for the read's record count, so
// no view moves while it is filled. A read uses its env's arena (kept between calls: no allocation once it
// has grown) unless another read holds it, and then storage of its own.
struct SnapshotStore {
  std::vector<Snapshot::Entry> entries;
  std::vector<Snapshot> views;
  bool busy = false;
};

// The argument object read (what kSnapshotReader returned): the top-level view, owning its entries.
class SnapshotRead : public Snapshot {
 public:
  static constexpr size_t kKeptEntries = 1024;  // the most entries the env's arena keeps between calls
  // `read`: what kSnapshotReader returned.
  SnapshotRead(Napi::Env env, EnvData& data, Napi::Value read) {
    if (!read.IsArray()) throw_type(env, "rlhf-kernels", "argument snapshot: not read");
    Records r{env, data, read.As<Napi::Array>(), nullptr, 0};
    napi_value block;
    napi_typedarray_type type;
    void* records = nullptr;
    napi_value buffer;
    size_t offset;
    if (napi_get_element(env, r.objects, 0, &block) != napi_ok ||
        napi_get_typedarray_info(env, block, &type, &r.length, &records, &buffer, &offset) != napi_ok || type != napi_float64_array || r.length < 4) {
      throw_type(env, "rlhf-kernels", "argument snapshot: no records");
    }
    r.at = static_cast<const double*>(records);
    const size_t end = r.index(0, r.length + 1);
    if (!data.snapshot_store) data.snapshot_store = std::make_shared<SnapshotStore>();
    SnapshotStore* shared = static_cast<SnapshotStore*>(data.snapshot_store.get());
    if (!shared->busy) {
      shared->busy = true;
      arena_ = data.snapshot_store;  // released (cleared, not freed) by the destructor
      store_ = shared;
    } else {
      own_ = std::make_unique<SnapshotStore>();
      store_ = own_.get();
    }
    try {
      const size_t records_n = end / 4;  // at most this many entries and views
      store_->entries.reserve(records_n);
      store_->views.reserve(records_n);
      parse(r, *this, 4, end);
    } catch (...) {
      release();
      throw;
    }
  }
  SnapshotRead(const SnapshotRead&) = delete;
  SnapshotRead& operator=(const SnapshotRead&) = delete;
  ~SnapshotRead() { release(); }

 private:
  void release() {
    if (store_ == nullptr) return;
    store_->entries.clear();
    store_->views.clear();
    if (store_->entries.capacity() > kKeptEntries) {  // an unusually large call's storage is not kept
      std::vector<Entry>().swap(store_->entries);
      std::vector<Snapshot>().swap(store_->views);
    }
    store_->busy = false;
    store_ = nullptr;
  }
  // The reader's output as C++ reads it: the records (a bad index is a TypeError, never a read out of bounds).
  struct Records {
    Napi::Env env;
    EnvData& data;
    Napi::Array objects;
    const double* at;
    size_t length;  // float64 in the block
    // record field i as an index below `limit`
    size_t index(size_t i, size_t limit) const {
      const double d = at[i];
      if (!(d >= 0 && d < double(limit)) || d != double(size_t(d))) throw_type(env, "rlhf-kernels", "argument snapshot: a bad record");
      return size_t(d);
    }
    Napi::Value object(size_t i) const { return objects.Get(uint32_t(index(i, uint32_t(-1)))); }
    // the interned string `id`, copied from the reader's list the first time it is seen
    std::string_view name(size_t i) const {
      const size_t id = index(i, uint32_t(-1));
      auto& names = data.snapshot_names;
      if (id >= names.size()) {
        const Napi::Value v = objects.Get(1u);
        if (!v.IsArray() || id >= v.As<Napi::Array>().Length()) throw_type(env, "rlhf-kernels", "argument snapshot: a bad record");
        const Napi::Array list = v.As<Napi::Array>();
        while (names.size() <= id) {
          const Napi::Value s = list.Get(uint32_t(names.size()));
          if (!s.IsString()) throw_type(env, "rlhf-kernels", "argument snapshot: a name is not a string");
          names.push_back(s.As<Napi::String>().Utf8Value());
        }
      }
      return names[id];
    }
  };
  [[noreturn]] static void bad(const Records& r) { throw_type(r.env, "rlhf-kernels", "argument snapshot: a bad record"); }
  // The records in [begin, end) into `view`: first the object's own entries (contiguous), then the nested
  // objects' (whose record position waits in their entry's `number` until then).
  void parse(const Records& r, Snapshot& view, size_t begin, size_t end) {
    auto& entries = store_->entries;
    const size_t first = entries.size();
    for (size_t i = begin; i + 4 <= end;) {
      if (entries.size() == entries.capacity()) bad(r);  // never: each record is one entry (no view moves)
      Entry& e = entries.emplace_back();
      if (r.at[i] >= 0) e.key = r.name(i);
      else {
        const double k = -r.at[i] - 1;
        if (!(k >= 0 && k < 4294967295.0)) bad(r);
        const Napi::Value key = r.objects.Get(uint32_t(k));
        if (!key.IsString()) throw_type(r.env, "rlhf-kernels", "argument snapshot: a key is not a string");
        e.own_key = std::make_unique<std::string>(key.As<Napi::String>().Utf8Value());
        e.key = *e.own_key;
      }
      e.kind = Kind(r.index(i + 1, size_t(Kind::object) + 1));
      size_t next = i + 4;
      switch (e.kind) {
        case Kind::number: case Kind::boolean: e.number = r.at[i + 2]; break;
        case Kind::name: e.name = r.name(i + 2); break;
        case Kind::value: e.value = r.object(i + 2); break;
        case Kind::object: {
          e.value = r.object(i + 2);
          next = r.index(i + 3, end + 1);
          if (next < i + 4) bad(r);
          e.number = double(i);
          break;
        }
        default: break;
      }
      i = next;
    }
    const size_t last = entries.size();
    view = Snapshot(entries.data() + first, entries.data() + last);
    for (size_t j = first; j < last; j++) {
      Entry& e = entries[j];
      if (e.kind != Kind::object) continue;
      const size_t i = size_t(e.number);
      e.number = 0;
      if (!plain_object(r.env, e.value)) continue;
      if (store_->views.size() == store_->views.capacity()) bad(r);
      Snapshot& nested = store_->views.emplace_back();
      parse(r, nested, i + 4, r.index(i + 3, end + 1));
      e.object = &nested;
    }
  }
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
  std::shared_ptr<void> arena_;         // the env's store while this read holds it
  std::unique_ptr<SnapshotStore> own_;  // storage of its own when the env's was held
  SnapshotStore* store_ = nullptr;
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
    const Snapshot::Entry* e = s_.find(key);
    return e != nullptr && !e->nullish();
  }

  double number(const char* key) const {
    const Snapshot::Entry* e = s_.find(key);
    if (e == nullptr || e->kind != Snapshot::Kind::number) throw_type(env_, op_, std::string(key) + " must be a number");
    return e->number;
  }
  bool is_number(const char* key) const {
    const Snapshot::Entry* e = s_.find(key);
    return e != nullptr && e->kind == Snapshot::Kind::number;
  }
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
    const Snapshot::Entry* e = s_.find(key);
    if (e == nullptr || e->kind != Snapshot::Kind::boolean) throw_type(env_, op_, std::string(key) + " must be a boolean");
    return e->number != 0;
  }
  bool is_string(const char* key) const {
    const Snapshot::Entry* e = s_.find(key);
    return e != nullptr && (e->kind == Snapshot::Kind::name || (e->kind == Snapshot::Kind::value && e->value.IsString()));
  }
  std::string string(const char* key) const {
    if (!is_string(key)) throw_type(env_, op_, std::string(key) + " must be a string");
    const Snapshot::Entry* e = s_.find(key);
    return e->kind == Snapshot::Kind::name ? std::string(e->name) : e->value.As<Napi::String>().Utf8Value();
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
    const std::string dtype = f.is_string("dtype") ? f.string("dtype") : "";
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
    Napi::Value data;
    if (!f.device_input(key, es, in.size, device)) {
      data = f.get("data");
      if (!data.IsTypedArray()) throw_type(env_, op_, std::string(key) + ".data must be a typed array");
      host = view_of(env_, data);
      if (host.type != want) throw_type(env_, op_, std::string(key) + ".data does not match its dtype " + dtype);
      in.size = int64_t(host.length);
      pins_.note_input(key, host.data, host.length * es);
    }
    if (length >= 0 && in.size != length) throw_length(key, length, in.size);
    in.data = device ? device : place(data, host, host.length * es, false);
    static const double empty = 0;
    if (in.data == nullptr) in.data = &empty;  // a given but empty input is present(), and never read
    return in;
  }
  FloatIn floats_or_absent(const char* key, int64_t length) const { return has(key) ? floats(key, length) : FloatIn{}; }

  // An integer array of exactly `length` elements (length < 0: any): copied when its values are indices
  // (`index`), else placed as a float array is (a mask; see the top of this file).
  template <typename E, napi_typedarray_type Want>
  const E* typed(const char* key, int64_t length, const char* what, int64_t* size = nullptr, bool index = true) const {
    Napi::Value v = get(key);
    const void* device = nullptr;
    int64_t n = 0;
    if (v.IsObject() && !v.IsTypedArray() && has_object(key) && object(key).device_input(key, sizeof(E), n, device)) {
      if (length >= 0 && n != length) throw_length(key, length, n);
      if (size) *size = n;
      return static_cast<const E*>(device);
    }
    if (!v.IsTypedArray()) throw_type(env_, op_, std::string(key) + " must be " + what);
    const TypedView a = view_of(env_, v);
    if (a.type != Want) throw_type(env_, op_, std::string(key) + " must be " + what);
    if (length >= 0 && int64_t(a.length) != length) throw_length(key, length, int64_t(a.length));
    if (size) *size = int64_t(a.length);
    pins_.note_input(key, a.data, a.length * sizeof(E));
    return static_cast<const E*>(place(v, a, a.length * sizeof(E), index));
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
  // a 0/1 Uint8Array of `length`, or null; in place for a sync cpu call (see the top of this file)
  const uint8_t* mask(const char* key, int64_t length) const {
    if (!has(key)) return nullptr;
    const uint8_t* m = typed<uint8_t, napi_uint8_array>(key, length, "a Uint8Array", nullptr, false);
    // a device mask counts a token where it is nonzero, as the TypeScript layer reads every mask
    if (const uint8_t* h = host_view(m)) {
      if (!binary_bytes(h, length)) throw_range(env_, op_, std::string(key) + " must hold 0 or 1");
    }
    return m;
  }
  // True when every byte of p[0, n) is 0 or 1 (none has a bit of 0xfe set): 8-byte words OR-ed into four
  // accumulators per block of 4 KiB (the compiler vectorises it), so a mask that is not binary stops at the
  // end of its block; the bytes past the last whole block one at a time.
  static bool binary_bytes(const uint8_t* p, int64_t n) {
    constexpr uint64_t high = 0xfefefefefefefefeull;
    constexpr int64_t block = 4096;
    int64_t i = 0;
    for (; i + block <= n; i += block) {
      uint64_t acc[4] = {};
      for (int64_t j = i; j < i + block; j += 32) {
        for (int k = 0; k < 4; k++) {
          uint64_t w;
          std::memcpy(&w, p + j + 8 * k, 8);
          acc[k] |= w;
        }
      }
      if (((acc[0] | acc[1] | acc[2] | acc[3]) & high) != 0) return false;
    }
    uint8_t tail = 0;
    for (; i < n; i++) tail |= p[i];
    return (tail & 0xfe) == 0;
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
        throw_range(env_, op_, std::string(key) + "[" + std::to_string(n) + "] must be in [0, " + std::to_string(K) + ") or equal to ignoreIndex (" +
                                   std::to_string(ignore) + "), got " + std::to_string(b));
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
  // the value of a key that holds an object, a typed array or another JavaScript value (Kind::value or
  // Kind::object); undefined for a number, a boolean, an interned string, null or no key
  Napi::Value get(const char* key) const {
    const Snapshot::Entry* e = s_.find(key);
    return e && !e->value.IsEmpty() ? e->value : env_.Undefined();
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
  // Where the kernel reads the host typed array `array` (`v` its view, `bytes` its length): uploaded (cuda);
  // on cpu a copy the job owns for indices and for an async call's other inputs, except those over a
  // SharedArrayBuffer, which the job holds and reads in place as a sync call does (see the top of this file).
  const void* place(Napi::Value array, const TypedView& v, size_t bytes, bool index) const {
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu_) return gpu_->upload(env_, v.data, bytes);
#endif
    // an empty input is present all the same (FloatIn::present): a non-null pointer that is never read
    static const char empty = 0;
    if (bytes == 0) return &empty;
    if (index) return pins_.copy(v.data, bytes);
    if (placement_ == Placement::in_place) return v.data;
    if (over_shared_memory(env_, v)) {
      pins_.pin(array);
      return v.data;
    }
    return pins_.copy(v.data, bytes);
  }

  Napi::Env env_;
  const char* op_;
  const Snapshot& s_;
  Pins& pins_;
  Placement placement_;
  GpuCall* gpu_;
};

// True when the snapshot holds a typed array whose memory begins in [lo, hi] (a view into that buffer).
inline bool holds_view_into(napi_env env, const Snapshot& s, const char* lo, const char* hi) {
  for (const Snapshot::Entry& e : s.entries()) {
    if (e.object) {
      if (holds_view_into(env, *e.object, lo, hi)) return true;
      continue;
    }
    if (e.value.IsEmpty() || !e.value.IsTypedArray()) continue;
    const char* p = static_cast<const char*>(view_of(env, e.value).data);
    if (p != nullptr && p >= lo && p <= hi) return true;
  }
  return false;
}

// Before a sync cpu call makes its outputs: arguments that hold a view into the current result pool (a
// caller's view of a result's whole buffer, which spans ranges not handed out yet) retire it, so what the call
// writes never shares memory with what it reads.
inline void pool_apart_from(napi_env env, EnvData& data, const Snapshot& s) {
  ResultPool& pool = data.pool;
  if (pool.base == nullptr || !holds_view_into(env, s, pool.base, pool.base + ResultPool::kBytes)) return;
  pool.buffer.Reset();
  pool.base = nullptr;
  pool.used = 0;
}

// Output arrays: V8 Float32Arrays made on the JS thread (so results are ordinary typed arrays), held for the
// job (`local`, a sync call: as the call's handles; else as references), written by the kernel. A sync cpu
// call's array of at most ResultPool::kMaxArray bytes is a view into the env's result pool (env.h).
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
  bool local = false;               // a sync cpu call: outputs held as handles, small ones from the pool
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
    for (size_t i = 0; i < n_; i++) list.add(names_[i], value(i));
  }

  // After prepare: every given output was made by this call, and none shares a byte with an input or
  // another given output.
  void check_given() const {
    if (given == nullptr) return;
    for (const Snapshot::Entry& e : given->entries()) {
      if (e.nullish()) continue;
      bool made = false;
      for (size_t i = 0; i < n_given_; i++) made = made || e.key == given_[i].name;
      if (!made) throw_type(env_, op, "out." + std::string(e.key) + " must be absent: this call makes no " + std::string(e.key));
    }
    for (size_t i = 0; i < n_given_; i++) {
      const Given& g = given_[i];
      const char* end = g.data + g.bytes;
      for (size_t k = 0; k < pins_.inputs().size(); k++) {
        const Pins::Range& r = pins_.inputs()[k];
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
    for (size_t i = 0; i < n_given_; i++) {
      const Given& g = given_[i];
      if (g.block == nullptr) continue;
      const TypedView now = view_of(env_, value(g.array));
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
  // A new host array of n elements, held and recorded as output `name`: a range of the result pool (a small
  // one of a sync call), else an array of its own, its memory not zeroed (the kernel writes every element;
  // pages.h poison_outputs).
  template <typename E>
  E* fresh(const char* name, int64_t n) {
    room();
    const size_t bytes = size_t(n) * sizeof(E);
    constexpr napi_typedarray_type type = std::is_same_v<E, float> ? napi_float32_array : napi_uint16_array;
    napi_value a;
    void* data = local && bytes <= ResultPool::kMaxArray ? pooled(bytes, type, size_t(n), &a) : unfilled(bytes, type, size_t(n), &a);
    if (poison_outputs() && bytes > 0) std::memset(data, 0xff, bytes);
    if (!local) pins_.held_too(bytes);  // an async job's outputs count against the memory bound as its copies do
    hold(name, a);
    return static_cast<E*>(data);
  }
  // A typed array of n elements of `type` (`bytes` bytes) over an ArrayBuffer of its own whose memory is not
  // zeroed first: a Node Buffer's (napi_create_buffer, as Buffer.allocUnsafeSlow), which V8 would otherwise
  // fill with zeros on the JS thread before the kernel writes it all again. V8's own zero-filled array below
  // kUnfilledFrom (a Buffer object costs more than zeroing so few bytes) and when Node cannot make one (past
  // its Buffer size limit).
  static constexpr size_t kUnfilledFrom = 4096;
  void* unfilled(size_t bytes, napi_typedarray_type type, size_t n, napi_value* array) {
    void* data = nullptr;
    napi_value buffer, ab;
    napi_typedarray_type t;
    size_t length, offset = 1, ab_bytes = 0;
    void* ab_data = nullptr;
    if (bytes >= kUnfilledFrom) {
      if (napi_create_buffer(env_, bytes, &data, &buffer) == napi_ok &&
          napi_get_typedarray_info(env_, buffer, &t, &length, &data, &ab, &offset) == napi_ok && offset == 0 &&
          napi_get_arraybuffer_info(env_, ab, &ab_data, &ab_bytes) == napi_ok && ab_bytes == bytes && ab_data == data &&
          napi_create_typedarray(env_, type, n, ab, 0, array) == napi_ok) {
        advise_huge_pages(data, bytes);  // untouched pages the kernel writes in full
        return data;
      }
      napi_value pending;
      napi_get_and_clear_last_exception(env_, &pending);
    }
    Napi::TypedArray a = type == napi_float32_array ? Napi::TypedArray(Napi::Float32Array::New(env_, n)) : Napi::TypedArray(Napi::Uint16Array::New(env_, n));
    *array = a;
    data = view_of(a).data;
    advise_huge_pages(data, bytes);
    return data;
  }
  // `bytes` of the env's result pool (a new pool when this one is full or was detached), zeroed, as a typed
  // array of n elements of `type` in *array.
  void* pooled(size_t bytes, napi_typedarray_type type, size_t n, napi_value* array) {
    ResultPool& pool = env_.GetInstanceData<EnvData>()->pool;
    void* now = nullptr;
    size_t length = 0;
    if (!pool.buffer.IsEmpty() && napi_get_arraybuffer_info(env_, pool.buffer.Value(), &now, &length) != napi_ok) now = nullptr;
    if (now == nullptr || now != pool.base || length != ResultPool::kBytes || pool.used + bytes > ResultPool::kBytes) {
      Napi::ArrayBuffer b = Napi::ArrayBuffer::New(env_, ResultPool::kBytes);
      if (!pool.untransferable.IsEmpty()) pool.untransferable.Value().Call({b});
      pool.buffer = Napi::Persistent(b);
      pool.base = static_cast<char*>(b.Data());
      pool.used = 0;
    }
    const size_t at = pool.used;
    pool.used = (at + bytes + ResultPool::kAlign - 1) & ~(ResultPool::kAlign - 1);
    std::memset(pool.base + at, 0, bytes);
    if (napi_create_typedarray(env_, type, n, pool.buffer.Value(), at, array) != napi_ok) throw coded_error(env_, "ERR_NATIVE", "cannot make an output array");
    return pool.base + at;
  }
  void hold(const char* name, napi_value a) {
    names_[n_] = name;
    if (local) values_[n_++] = a;
    else arrays_[n_++] = Napi::Persistent(Napi::Object(env_, a));
  }
  napi_value value(size_t i) const { return local ? values_[i] : napi_value(arrays_[i].Value()); }
  // The given output `name` checked (class, length) and recorded, or null when none was given.
  void* from_given(const char* name, int64_t n, napi_typedarray_type want, size_t es, const char* what) {
    if (given == nullptr) return nullptr;
    const Snapshot::Entry* e = given->find(name);
    if (e == nullptr || e->nullish()) return nullptr;
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
    // an async job writes a block of its own, except into a SharedArrayBuffer (never detached nor shrunk)
    void* block = deferred && bytes > 0 && !over_shared_memory(env_, v) ? pins_.scratch(bytes) : nullptr;
    if (block && poison_outputs()) std::memset(block, 0xff, bytes);  // as fresh outputs (pages.h)
    room();
    given_[n_given_++] = {name, n_, static_cast<const char*>(v.data), bytes, es, block};
    hold(name, a);
    return block ? block : bytes > 0 ? v.data : static_cast<void*>(empty);
  }

  // before one more output (a job makes at most kMaxOutputs: a logic error past that, never an overflow)
  void room() const {
    if (n_ == kMaxOutputs) throw std::length_error("more than kMaxOutputs outputs");
  }

  Napi::Env env_;
  Pins& pins_;
  // the outputs in the order made, held inline (no allocation per call): as handles (local) or references;
  // given_ ⊆ them
  const char* names_[kMaxOutputs];
  napi_value values_[kMaxOutputs];
  Napi::ObjectReference arrays_[kMaxOutputs];
  size_t n_ = 0;
  Given given_[kMaxOutputs];
  size_t n_given_ = 0;
};

}  // namespace rk::addon
