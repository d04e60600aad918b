// Standalone check and timing of the CUDA vocabulary kernels, for the GPU machine (no Node needed):
//
//   nvcc -std=c++20 -O3 -arch=sm_90 -Inative/include -o vocab_check bench/cuda/vocab_check.cu \
//        native/cuda/vocab.cu native/cpu/vocab.cc native/cpu/parallel.cc && ./vocab_check
//
// For each shape and dtype: fresh random logits; outputs poisoned (NaN bytes) before every run; results
// compared with the CPU kernel (native/cpu/vocab.cc) and, on a sample of rows, with float64 sums; two runs
// compared bitwise (determinism); then timed with CUDA events (median of 20 after warm-up), with bytes
// moved, GB/s and % of the device-to-device copy bandwidth measured in the same run. A short table last.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "rlhf/cuda_vocab.h"
#include "rlhf/vocab.h"

#include "check.cuh"

static uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

template <typename F>
static float median_ms(F&& f, int reps = 20) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; i++) f();
  std::vector<float> t;
  for (int i = 0; i < reps; i++) {
    CHECK(cudaEventRecord(a));
    f();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

static double copy_bandwidth() {
  const size_t bytes = size_t(2) << 30;
  void *a, *b;
  CHECK(cudaMalloc(&a, bytes));
  CHECK(cudaMalloc(&b, bytes));
  CHECK(cudaMemset(a, 1, bytes));
  const float ms = median_ms([&] { CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
  CHECK(cudaFree(a));
  CHECK(cudaFree(b));
  return 2.0 * bytes / (ms * 1e-3);  // read + write
}

static double rel_err(const float* a, const float* b, size_t n, size_t* nonfinite) {
  double num = 0, den = 0;
  *nonfinite = 0;
  for (size_t i = 0; i < n; i++) {
    if (!std::isfinite(a[i]) && !(std::isinf(a[i]) && a[i] == b[i])) { (*nonfinite)++; continue; }
    if (std::isinf(b[i])) continue;
    num += double(a[i] - b[i]) * (a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

struct Row {
  const char* op;
  int64_t N, V;
  const char* dtype;
  float ms;
  double bytes, err;
  bool ok;
};

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const double bw = copy_bandwidth();
  std::printf("device-to-device copy: %.0f GB/s (read + write)\n", bw / 1e9);
  std::vector<Row> table;
  std::mt19937 gen(std::random_device{}());
  std::normal_distribution<float> normal(0.f, 3.f);
  const int64_t shapes[][2] = {{4, 1001}, {8192, 32000}, {8192, 128256}};
  for (auto& shape : shapes) {
    const int64_t N = quick ? std::min<int64_t>(shape[0], 512) : shape[0], V = shape[1];
    for (const bool bf : {false, true}) {
      const size_t n = size_t(N) * V, esize = bf ? 2 : 4;
      std::vector<float> z(n);
      for (auto& x : z) x = normal(gen);
      std::vector<uint16_t> zb;
      if (bf) {
        zb.resize(n);
        for (size_t i = 0; i < n; i++) {
          zb[i] = to_bf16(z[i]);
          uint32_t u = uint32_t(zb[i]) << 16;
          std::memcpy(&z[i], &u, 4);  // the reference sees the same (rounded) values
        }
      }
      std::vector<int32_t> y(N);
      for (int64_t i = 0; i < N; i++) y[i] = i % 17 == 3 ? -100 : int32_t(gen() % V);

      // CPU reference (float32 kernel), and float64 sums on a sample of rows
      std::vector<float> ref_loss(N), ref_lse(N), ref_grad(n);
      rk::CrossEntropyParams c;
      c.logits = {z.data(), rk::DType::f32, int64_t(n)};
      c.N = N; c.V = V; c.targets = y.data(); c.losses = ref_loss.data(); c.lse = ref_lse.data(); c.grad = ref_grad.data();
      const rk::CrossEntropyResult cr = rk::cross_entropy(c);
      double worst64 = 0;
      for (int64_t r = 0; r < N; r += std::max<int64_t>(1, N / 16)) {
        double m = -INFINITY, s = 0;
        for (int64_t v = 0; v < V; v++) m = std::max(m, double(z[r * V + v]));
        for (int64_t v = 0; v < V; v++) s += std::exp(double(z[r * V + v]) - m);
        worst64 = std::max(worst64, std::fabs(m + std::log(s) - ref_lse[r]) / std::fabs(m + std::log(s)));
      }

      void* dz;
      int32_t* dy;
      float *dloss, *dlse, *dgrad, *dres, *dscratch;
      rk::gpu::DeviceFlags* dflags;
      CHECK(cudaMalloc(&dz, n * esize));
      CHECK(cudaMalloc(&dy, N * 4));
      CHECK(cudaMalloc(&dloss, N * 4));
      CHECK(cudaMalloc(&dlse, N * 4));
      CHECK(cudaMalloc(&dgrad, n * 4));
      CHECK(cudaMalloc(&dres, 16));
      CHECK(cudaMalloc(&dscratch, (N + 1) * 4));
      CHECK(cudaMalloc(&dflags, sizeof(rk::gpu::DeviceFlags)));
      CHECK(cudaMemcpy(dz, bf ? (void*)zb.data() : (void*)z.data(), n * esize, cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(dy, y.data(), N * 4, cudaMemcpyHostToDevice));
      rk::CrossEntropyParams g = c;
      g.logits = {dz, bf ? rk::DType::bf16 : rk::DType::f32, int64_t(n)};
      g.targets = dy; g.losses = dloss; g.lse = dlse; g.grad = dgrad;
      const int32_t none = INT32_MAX;
      auto run = [&](bool grad) {
        rk::CrossEntropyParams q = g;
        if (!grad) q.grad = nullptr;
        CHECK(rk::gpu::cross_entropy(q, dres, dscratch, dflags, 0));
      };
      // correctness: poisoned outputs, then compare; twice for determinism
      std::vector<float> out_grad(n), out_grad2(n), out_lse(N), out_loss(N);
      float res[3];
      for (int rep = 0; rep < 2; rep++) {
        CHECK(cudaMemset(dgrad, 0xff, n * 4));
        CHECK(cudaMemset(dlse, 0xff, N * 4));
        CHECK(cudaMemset(dloss, 0xff, N * 4));
        CHECK(cudaMemcpy(dflags, &none, 4, cudaMemcpyHostToDevice));
        run(true);
        CHECK(cudaDeviceSynchronize());
        CHECK(cudaMemcpy(rep ? out_grad2.data() : out_grad.data(), dgrad, n * 4, cudaMemcpyDeviceToHost));
      }
      CHECK(cudaMemcpy(out_lse.data(), dlse, N * 4, cudaMemcpyDeviceToHost));
      CHECK(cudaMemcpy(out_loss.data(), dloss, N * 4, cudaMemcpyDeviceToHost));
      CHECK(cudaMemcpy(res, dres, 12, cudaMemcpyDeviceToHost));
      int32_t flag;
      CHECK(cudaMemcpy(&flag, dflags, 4, cudaMemcpyDeviceToHost));
      size_t bad_g, bad_l, bad_s;
      const double eg = rel_err(out_grad.data(), ref_grad.data(), n, &bad_g);
      const double el = rel_err(out_lse.data(), ref_lse.data(), N, &bad_l);
      const double es = rel_err(out_loss.data(), ref_loss.data(), N, &bad_s);
      const bool deterministic = std::memcmp(out_grad.data(), out_grad2.data(), n * 4) == 0;
      const double eloss = std::fabs(res[0] - cr.loss) / std::fabs(cr.loss);
      const bool ok = eg < 1e-5 && el < 1e-6 && es < 1e-5 && eloss < 1e-5 && !bad_g && !bad_l && !bad_s && deterministic &&
                      flag == INT32_MAX && int64_t(res[1]) == cr.count;
      std::printf("%s N=%lld V=%lld: grad %.1e lse %.1e losses %.1e loss %.1e (cpu lse vs f64 %.1e) unwritten %zu/%zu/%zu deterministic %d flag %d count %g/%lld -> %s\n",
                  bf ? "bf16" : "f32", (long long)N, (long long)V, eg, el, es, eloss, worst64, bad_g, bad_l, bad_s, deterministic, flag,
                  res[1], (long long)cr.count, ok ? "ok" : "FAIL");
      // a bad target is flagged with its row, and the next call works
      {
        const int32_t bad_y = int32_t(V);
        CHECK(cudaMemcpy(dflags, &none, 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(dy + N / 2, &bad_y, 4, cudaMemcpyHostToDevice));
        run(true);
        CHECK(cudaMemcpy(&flag, dflags, 4, cudaMemcpyDeviceToHost));
        std::printf("  bad target at row %lld flagged as row %d: %s\n", (long long)(N / 2), flag, flag == N / 2 ? "ok" : "FAIL");
        CHECK(cudaMemcpy(dy, y.data(), N * 4, cudaMemcpyHostToDevice));
      }
      const double fwd_bytes = double(n) * esize + N * 4.0 * 3;
      const double bwd_bytes = double(n) * (esize + 4) + N * 4.0 * 3;
      const float fwd = median_ms([&] { run(false); });
      const float both = median_ms([&] { run(true); });
      table.push_back({"CE fwd", N, V, bf ? "bf16" : "f32", fwd, fwd_bytes, es, ok});
      table.push_back({"CE fwd+bwd", N, V, bf ? "bf16" : "f32", both, bwd_bytes, eg, ok});
      CHECK(cudaFree(dz)); CHECK(cudaFree(dy)); CHECK(cudaFree(dloss)); CHECK(cudaFree(dlse)); CHECK(cudaFree(dgrad));
      CHECK(cudaFree(dres)); CHECK(cudaFree(dscratch)); CHECK(cudaFree(dflags));
    }
  }
  std::printf("\n%-11s %6s %7s %5s %9s %10s %8s %9s %8s %s\n", "op", "N", "V", "dtype", "ms", "MB floor", "GB/s", "% copy", "rel err", "check");
  for (const Row& r : table) {
    const double gbs = r.bytes / (r.ms * 1e-3) / 1e9;
    std::printf("%-11s %6lld %7lld %5s %9.3f %10.1f %8.0f %8.1f%% %8.1e %s\n", r.op, (long long)r.N, (long long)r.V, r.dtype, r.ms,
                r.bytes / 1e6, gbs, 100.0 * r.bytes / (r.ms * 1e-3) / bw, r.err, r.ok ? "ok" : "FAIL");
  }
  return 0;
}
