// The op families' bindings, each in <family>_binding.cc, registered by addon.cc.
#pragma once
#include <napi.h>

#include <cmath>

#include "job.h"

namespace rk::addon {

// A finite number > 0, kept in double: the eps of whiten and groupAdvantages (with 0, a constant group would
// give 0/0).
inline double positive(const Args& a, const char* key) {
  const double t = a.number(key);
  if (!(t > 0 && t < INFINITY)) throw_range(a.env(), a.op(), std::string(key) + " must be a finite number > 0");
  return t;
}

// The limits the TypeScript layer applies (src/validate.ts TEMPERATURE, src/options.ts LOG_RATIO_CLAMP),
// checked again for a raw addon call: below 1e-6, z/T leaves the float32 range for ordinary logits; above
// 80, exp of the clamped log-ratio does.
constexpr double MIN_TEMPERATURE = 1e-6, MAX_LOG_RATIO_CLAMP = 80;

// temperature: a number (into t), or a Float32Array of `rows` (into per_row: copied, or uploaded, and each
// host value checked as the number is; a device tensor is refused, its values could not be checked).
inline void temperature(const Args& a, int64_t rows, double& t, const float*& per_row) {
  if (!a.is_number("temperature")) {
    per_row = a.typed<float, napi_float32_array>("temperature", rows, "a number or a Float32Array of one temperature per row");
    const float* h = a.host_view(per_row);
    if (h == nullptr) throw_type(a.env(), a.op(), "temperature must be host data (a Float32Array), not a device tensor");
    for (int64_t n = 0; n < rows; n++) {
      if (!(h[n] >= MIN_TEMPERATURE && h[n] < INFINITY)) throw_range(a.env(), a.op(), "temperature[" + std::to_string(n) + "] must be a finite number >= 1e-6");
    }
    t = 1.0;
    return;
  }
  t = a.number("temperature");
  per_row = nullptr;
  if (!(t >= MIN_TEMPERATURE && t < INFINITY)) throw_range(a.env(), a.op(), "temperature must be a finite number >= 1e-6");
}

inline float log_ratio_clamp(const Args& a) {
  const double c = a.number("logRatioClamp");
  if (!(c > 0 && c <= MAX_LOG_RATIO_CLAMP)) throw_range(a.env(), a.op(), "logRatioClamp must be in (0, 80]");
  return float(c);
}

// Ragged groups of a flat array of `total` items (rewardLoss's and preferenceLoss's prompts, groupAdvantages's
// groups): the Int32Array `key`, copied, then checked to run from 0 to total; returns the group count.
inline int64_t groups(const Args& a, const char* key, int64_t total, const int32_t*& offsets) {
  int64_t n = 0;
  offsets = a.offsets(key, n);
  a.check_offsets(key, offsets, n, total);
  return n - 1;
}

// exports.enums[key] = names: an enum list in ordinal order under its src/choices.ts name, which
// test/enums.test.ts checks against it. Each family's binding exports its own lists; addon.cc the shared ones.
template <size_t N>
void export_enum(Napi::Env env, Napi::Object exports, const char* key, const char* const (&names)[N]) {
  if (!exports.Has("enums")) exports.Set("enums", Napi::Object::New(env));
  Napi::Array a = Napi::Array::New(env, N);
  for (size_t i = 0; i < N; i++) a.Set(uint32_t(i), Napi::String::New(env, names[i]));
  exports.Get("enums").As<Napi::Object>().Set(key, a);
}

void export_vocab(Napi::Env env, Napi::Object exports);
void export_reward(Napi::Env env, Napi::Object exports);
void export_policy(Napi::Env env, Napi::Object exports);
void export_kl(Napi::Env env, Napi::Object exports);
void export_value(Napi::Env env, Napi::Object exports);
void export_advantages(Napi::Env env, Napi::Object exports);
void export_ppo(Napi::Env env, Napi::Object exports);
void export_preference(Napi::Env env, Napi::Object exports);

}  // namespace rk::addon
