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
#pragma once
#include <cooperative_groups.h>

#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "common.cuh"

namespace rk::gpu {

constexpr int TILE_THREADS = 512;
constexpr int TILE_R = 32;                               // values per thread
constexpr int64_t TILE_SPAN = int64_t(TILE_THREADS) * TILE_R;  // 16384 columns per CTA
constexpr int TILE_MAX_CLUSTER = 8;                      // the portable cluster size: rows up to 131072

// K sums of exp(x − m)·(something), all relative to one running max m (K = 1: online softmax's (m, s)),
// and one plain sum carried along (Σ x for label smoothing).
template <int K>
struct MaxSums {
  float m;
  float s[K];
  float plain;
};

template <int K>
__device__ __forceinline__ MaxSums<K> combine(MaxSums<K> a, const MaxSums<K>& b) {
  a.plain += b.plain;
  if (b.m == -INFINITY) return a;
  if (a.m == -INFINITY) {
    MaxSums<K> r = b;
    r.plain = a.plain;
    return r;
  }
  const float m = fmaxf(a.m, b.m);
  const float fa = __expf(a.m - m), fb = __expf(b.m - m);
#pragma unroll
  for (int k = 0; k < K; k++) a.s[k] = a.s[k] * fa + b.s[k] * fb;
  a.m = m;
  return a;
}

// Block-wide, then (Cluster > 1) cluster-wide combination, in a fixed order: every thread of every CTA of
// the cluster gets the same result. Called by all threads of the CTA.
template <int K>
__device__ __forceinline__ MaxSums<K> row_combine(MaxSums<K> v, int cluster_size) {
  __shared__ MaxSums<K> warp_part[32];
  __shared__ MaxSums<K> block_part;
  __shared__ MaxSums<K> row_total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSums<K> w;
    w.m = __shfl_xor_sync(0xffffffffu, v.m, o);
    w.plain = __shfl_xor_sync(0xffffffffu, v.plain, o);
#pragma unroll
    for (int k = 0; k < K; k++) w.s[k] = __shfl_xor_sync(0xffffffffu, v.s[k], o);
    v = combine(v, w);
  }
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    MaxSums<K> b = warp_part[0];
    for (int w = 1; w < warps; w++) b = combine(b, warp_part[w]);
    block_part = b;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (cluster_size > 1) {
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every CTA's block_part is written
    if (threadIdx.x == 0) {
      MaxSums<K> t = *cluster.map_shared_rank(&block_part, 0);
      for (int r = 1; r < cluster_size; r++) t = combine(t, *cluster.map_shared_rank(&block_part, r));
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
#pragma unroll
    for (int i = 0; i < TILE_R; i++) m = x[i] > m || x[i] != x[i] ? x[i] : m;
    return m;
  }

  // x ← exp(x − m) in place (0 for −inf, and for every value when m = −inf); returns Σ.
  __device__ __forceinline__ float exp_shift(float m) {
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < TILE_R; i++) {
      x[i] = m == -INFINITY ? 0.f : __expf(x[i] - m);
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
inline int tile_cluster_size(int64_t V) {
  if (V <= 0 || (V * int64_t(sizeof(T))) % 16 != 0 || (V * 4) % 16 != 0) return 0;
  const int64_t c = (V + TILE_SPAN - 1) / TILE_SPAN;
  if (c > TILE_MAX_CLUSTER) return 0;
  if (c == 1) return 1;
  static int major = [] {
    int device = 0, m = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, device);
    return m;
  }();
  return major >= 9 ? int(c) : 0;
}

inline int tile_cluster_size(DType dtype, int64_t V) {
  switch (dtype) {
    case DType::bf16: return tile_cluster_size<bf16>(V);
    case DType::f16: return tile_cluster_size<f16>(V);
    case DType::f64: return tile_cluster_size<double>(V);
    default: return tile_cluster_size<float>(V);
  }
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

// Launches `kernel` with one cluster of `cluster` CTAs per row; 0 rows launch nothing.
template <typename... Params, typename... Args>
inline cudaError_t launch_tiles(void (*kernel)(Params...), int64_t rows, int cluster, cudaStream_t stream, Args... args) {
  if (rows == 0) return cudaSuccess;
  const TileLaunch launch(rows, cluster, stream);
  return cudaLaunchKernelEx(&launch.config, kernel, args...);
}

}  // namespace rk::gpu
