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

void export_vocab(Napi::Env env, Napi::Object exports);
void export_reward(Napi::Env env, Napi::Object exports);
void export_policy(Napi::Env env, Napi::Object exports);
void export_kl(Napi::Env env, Napi::Object exports);
void export_value(Napi::Env env, Napi::Object exports);
void export_advantages(Napi::Env env, Napi::Object exports);
void export_ppo(Napi::Env env, Napi::Object exports);

}  // namespace rk::addon
