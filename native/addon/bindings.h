// The op families' bindings, each in <family>_binding.cc, registered by addon.cc.
#pragma once
#include <napi.h>

#include <cmath>

#include "job.h"

namespace rk::addon {

void export_vocab(Napi::Env env, Napi::Object exports);
void export_reward(Napi::Env env, Napi::Object exports);
void export_policy(Napi::Env env, Napi::Object exports);
void export_kl(Napi::Env env, Napi::Object exports);
void export_value(Napi::Env env, Napi::Object exports);
void export_advantages(Napi::Env env, Napi::Object exports);
void export_ppo(Napi::Env env, Napi::Object exports);

}  // namespace rk::addon
