// Reading the validated argument objects of src/*.ts in C++. The TypeScript layer has checked every shape
// and option; these checks repeat only what memory safety depends on (array classes, lengths, indices), so a
// caller that bypasses the TypeScript layer gets a TypeError or RangeError, never an out-of-bounds access.
//
// The same reader serves both native backends. For the cpu backend every array is a host typed array and
// the pointers are into it. For the cuda backend (a GpuCall is given) an array is a host typed array, which
// is checked here and uploaded, or a device tensor `{ device: handle }`, whose indices the kernel checks
// (a device flag, then a RangeError); the pointers are device pointers.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "gpu.h"
#include "rlhf/common.h"

namespace rk::addon {

[[noreturn]] inline void throw_type(Napi::Env env, const std::string& op, const std::string& msg) {
  throw Napi::TypeError::New(env, op + ": " + msg);
}
[[noreturn]] inline void throw_range(Napi::Env env, const std::string& op, const std::string& msg) {
  throw Napi::RangeError::New(env, op + ": " + msg);
}

// Keeps every JS object a job reads or writes alive until the job is done (async jobs run on the libuv pool).
class Pins {
 public:
  void pin(const Napi::Value& v) {
    if (v.IsObject()) refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }
  Napi::Object get(size_t i) const { return refs_[i].Value(); }

 private:
  std::vector<Napi::ObjectReference> refs_;
};

// The element data of a typed array, offset included (never through ArrayBuffer(): it may be shared).
inline void* data_of(const Napi::TypedArray& a) {
  napi_typedarray_type type;
  size_t length, offset;
  void* data = nullptr;
  napi_value buffer;
  if (napi_get_typedarray_info(a.Env(), a, &type, &length, &data, &buffer, &offset) != napi_ok) {
    throw Napi::Error::New(a.Env(), "cannot read a typed array");
  }
  return data;
}

class Args {
 public:
  Args(Napi::Env env, const char* op, Napi::Value v, Pins& pins, GpuCall* gpu = nullptr) : env_(env), op_(op), pins_(pins), gpu_(gpu) {
    if (!v.IsObject()) throw_type(env, op, "arguments must be an object");
    o_ = v.As<Napi::Object>();
  }
  Napi::Env env() const { return env_; }
  const char* op() const { return op_; }

  bool has(const char* key) const {
    Napi::Value v = o_.Get(key);
    return !v.IsUndefined() && !v.IsNull();
  }

  double number(const char* key) const {
    Napi::Value v = o_.Get(key);
    if (!v.IsNumber()) throw_type(env_, op_, std::string(key) + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  }
  double number_or(const char* key, double fallback) const { return has(key) ? number(key) : fallback; }
  int64_t count(const char* key) const {
    const double d = number(key);
    if (!(d >= 0 && d <= 9007199254740991.0) || d != double(int64_t(d))) throw_range(env_, op_, std::string(key) + " must be a count");
    return int64_t(d);
  }
  bool boolean(const char* key) const {
    Napi::Value v = o_.Get(key);
    if (!v.IsBoolean()) throw_type(env_, op_, std::string(key) + " must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }
  std::string string(const char* key) const {
    Napi::Value v = o_.Get(key);
    if (!v.IsString()) throw_type(env_, op_, std::string(key) + " must be a string");
    return v.As<Napi::String>().Utf8Value();
  }
  Args object(const char* key) const { return Args(env_, op_, o_.Get(key), pins_, gpu_); }
  bool on_gpu() const { return gpu_ != nullptr; }

  // A { data, dtype } float input with exactly `length` elements (length < 0: any).
  FloatIn floats(const char* key, int64_t length) const {
    Napi::Value v = o_.Get(key);
    if (!v.IsObject()) throw_type(env_, op_, std::string(key) + " must be a float input");
    Napi::Object f = v.As<Napi::Object>();
    const std::string dtype = Napi::Value(f.Get("dtype")).IsString() ? f.Get("dtype").As<Napi::String>().Utf8Value() : "";
    FloatIn in;
    napi_typedarray_type want;
    if (dtype == "float32") { in.dtype = DType::f32; want = napi_float32_array; }
    else if (dtype == "float64") { in.dtype = DType::f64; want = napi_float64_array; }
    else if (dtype == "bfloat16") { in.dtype = DType::bf16; want = napi_uint16_array; }
    else if (dtype == "float16") { in.dtype = DType::f16; want = napi_uint16_array; }
    else throw_type(env_, op_, std::string(key) + ".dtype must be a float dtype");
    const size_t es = in.dtype == DType::f64 ? 8 : in.dtype == DType::f32 ? 4 : 2;
    const void* device = nullptr;
    if (device_input(f, key, es, in.size, device)) {
      in.data = device;
    } else {
      Napi::Value data = f.Get("data");
      if (!data.IsTypedArray()) throw_type(env_, op_, std::string(key) + ".data must be a typed array");
      Napi::TypedArray a = data.As<Napi::TypedArray>();
      if (a.TypedArrayType() != want) throw_type(env_, op_, std::string(key) + ".data does not match its dtype " + dtype);
      in.size = int64_t(a.ElementLength());
      pins_.pin(a);
      in.data = place(data_of(a), size_t(in.size) * es);
    }
    static const double empty = 0;
    if (in.data == nullptr) in.data = &empty;  // a given but empty input is present(), and never read
    if (length >= 0 && in.size != length) {
      throw_range(env_, op_, std::string(key) + " must have " + std::to_string(length) + " elements, got " + std::to_string(in.size));
    }
    return in;
  }
  FloatIn floats_or_absent(const char* key, int64_t length) const { return has(key) ? floats(key, length) : FloatIn{}; }

  template <typename E, napi_typedarray_type Want>
  const E* typed(const char* key, int64_t length, const char* what) const {
    Napi::Value v = o_.Get(key);
    const void* device = nullptr;
    int64_t n = 0;
    if (v.IsObject() && !v.IsTypedArray() && device_input(v.As<Napi::Object>(), key, sizeof(E), n, device)) {
      if (length >= 0 && n != length) {
        throw_range(env_, op_, std::string(key) + " must have " + std::to_string(length) + " elements, got " + std::to_string(n));
      }
      return static_cast<const E*>(device);
    }
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != Want) {
      throw_type(env_, op_, std::string(key) + " must be " + what);
    }
    Napi::TypedArray a = v.As<Napi::TypedArray>();
    if (length >= 0 && int64_t(a.ElementLength()) != length) {
      throw_range(env_, op_, std::string(key) + " must have " + std::to_string(length) + " elements, got " + std::to_string(a.ElementLength()));
    }
    pins_.pin(a);
    return static_cast<const E*>(place(data_of(a), a.ByteLength()));
  }

  // The host copy of an array this reader returned: itself on the cpu backend, the uploaded source on
  // the cuda backend, null for a device tensor (nothing on the host to check).
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
  int64_t length_of(const char* key) const {
    Napi::Value v = o_.Get(key);
    if (!v.IsTypedArray()) throw_type(env_, op_, std::string(key) + " must be a typed array");
    return int64_t(v.As<Napi::TypedArray>().ElementLength());
  }
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
  // Indices on the device: the kernel flags the first bad one; this names the array and its valid range.
  void device_indices(const std::string& key, const std::string& expected) const {
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu_) gpu_->device_indices(key, expected);
#endif
    (void)key; (void)expected;
  }

  // offsets[0] = 0, non-decreasing, offsets[last] = total
  void check_offsets(const char* key, const int32_t* off, int64_t n, int64_t total) const {
    off = host_view(off);
    if (off == nullptr) throw_type(env_, op_, std::string(key) + " must be host data (an Int32Array), not a device tensor");
    if (n < 1 || off[0] != 0 || off[n - 1] != total) throw_range(env_, op_, std::string(key) + " must run from 0 to " + std::to_string(total));
    for (int64_t i = 1; i < n; i++) if (off[i] < off[i - 1]) throw_range(env_, op_, std::string(key) + " must be non-decreasing");
  }

  // the token layout, mask and aggregation shared by the per-token ops (src/policy.ts, TokenBatch)
  TokenBatch token_batch() const {
    TokenBatch b;
    Args layout = object("layout");
    b.tokens = layout.count("tokens");
    b.num_seqs = layout.length_of("offsets") - 1;
    b.offsets = layout.int32s("offsets", b.num_seqs + 1);
    layout.check_offsets("layout.offsets", b.offsets, b.num_seqs + 1, b.tokens);
    b.width = layout.count("width");
    b.mask = mask("mask", b.tokens);
    if (has("agg")) {
      Args agg = object("agg");
      const std::string mode = agg.string("mode");
      if (mode == "token-mean") b.mode = Aggregation::token_mean;
      else if (mode == "seq-mean-token-mean") b.mode = Aggregation::seq_mean_token_mean;
      else if (mode == "seq-mean-token-sum") b.mode = Aggregation::seq_mean_token_sum;
      else if (mode == "seq-mean-token-sum-norm") b.mode = Aggregation::seq_mean_token_sum_norm;
      else throw_range(env_, op_, "unknown aggregation " + mode);
      b.global_tokens = agg.number_or("globalTokenCount", -1);
      b.global_seqs = agg.number_or("globalSeqCount", -1);
      b.norm_const = agg.number_or("normConst", -1);
    }
    return b;
  }

  // gradDtype: true for the logits' own 16-bit dtype (cuda only; the other backends round in TypeScript)
  bool grad16(DType logits) const {
    if (!gpu_ || !has("gradDtype") || string("gradDtype") == "float32") return false;
    if (logits != DType::bf16 && logits != DType::f16) throw_type(env_, op_, "gradDtype 'input' needs bfloat16 or float16 logits");
    return true;
  }

  Reduction reduction() const {
    const std::string r = string("reduction");
    if (r == "mean") return Reduction::mean;
    if (r == "sum") return Reduction::sum;
    if (r == "none") return Reduction::none;
    throw_range(env_, op_, "unknown reduction " + r);
  }

 private:
  // A device tensor `{ device: handle }` (cuda backend only): its pointer and element count.
  bool device_input(Napi::Object o, const char* key, size_t es, int64_t& n, const void*& ptr) const {
    if (!o.Has("device")) return false;
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu_) {
      DeviceBlock* b = gpu_->env().unwrap(o.Get("device"));
      if (b == nullptr) {
        Napi::Error e = Napi::Error::New(env_, std::string(op_) + ": " + key + " is a disposed device tensor (or one of another thread)");
        e.Set("code", Napi::String::New(env_, "ERR_DISPOSED"));
        throw e;
      }
      pins_.pin(o);
      n = int64_t(b->bytes / es);
      ptr = b->ptr;
      return true;
    }
#endif
    (void)es; (void)n; (void)ptr;
    throw_type(env_, op_, std::string(key) + " is a device tensor: it runs on the cuda backend only");
  }
  // Where the kernel reads a host array: in place (cpu), or uploaded (cuda).
  const void* place(const void* host, size_t bytes) const {
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu_) return gpu_->upload(env_, host, bytes);
#endif
    (void)bytes;
    return host;
  }

  Napi::Env env_;
  const char* op_;
  Napi::Object o_;
  Pins& pins_;
  GpuCall* gpu_;
};

// Output arrays: V8 Float32Arrays made on the JS thread (so results are ordinary typed arrays), pinned for
// the job, written by the kernel.
class Outputs {
 public:
  explicit Outputs(Napi::Env env, Pins& pins) : env_(env), pins_(pins) {}
  GpuCall* gpu = nullptr;  // cuda backend: outputs are device blocks (gpu.h)
  float* make(const char* name, int64_t n) {
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu) return static_cast<float*>(gpu->output(env_, name, n));
#endif
    Napi::Float32Array a = Napi::Float32Array::New(env_, size_t(n));
    pins_.pin(a);
    names_.push_back(name);
    arrays_.push_back(Napi::Persistent(Napi::Object(a)));
    return a.Data();
  }
  // cuda only: an output of n 16-bit elements of the logits' dtype (gradDtype 'input')
  uint16_t* make16(const char* name, int64_t n, DType dtype) {
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu) return static_cast<uint16_t*>(gpu->output(env_, name, n, dtype == DType::bf16 ? "bfloat16" : "float16"));
#endif
    (void)name; (void)n; (void)dtype;
    throw Napi::TypeError::New(env_, "16-bit gradients are written by the cuda backend only");
  }
  // puts every output into `result` under its name
  void put(Napi::Object result) const {
#if RLHF_KERNELS_HAVE_CUDA
    if (gpu) return gpu->put(result);
#endif
    for (size_t i = 0; i < names_.size(); i++) result.Set(names_[i], arrays_[i].Value());
  }

 private:
  Napi::Env env_;
  Pins& pins_;
  std::vector<const char*> names_;
  std::vector<Napi::ObjectReference> arrays_;
};

}  // namespace rk::addon
