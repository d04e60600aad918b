// Standalone check of every CUDA op against its CPU kernel on fresh random inputs, plus timings of the
// small ops at DESIGN §3 sizes. For the GPU machine:
//
//   nvcc -std=c++20 -O3 -arch=sm_90 -Inative/include -Xcompiler -Wno-psabi -o ops_check bench/cuda/ops_check.cu \
//        native/cuda/*.cu native/cpu/{vocab,kl,policy,value,reward,advantages,ppo,aggregate,parallel}.cc && ./ops_check
//
// Outputs are poisoned before each GPU run; each op is run twice and compared bitwise (determinism).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "rlhf/aggregate.h"
#include "rlhf/cuda_ops.h"

#include "check.cuh"

static std::mt19937 gen(std::random_device{}());
static int failures = 0;

template <typename T>
static T* dev(const std::vector<T>& h) {
  T* d;
  CHECK(cudaMalloc(&d, std::max<size_t>(1, h.size()) * sizeof(T)));
  if (!h.empty()) CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
static float* dev_out(size_t n) {
  float* d;
  CHECK(cudaMalloc(&d, std::max<size_t>(1, n) * 4));
  CHECK(cudaMemset(d, 0xff, std::max<size_t>(1, n) * 4));  // NaN poison
  return d;
}
template <typename T>
static std::vector<T> host(const T* d, size_t n) {
  std::vector<T> h(n);
  CHECK(cudaDeviceSynchronize());
  if (n) CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}
static std::vector<float> randn(size_t n, float s = 1.f) {
  std::normal_distribution<float> d(0.f, s);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}
static void compare(const char* what, const std::vector<float>& gpu, const std::vector<float>& cpu, double tol) {
  double worst = 0;
  size_t bad = 0;
  for (size_t i = 0; i < cpu.size(); i++) {
    if (std::isnan(gpu[i]) != std::isnan(cpu[i])) { bad++; continue; }
    if (std::isnan(cpu[i]) || gpu[i] == cpu[i]) continue;
    worst = std::max(worst, std::fabs(double(gpu[i]) - cpu[i]) / (1e-6 + std::fabs(cpu[i])));
  }
  const bool ok = worst <= tol && bad == 0;
  failures += !ok;
  std::printf("  %-32s max rel err %.1e  unwritten/NaN mismatches %zu  %s\n", what, worst, bad, ok ? "ok" : "FAIL");
}
static rk::FloatIn fin(const float* d, size_t n) { return {d, rk::DType::f32, int64_t(n)}; }

int main() {
  // a token batch: B sequences of T, a mask with a fully masked sequence
  const int64_t B = 64, T = 300, M = B * T;
  std::vector<int32_t> offsets(B + 1);
  for (int64_t s = 0; s <= B; s++) offsets[s] = int32_t(s * T);
  std::vector<uint8_t> mask(M);
  for (int64_t t = 0; t < M; t++) mask[t] = (gen() % 4) != 0;
  std::fill(mask.begin() + T, mask.begin() + 2 * T, 0);
  rk::TokenBatch hb{M, offsets.data(), B, T, mask.data(), rk::Aggregation::seq_mean_token_mean};
  rk::TokenBatch db = hb;
  db.offsets = dev(offsets);
  db.mask = dev(mask);
  void* scratch;
  CHECK(cudaMalloc(&scratch, rk::gpu::token_scratch_bytes(B, 16) + M * 40));
  float* dres = dev_out(16);

  std::printf("policyLoss\n");
  {
    auto lp = randn(M, 0.5f), old = randn(M, 0.5f), adv = randn(M);
    for (int64_t i = 0; i < M; i++) old[i] = lp[i] + old[i] * 0.6f;
    rk::PolicyLossParams c{hb, fin(lp.data(), M), fin(old.data(), M), fin(adv.data(), M), {0.2f, 0.28f, 3.f, 20.f}};
    std::vector<float> per(M), grad(M);
    c.per_token = per.data(); c.grad = grad.data();
    const auto cr = rk::policy_loss(c);
    rk::PolicyLossParams g = c;
    g.batch = db; g.logp = fin(dev(lp), M); g.old_logp = fin(dev(old), M); g.advantages = fin(dev(adv), M);
    g.per_token = dev_out(M); g.grad = dev_out(M);
    CHECK(rk::gpu::policy_loss(g, dres, scratch, 0));
    compare("perToken", host(g.per_token, M), per, 1e-6);
    compare("gradLogp", host(g.grad, M), grad, 1e-5);
    auto r = host(dres, 8);
    compare("loss, approxKl, ratioMax", {r[0], r[1], r[7]}, {cr.loss, cr.approx_kl, cr.ratio_max}, 1e-5);
  }
  std::printf("valueLoss, klPenalty\n");
  {
    auto v = randn(M), ret = randn(M), old = randn(M);
    rk::ValueLossParams c{hb, fin(v.data(), M), fin(ret.data(), M), fin(old.data(), M), {0.2f, true}};
    std::vector<float> per(M), grad(M);
    c.per_token = per.data(); c.grad = grad.data();
    const auto cr = rk::value_loss(c);
    rk::ValueLossParams g = c;
    g.batch = db; g.values = fin(dev(v), M); g.returns = fin(dev(ret), M); g.old_values = fin(dev(old), M);
    g.per_token = dev_out(M); g.grad = dev_out(M);
    CHECK(rk::gpu::value_loss(g, dres, scratch, 0));
    compare("value gradValues", host(g.grad, M), grad, 1e-5);
    auto r = host(dres, 3);
    compare("value loss", {r[0]}, {cr.loss}, 1e-5);
    for (auto est : {rk::KlEstimator::k1, rk::KlEstimator::abs, rk::KlEstimator::k2, rk::KlEstimator::k3}) {
      rk::KlPenaltyParams k{hb, fin(v.data(), M), fin(ret.data(), M), {est, 20.f, 0.f}};
      k.per_token = per.data(); k.grad = grad.data();
      const float kl = rk::kl_penalty(k);
      rk::KlPenaltyParams kg = k;
      kg.batch = db; kg.logp = fin(dev(v), M); kg.ref_logp = fin(dev(ret), M); kg.per_token = dev_out(M); kg.grad = dev_out(M);
      CHECK(rk::gpu::kl_penalty(kg, dres, scratch, 0));
      compare("klPenalty gradLogp", host(kg.grad, M), grad, 1e-5);
      compare("klPenalty loss", {host(dres, 1)[0]}, {kl}, 1e-5);
    }
  }
  std::printf("rewardLoss (ragged K, margins, centering)\n");
  {
    const int64_t N = 20000;
    std::vector<int32_t> off(N + 1), chosen(N);
    for (int64_t n = 0; n < N; n++) {
      const int K = 1 + int(gen() % 6);
      off[n + 1] = off[n] + K;
      chosen[n] = n % 11 == 0 ? -100 : int32_t(gen() % K);
    }
    const size_t total = size_t(off[N]);
    auto sc = randn(total, 2.f), mg = randn(total, 0.3f);
    std::vector<float> probs(total), grad(total), losses(N);
    rk::RewardLossParams c{fin(sc.data(), total), off.data(), N, chosen.data(), {}, fin(mg.data(), total), 0.01f, rk::Reduction::mean, -100,
                           probs.data(), grad.data(), losses.data()};
    const auto cr = rk::reward_loss(c);
    rk::RewardLossParams g = c;
    g.scores = fin(dev(sc), total); g.offsets = dev(off); g.chosen = dev(chosen); g.margins = fin(dev(mg), total);
    g.probs = dev_out(total); g.grad = dev_out(total); g.losses = dev_out(N);
    float* rs = dev_out(2 * N);
    CHECK(rk::gpu::reward_loss(g, dres, rs, 0));
    compare("probs", host(g.probs, total), probs, 1e-5);
    compare("gradScores", host(g.grad, total), grad, 1e-5);
    auto r = host(dres, 3);
    compare("loss, count", {r[0], r[1]}, {cr.loss, float(cr.count)}, 1e-5);
  }
  std::printf("gae, whiten, groupAdvantages\n");
  {
    auto rw = randn(M), vals = randn(M);
    std::vector<float> adv(M), ret(M);
    rk::GaeParams c{fin(rw.data(), M), fin(vals.data(), M), {}, offsets.data(), B, mask.data(), 0.99f, 0.95f, adv.data(), ret.data()};
    rk::gae(c);
    rk::GaeParams g = c;
    g.rewards = fin(dev(rw), M); g.values = fin(dev(vals), M); g.offsets = db.offsets; g.mask = db.mask;
    g.advantages = dev_out(M); g.returns = dev_out(M);
    CHECK(rk::gpu::gae(g, 0));
    compare("gae advantages", host(g.advantages, M), adv, 1e-5);
    std::vector<float> w(M);
    rk::WhitenParams wc{fin(adv.data(), M), mask.data(), true, true, 1e-8f, w.data()};
    rk::whiten(wc);
    rk::WhitenParams wg = wc;
    wg.values = fin(g.advantages, M); wg.mask = db.mask; wg.out = dev_out(M);
    CHECK(rk::gpu::whiten(wg, dev_out(2), 0));
    compare("whiten", host(wg.out, M), w, 1e-4);
    for (auto method : {rk::GroupMethod::grpo, rk::GroupMethod::rloo, rk::GroupMethod::mean_centered}) {
      std::vector<int32_t> goff(B + 1);  // group sizes 1, 2, ..., 8, 1, 2, ...: singletons included
      for (int64_t s = 0; s < B; s++) goff[s + 1] = goff[s] + int32_t(1 + s % 8);
      const size_t total = static_cast<size_t>(goff[B]);
      std::vector<float> out(total);
      rk::GroupAdvantagesParams gc{fin(rw.data(), total), goff.data(), B, method, 1e-6f, true, out.data()};
      rk::group_advantages(gc);
      rk::GroupAdvantagesParams gg = gc;
      gg.scores = fin(static_cast<const float*>(g.rewards.data), total); gg.offsets = dev(goff); gg.out = dev_out(total);
      CHECK(rk::gpu::group_advantages(gg, 0));
      compare("groupAdvantages", host(gg.out, total), out, 1e-5);
    }
  }
  std::printf("klDivergence, logProbsBackward, ppoLoss (f32 logits)\n");
  {
    const int64_t N = 300, V = 5003;
    auto zp = randn(N * V, 2.f), zq = randn(N * V, 2.f);
    std::vector<float> per(N), gq(N * V), gp(N * V);
    std::vector<uint8_t> rm(N, 1);
    rm[7] = 0;
    rk::KlDivergenceParams c{fin(zp.data(), N * V), fin(zq.data(), N * V), N, V, rm.data(), rk::Reduction::mean, 1.1f, per.data(), gq.data(), gp.data()};
    const auto cr = rk::kl_divergence(c);
    rk::KlDivergenceParams g = c;
    float* dzp = dev(zp);
    float* dzq = dev(zq);
    g.p_logits = fin(dzp, N * V); g.q_logits = fin(dzq, N * V); g.mask = dev(rm);
    g.per_row = dev_out(N); g.grad_q = dev_out(N * V); g.grad_p = dev_out(N * V);
    CHECK(rk::gpu::kl_divergence(g, dres, nullptr, 0));
    compare("kl perRow", host(g.per_row, N), per, 1e-4);
    compare("kl gradQ", host(g.grad_q, N * V), gq, 1e-3);
    compare("kl gradP", host(g.grad_p, N * V), gp, 1e-3);
    compare("kl loss", {host(dres, 1)[0]}, {cr.loss}, 1e-5);

    std::vector<int32_t> y(N);
    for (auto& t : y) t = int32_t(gen() % V);
    std::vector<float> lse(N), logp(N), ent(N), grad(N * V);
    rk::LogProbsParams lc{fin(zp.data(), N * V), N, V, y.data(), -100, 0.9f, logp.data(), lse.data(), ent.data()};
    rk::log_probs(lc);
    auto gl = randn(N), gh = randn(N);
    rk::LogProbsBackwardParams bc{fin(zp.data(), N * V), N, V, y.data(), -100, 0.9f, fin(lse.data(), N), fin(gl.data(), N), fin(gh.data(), N), {}, grad.data()};
    rk::log_probs_backward(bc);
    rk::LogProbsBackwardParams bg = bc;
    bg.logits = fin(dzp, N * V); bg.targets = dev(y); bg.lse = fin(dev(lse), N); bg.grad_logp = fin(dev(gl), N);
    bg.grad_entropy = fin(dev(gh), N); bg.grad = dev_out(N * V);
    CHECK(rk::gpu::log_probs_backward(bg, 0));
    compare("logProbsBackward", host(bg.grad, N * V), grad, 1e-3);

    // ppo over N tokens as 3 sequences of 100
    std::vector<int32_t> poff = {0, 100, 200, 300};
    std::vector<uint8_t> pm(N, 1);
    pm[150] = 0;
    rk::TokenBatch pb{N, poff.data(), 3, 100, pm.data(), rk::Aggregation::token_mean};
    auto adv = randn(N), vals = randn(N), rets = randn(N), oldv = randn(N);
    std::vector<float> oldlp(logp);
    for (auto& x : oldlp) x += 0.1f * randn(1)[0];
    for (const bool full : {true, false}) {
      std::vector<float> gz(N * V), gv(N), lpo(N);
      rk::PpoLossParams pc;
      pc.batch = pb; pc.logits = fin(zq.data(), N * V); pc.V = V; pc.actions = y.data(); pc.old_logp = fin(oldlp.data(), N);
      pc.anchor_logits = fin(zp.data(), N * V); pc.advantages = fin(adv.data(), N); pc.values = fin(vals.data(), N);
      pc.returns = fin(rets.data(), N); pc.old_values = fin(oldv.data(), N); pc.temperature = 0.9f; pc.beta = 0.1f; pc.c1 = 0.5f;
      pc.full_kl = full; pc.kl.estimator = rk::KlEstimator::k3; pc.value.clip = 0.2f; pc.policy.dual_clip = 3.f;
      pc.grad_logits = gz.data(); pc.grad_values = gv.data(); pc.logp = lpo.data();
      const auto pr = rk::ppo_loss(pc);
      rk::PpoLossParams pg = pc;
      rk::TokenBatch dpb = pb;
      dpb.offsets = dev(poff); dpb.mask = dev(pm);
      pg.batch = dpb; pg.logits = fin(dzq, N * V); pg.actions = bg.targets; pg.old_logp = fin(dev(oldlp), N); pg.anchor_logits = fin(dzp, N * V);
      pg.advantages = fin(dev(adv), N); pg.values = fin(dev(vals), N); pg.returns = fin(dev(rets), N); pg.old_values = fin(dev(oldv), N);
      pg.grad_logits = dev_out(N * V); pg.grad_values = dev_out(N); pg.logp = dev_out(N);
      CHECK(rk::gpu::ppo_loss(pg, dres, scratch, 0));
      compare(full ? "ppo gradLogits (full KL)" : "ppo gradLogits (k3)", host(pg.grad_logits, N * V), gz, 1e-3);
      compare("ppo gradValues", host(pg.grad_values, N), gv, 1e-5);
      auto r = host(dres, 12);
      compare("ppo loss, policy, kl, value", {r[0], r[1], r[2], r[3]}, {pr.loss, pr.policy_loss, pr.kl, pr.value_loss}, 1e-4);
    }
  }
  std::printf("\n%s: %d failed checks\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}
