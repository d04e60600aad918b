// Rows held on chip: the single-pass design of the vocabulary kernels (research/gpu-kernels.md §5).
//
// A CTA of THREADS threads holds SPAN = THREADS·R columns of a row in registers, R per thread, loaded as
// 16-byte vectors (VEC = 16 / sizeof(T) elements; every load issued before the first use). A row longer than
// SPAN is split over a thread-block cluster of C = ceil(V / SPAN) CTAs (sm_90), which exchange their
// partial (max, Σ exp, …) through distributed shared memory in rank order, so every CTA of the cluster
// computes the same row statistics bit for bit. Then each CTA writes its slice of the gradient from the
// registers: one read and one write of the row, one exp per element.
//
// Column of register (k, j) of thread t in the CTA of rank r: r·SPAN + (k·THREADS + t)·VEC + j.
// Requires rows aligned to 16 bytes (V·sizeof(T) and V·4 multiples of 16); the launchers check that and
// take the two-pass kernels otherwise.
//
// Versions, side by side (RLHF_KERNELS_VOCAB_KERNEL=v2|v3; the default is the last one measured best):
//   v2  the row statistics combined by thread 0: 15 dependent warp results, then the cluster's CTAs one
//       after another through distributed shared memory; clusters of up to 8 CTAs (V ≤ 131072).
//   v3  warp-parallel fixed-order combines: warp 0 combines the 16 warp results in one shuffle tree, and
//       after one cluster barrier its lanes read the C block results at once (lane r from rank r) and combine
//       them in a second shuffle tree; several statistics travel in one exchange (KL: both rows); clusters of
//       up to 16 CTAs (the non-portable size on sm_90), so V ≤ 262144 stays single-pass.
// Either way the tree depends on the thread and lane positions only, never on N or on timing: a row's
// results are bitwise the same in any batch (batch invariance), and every CTA of a cluster gets the same bits.
#pragma once
#include <cooperative_groups.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "common.cuh"

namespace rk::gpu {

constexpr int TILE_THREADS = 512;
constexpr int TILE_R = 32;                               // values per thread
constexpr int64_t TILE_SPAN = int64_t(TILE_THREADS) * TILE_R;  // 16384 columns per CTA
constexpr int TILE_MAX_CLUSTER = 8;                      // v2: the portable cluster size, rows up to 131072
constexpr int TILE_MAX_CLUSTER_V3 = 16;                  // v3: the non-portable size of sm_90, rows up to 262144
// Two CTAs per SM (64 registers a thread: 32 row values and the rest), so one CTA's loads overlap the
// other's reductions and stores; float64 logits need more registers and get one.
template <typename T>
constexpr int tile_blocks() { return sizeof(T) == 8 ? 1 : blocks_within(TILE_THREADS, 64); }

// K sums of exp((x − m)·invT)·(something), all relative to one running max m (K = 1: online softmax's (m, s)),
// and one plain sum carried along (Σ (x − x_ref) for label smoothing). invT is the combine's argument: 1 where
// the tile holds scaled values, 1/T where it holds raw logits (only differences from the max are scaled).
template <int K>
struct MaxSums {
  float m;
  float s[K];
  float plain;
};

// The identity of combine: no values.
template <int K>
__device__ __forceinline__ MaxSums<K> no_values() {
  MaxSums<K> r;
  r.m = -INFINITY;
  r.plain = 0.f;
#pragma unroll
  for (int k = 0; k < K; k++) r.s[k] = 0.f;
  return r;
}

// combine need not be commutative bit for bit (the compiler may fuse a product into the sum): a shuffle
// tree's result is taken from lane 0, whose sequence of combines is fixed by lane positions alone.
template <int K>
__device__ __forceinline__ MaxSums<K> combine(MaxSums<K> a, const MaxSums<K>& b, float invT = 1.f) {
  a.plain += b.plain;
  if (b.m == -INFINITY) return a;
  if (a.m == -INFINITY) {
    MaxSums<K> r = b;
    r.plain = a.plain;
    return r;
  }
  const float m = fmaxf(a.m, b.m);
  const float fa = __expf((a.m - m) * invT), fb = __expf((b.m - m) * invT);
#pragma unroll
  for (int k = 0; k < K; k++) a.s[k] = a.s[k] * fa + b.s[k] * fb;
  a.m = m;
  return a;
}

// Two sets of statistics that travel together (KL: the p row's and the q row's).
template <class A, class B>
struct Both {
  A a;
  B b;
};
template <class A, class B>
__device__ __forceinline__ Both<A, B> combine(const Both<A, B>& x, const Both<A, B>& y, float invT = 1.f) {
  return {combine(x.a, y.a, invT), combine(x.b, y.b, invT)};
}
template <class P> struct Identity;
template <int K> struct Identity<MaxSums<K>> {
  __device__ static MaxSums<K> get() { return no_values<K>(); }
};
template <class A, class B> struct Identity<Both<A, B>> {
  __device__ static Both<A, B> get() { return {Identity<A>::get(), Identity<B>::get()}; }
};

// Lane ^ o's value of any statistics struct (whole 32-bit words).
template <class P>
__device__ __forceinline__ P shfl_xor(const P& v, int o) {
  static_assert(sizeof(P) % 4 == 0, "statistics are made of 32-bit words");
  constexpr int W = sizeof(P) / 4;
  uint32_t w[W];
  memcpy(w, &v, sizeof(P));
#pragma unroll
  for (int i = 0; i < W; i++) w[i] = __shfl_xor_sync(0xffffffffu, w[i], o);
  P r;
  memcpy(&r, w, sizeof(P));
  return r;
}

// Combines the 32 lanes' values in a butterfly; lane 0's result is the one used, in every CTA the same
// expression over the same positions.
template <class P>
__device__ __forceinline__ P warp_combine(P v, float invT = 1.f) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = combine(v, shfl_xor(v, o), invT);
  return v;
}

// Block-wide, then (cluster_size > 1) cluster-wide combination of a row's statistics, in an order fixed by
// thread positions alone: every thread of every CTA of the cluster gets the same result. Called by all
// threads of the CTA. Ver 2: thread 0 folds the warps, then the ranks, one after another; Ver 3: warp 0 does
// each in one shuffle tree (lane w holds warp w's, then rank r's, result). invT: as combine's.
template <int Ver, class P>
__device__ __forceinline__ P row_combine(P v, int cluster_size, float invT = 1.f) {
  __shared__ P warp_part[32];
  __shared__ P block_part;
  __shared__ P row_total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_combine(v, invT);
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  if constexpr (Ver >= 3) {
    if (warp == 0) {
      const P b = warp_combine(lane < warps ? warp_part[lane] : Identity<P>::get(), invT);
      if (lane == 0) block_part = b;
    }
  } else if (threadIdx.x == 0) {
    P b = warp_part[0];
    for (int w = 1; w < warps; w++) b = combine(b, warp_part[w], invT);
    block_part = b;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (cluster_size > 1) {
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every CTA's block_part is written
    if constexpr (Ver >= 3) {
      if (warp == 0) {
        const P t = warp_combine(lane < cluster_size ? *cluster.map_shared_rank(&block_part, lane) : Identity<P>::get(), invT);
        if (lane == 0) row_total = t;
      }
    } else if (threadIdx.x == 0) {
      P t = *cluster.map_shared_rank(&block_part, 0);
      for (int r = 1; r < cluster_size; r++) t = combine(t, *cluster.map_shared_rank(&block_part, r), invT);
      row_total = t;
    }
    cluster.sync();  // no CTA leaves (or reuses block_part) while a peer may still read it
  } else
#endif
  {
    __syncthreads();
    if (threadIdx.x == 0) row_total = block_part;
  }
  __syncthreads();
  return row_total;
}

// One CTA's slice of a row in registers.
template <typename T>
struct RowTile {
  static constexpr int VEC = 16 / sizeof(T);
  static constexpr int LOADS = TILE_R / VEC;
  float x[TILE_R];

  __device__ __forceinline__ static int64_t col(int64_t begin, int k) {
    return begin + (int64_t(k) * TILE_THREADS + threadIdx.x) * VEC;
  }

  // Columns [begin, end) of `row` times invT; the rest −inf. Streaming loads: the row is read once.
  __device__ __forceinline__ void load(const T* row, int64_t begin, int64_t end, float invT) {
    int4 raw[LOADS];
#pragma unroll
    for (int k = 0; k < LOADS; k++) {
      const int64_t c = col(begin, k);
      raw[k] = c < end ? __ldcs(reinterpret_cast<const int4*>(row + c)) : make_int4(0, 0, 0, 0);
    }
#pragma unroll
    for (int k = 0; k < LOADS; k++) {
      const bool in = col(begin, k) < end;
      const T* v = reinterpret_cast<const T*>(&raw[k]);
#pragma unroll
      for (int j = 0; j < VEC; j++) x[k * VEC + j] = in ? to_float(v[j]) * invT : -INFINITY;
    }
  }

  // the largest value, or NaN if any is NaN (fmaxf would skip it, and an all-NaN row would look empty)
  __device__ __forceinline__ float max() const {
    float m = -INFINITY;
    bool nan = false;
#pragma unroll
    for (int i = 0; i < TILE_R; i++) {
      m = fmaxf(m, x[i]);
      nan |= x[i] != x[i];
    }
    return nan ? NAN : m;
  }

  // x ← exp((x − m)·invT) in place (0 for −inf, and for every value when m = −inf); returns Σ.
  __device__ __forceinline__ float exp_shift(float m, float invT = 1.f) {
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < TILE_R; i++) {
      x[i] = m == -INFINITY ? 0.f : __expf((x[i] - m) * invT);
      s += x[i];
    }
    return s;
  }

  // Writes g(column, register value) for every column of [begin, end) of the row `out`, streaming: float32
  // (O = float), or the 16-bit dtype of the logits (O = T = bf16/f16, eight values in one 16-byte store).
  template <typename O = float, class G>
  __device__ __forceinline__ void store(O* out, int64_t begin, int64_t end, G&& g) const {
#pragma unroll
    for (int k = 0; k < LOADS; k++) {
      const int64_t c = col(begin, k);
      if (c >= end) continue;
      if constexpr (!std::is_same_v<O, float>) {
        static_assert(VEC == 8, "16-bit gradients are written for 16-bit logits");
        uint16_t bits[8];
#pragma unroll
        for (int j = 0; j < 8; j++) bits[j] = to_bits<O>(g(c + j, x[k * VEC + j]));
        int4 v;
        memcpy(&v, bits, 16);
        __stcs(reinterpret_cast<int4*>(out + c), v);
      } else if constexpr (VEC >= 4) {
#pragma unroll
        for (int j = 0; j < VEC; j += 4) {
          const float4 v = make_float4(g(c + j, x[k * VEC + j]), g(c + j + 1, x[k * VEC + j + 1]),
                                       g(c + j + 2, x[k * VEC + j + 2]), g(c + j + 3, x[k * VEC + j + 3]));
          __stcs(reinterpret_cast<float4*>(out + c + j), v);
        }
      } else {
        const float2 v = make_float2(g(c, x[k * VEC]), g(c + 1, x[k * VEC + 1]));
        __stcs(reinterpret_cast<float2*>(out + c), v);
      }
    }
  }
};

// Launch geometry of the row-tile kernels: the cluster size for rows of V columns of T, or 0 when this
// device or shape must take the two-pass kernels (not sm_90, rows not 16-byte aligned, V above the
// portable cluster, or clusters that cannot be resident).
template <typename T>
inline int tile_cluster_size(int64_t V, int version = 2) {
  if (V <= 0 || (V * int64_t(sizeof(T))) % 16 != 0 || (V * 4) % 16 != 0) return 0;
  const int64_t c = (V + TILE_SPAN - 1) / TILE_SPAN;
  if (c > (version >= 3 ? TILE_MAX_CLUSTER_V3 : TILE_MAX_CLUSTER)) return 0;
  if (c == 1) return 1;
  static int major = [] {
    int device = 0, m = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, device);
    return m;
  }();
  return major >= 9 ? int(c) : 0;
}

// The row-tile version this call uses: RLHF_KERNELS_VOCAB_KERNEL=v2 or v3, else the default. Read at each
// launch on the JS thread, so a benchmark can time both in one process; a row's kernel depends on V, the
// dtypes, the options and this setting only.
constexpr int TILE_DEFAULT_VERSION = 2;
inline int vocab_kernel_version() {
  const char* v = std::getenv("RLHF_KERNELS_VOCAB_KERNEL");
  if (v == nullptr) return TILE_DEFAULT_VERSION;
  if (std::strcmp(v, "v3") == 0) return 3;
  if (std::strcmp(v, "v2") == 0) return 2;
  return TILE_DEFAULT_VERSION;
}

// f.template operator()<T, O, Ver>() for the logits' storage type T, the gradient's type O (float32, or T
// itself for a 16-bit gradient of 16-bit logits) and the row-tile version: the one dispatch of the
// single-pass kernels.
template <typename F>
inline auto dispatch_tile(DType dtype, bool grad16, int version, F&& f) {
  return dispatch_dtype(dtype, [&]<typename T>() {
    auto by_version = [&]<typename O>() {
      return version >= 3 ? f.template operator()<T, O, 3>() : f.template operator()<T, O, 2>();
    };
    if constexpr (sizeof(T) == 2) {
      if (grad16) return by_version.template operator()<T>();
    }
    return by_version.template operator()<float>();
  });
}

// The gradient pointer a kernel of gradient type O writes: the float32 one, or the 16-bit one.
template <typename O>
inline O* grad_out(float* grad32, void* grad16) {
  if constexpr (std::is_same_v<O, float>) return grad32;
  else return static_cast<O*>(grad16);
}

// The launch configuration of the row-tile kernels: `rows` clusters of `cluster` CTAs (no cluster
// attribute for one CTA per row, so that case runs on any GPU).
struct TileLaunch {
  cudaLaunchConfig_t config = {};
  cudaLaunchAttribute cluster_dim[1];
  TileLaunch(int64_t rows, int cluster, cudaStream_t stream) {
    config.gridDim = dim3(unsigned(rows * cluster));
    config.blockDim = dim3(TILE_THREADS);
    config.stream = stream;
    cluster_dim[0].id = cudaLaunchAttributeClusterDimension;
    cluster_dim[0].val.clusterDim.x = unsigned(cluster);
    cluster_dim[0].val.clusterDim.y = 1;
    cluster_dim[0].val.clusterDim.z = 1;
    config.attrs = cluster_dim;
    config.numAttrs = cluster > 1 ? 1 : 0;
  }
  TileLaunch(const TileLaunch&) = delete;  // config.attrs points into this object
  TileLaunch& operator=(const TileLaunch&) = delete;
};

// Whether clusters of `cluster` CTAs of `kernel` can be resident at once on this device (register and
// shared-memory use decide): asked once per kernel and size. A kernel that cannot run takes version 1.
template <typename... Params>
inline bool tile_clusters_fit(void (*kernel)(Params...), int cluster) {
  if (cluster <= 1) return true;
  if (cluster > TILE_MAX_CLUSTER) {  // the non-portable sizes must be allowed per kernel first
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
  }
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, bool> known;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), cluster);
  const auto it = known.find(key);
  if (it != known.end()) return it->second;
  const TileLaunch one(1, cluster, nullptr);
  int clusters = 0;
  const cudaError_t err = cudaOccupancyMaxActiveClusters(&clusters, kernel, &one.config);
  if (err != cudaSuccess) cudaGetLastError();  // not sticky; the answer is "no"
  return known[key] = err == cudaSuccess && clusters > 0;
}

// The cluster size of `kernel` for rows of V columns of T under `version`, 0 when the call must take the
// two-pass kernels: the one rule the launchers and the bindings share.
template <typename T, typename... Params>
inline int tile_plan(void (*kernel)(Params...), int64_t V, int version) {
  const int c = tile_cluster_size<T>(V, version);
  return c > 0 && tile_clusters_fit(kernel, c) ? c : 0;
}

// Launches `kernel` with one cluster of `cluster` CTAs per row; 0 rows launch nothing. A launch that fails
// returns its error and leaves none behind: the runtime's last error is cleared, so the next, unrelated op
// does not report it (a sticky error stays sticky: the context refuses every later call by itself).
template <typename... Params, typename... Args>
inline cudaError_t launch_tiles(void (*kernel)(Params...), int64_t rows, int cluster, cudaStream_t stream, Args... args) {
  if (rows == 0) return cudaSuccess;
  const TileLaunch launch(rows, cluster, stream);
  const cudaError_t err = cudaLaunchKernelEx(&launch.config, kernel, args...);
  if (err != cudaSuccess) cudaGetLastError();
  return err;
}

}  // namespace rk::gpu
