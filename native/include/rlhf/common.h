// The kernel API shared by the CPU and CUDA backends: plain C++, no Node types. Inputs arrive validated by
// the TypeScript layer and re-checked for memory safety by the addon; kernels never throw.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// Functions shared by the CPU kernels and the CUDA kernels are compiled for both by nvcc.
#if defined(__CUDACC__)
#define RK_HD __host__ __device__
#else
#define RK_HD
#endif

// Each op's scalar results are declared once, as a list X(name in the JS result, C++ type, member) in its
// header (RK_<OP>_FIELDS): the members of its result struct, the addon's result object and field list
// (native/addon/job.h) all follow from it.
#define RK_RESULT_MEMBER(js, type, member) type member = 0;

// Each enum list is declared once, as X(member, name in src/choices.ts) in list order: the C++ enum (its
// ordinals are the indices of the TypeScript list, which is what the addon is passed) and the names the
// addon exports as `enums` (native/addon/job.h), which test/enums.test.ts checks against src/choices.ts.
#define RK_ENUM_MEMBER(member, js) member,
#define RK_ENUM_NAME(member, js) js,
#define RK_REDUCTIONS(X) X(mean, "mean") X(sum, "sum") X(none, "none")
#define RK_AGGREGATIONS(X)                                                                                      \
  X(token_mean, "token-mean") X(seq_mean_token_mean, "seq-mean-token-mean")                                   \
  X(seq_mean_token_sum, "seq-mean-token-sum") X(seq_mean_token_sum_norm, "seq-mean-token-sum-norm")

namespace rk {

// Element type of a float input. Every kernel decodes its input to float32 as it reads it.
enum class DType : int32_t { f32 = 0, f64 = 1, bf16 = 2, f16 = 3 };

// A read-only float input of `size` elements in `dtype`.
struct FloatIn {
  const void* data = nullptr;
  DType dtype = DType::f32;
  int64_t size = 0;
  bool present() const { return data != nullptr; }
};

// Reduction over rows (vocabulary and reward ops).
enum class Reduction : int32_t { RK_REDUCTIONS(RK_ENUM_MEMBER) };

// Aggregation of per-token values (DESIGN §1.9).
enum class Aggregation : int32_t { RK_AGGREGATIONS(RK_ENUM_MEMBER) };

// One "off" convention for an option that can be disabled (null in TypeScript, src/choices.ts): NaN, written
// by the addon's one reader (Args::optional, native/addon/args.h) and tested with is_on, never a range sentinel.
RK_HD inline bool is_on(double option) { return option == option; }

// Token layout and aggregation of the per-token ops: sequence s is tokens offsets[s] .. offsets[s+1].
struct TokenBatch {
  int64_t tokens = 0;
  const int32_t* offsets = nullptr;  // num_seqs + 1 entries
  int64_t num_seqs = 0;
  int64_t width = 0;                 // T of a [B, T] layout, else the longest sequence
  const uint8_t* mask = nullptr;     // 0/1 per token, or null = every token counts
  Aggregation mode = Aggregation::token_mean;
  double global_tokens = NAN;        // off (is_on): use the local count
  double global_seqs = NAN;
  double norm_const = NAN;           // off: the width
};

// bfloat16 / float16 bit patterns → float32, exactly; written branch-free so loops over them vectorise.
RK_HD inline float bf16_to_float(uint16_t bits) {
  uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

RK_HD inline float f16_to_float(uint16_t bits) {
  uint32_t sign = uint32_t(bits & 0x8000u) << 16;
  uint32_t em = bits & 0x7fffu;
  // exponent+mantissa shifted into a float and rescaled by 2^112: exact for normal and subnormal halves
  uint32_t shifted = em << 13;
  float scaled;
  std::memcpy(&scaled, &shifted, 4);
  scaled *= 5.192296858534828e33f;  // 2^112
  uint32_t u;
  std::memcpy(&u, &scaled, 4);
  uint32_t special = 0x7f800000u | ((em & 0x3ffu) << 13);  // inf / NaN
  u = (em >= 0x7c00u ? special : u) | sign;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename T> inline float load(const T* p, int64_t i);
template <> inline float load<float>(const float* p, int64_t i) { return p[i]; }
template <> inline float load<double>(const double* p, int64_t i) { return float(p[i]); }

struct bf16 { uint16_t bits; };
struct f16 { uint16_t bits; };
template <> inline float load<bf16>(const bf16* p, int64_t i) { return bf16_to_float(p[i].bits); }
template <> inline float load<f16>(const f16* p, int64_t i) { return f16_to_float(p[i].bits); }

// Calls f.template operator()<T>() with the storage type of `dtype`: the one place a dtype becomes a type.
template <typename F> inline auto dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f64: return f.template operator()<double>();
    case DType::bf16: return f.template operator()<bf16>();
    case DType::f16: return f.template operator()<f16>();
    default: return f.template operator()<float>();
  }
}

// Reads element i of an optional float input as float32 (0 when absent).
RK_HD inline float read(const FloatIn& x, int64_t i) {
  switch (x.dtype) {
    case DType::f64: return float(static_cast<const double*>(x.data)[i]);
    case DType::bf16: return bf16_to_float(static_cast<const uint16_t*>(x.data)[i]);
    case DType::f16: return f16_to_float(static_cast<const uint16_t*>(x.data)[i]);
    default: return static_cast<const float*>(x.data)[i];
  }
}

// Kahan–Babuška (Neumaier) compensated float32 sum: float32 accumulation without the O(n·ε) drift.
struct KahanSum {
  float sum = 0.f;
  float c = 0.f;
  RK_HD void add(float x) {
    float t = sum + x;
    if (__builtin_fabsf(sum) >= __builtin_fabsf(x)) c += (sum - t) + x;
    else c += (x - t) + sum;
    sum = t;
  }
  // an infinite (or NaN) sum is returned as is: its compensation term would be NaN
  RK_HD float value() const { return __builtin_isfinite(sum) ? sum + c : sum; }
};

// Row n's temperature: per_row[n] when a per-row array is given, else the one T of every row.
RK_HD inline double row_temperature(const float* per_row, double t, int64_t n) { return per_row ? double(per_row[n]) : t; }

}  // namespace rk
