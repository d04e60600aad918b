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

inline double temperature(const Args& a) {
  const double t = a.number("temperature");
  if (!(t >= MIN_TEMPERATURE && t < INFINITY)) throw_range(a.env(), a.op(), "temperature must be a finite number >= 1e-6");
  return t;
}

inline float log_ratio_clamp(const Args& a) {
  const double c = a.number("logRatioClamp");
  if (!(c > 0 && c <= MAX_LOG_RATIO_CLAMP)) throw_range(a.env(), a.op(), "logRatioClamp must be in (0, 80]");
  return float(c);
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
