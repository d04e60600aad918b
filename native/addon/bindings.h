// The op families' bindings, each in <family>_binding.cc, registered by addon.cc.
#pragma once
#include <napi.h>

#include <cmath>

#include "job.h"

namespace rk::addon {

// A finite number > 0, kept in double: a temperature (the kernels form m/T − lse from it), or the eps of
// whiten and groupAdvantages (with 0, a constant group would give 0/0).
inline double positive(const Args& a, const char* key) {
  const double t = a.number(key);
  if (!(t > 0 && t < INFINITY)) throw_range(a.env(), a.op(), std::string(key) + " must be a finite number > 0");
  return t;
}

// An ignoreIndex: an integer in int32 (a double outside it has no defined int32 conversion).
inline int32_t ignore_index(const Args& a) {
  const double v = a.number("ignoreIndex");
  if (!(v >= -2147483648.0 && v <= 2147483647.0) || v != std::floor(v)) {
    throw_range(a.env(), a.op(), "ignoreIndex must be an integer in [-2147483648, 2147483647]");
  }
  return int32_t(v);
}

void export_vocab(Napi::Env env, Napi::Object exports);
void export_reward(Napi::Env env, Napi::Object exports);
void export_policy(Napi::Env env, Napi::Object exports);
void export_kl(Napi::Env env, Napi::Object exports);
void export_value(Napi::Env env, Napi::Object exports);
void export_advantages(Napi::Env env, Napi::Object exports);
void export_ppo(Napi::Env env, Napi::Object exports);

}  // namespace rk::addon
