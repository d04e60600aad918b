// The cuda backend's caching allocator and the benchmark's random fill (rlhf/cuda_memory.h).
#include <cuda_runtime.h>

#include "common.cuh"
#include "rlhf/cuda_memory.h"

namespace rk::gpu {

size_t CachingAllocator::round(size_t bytes) {
  constexpr size_t small = 512, large = size_t(2) << 20;
  if (bytes < (size_t(1) << 20)) return bytes == 0 ? small : (bytes + small - 1) / small * small;
  return (bytes + large - 1) / large * large;
}

cudaError_t CachingAllocator::raw_alloc(size_t bytes, void** out) {
  return kind_ == MemoryKind::device ? cudaMalloc(out, bytes) : cudaMallocHost(out, bytes);
}

void CachingAllocator::raw_free(void* p) {
  if (kind_ == MemoryKind::device) cudaFree(p);
  else cudaFreeHost(p);
}

cudaError_t CachingAllocator::allocate(size_t bytes, void** out) {
  *out = nullptr;
  const size_t want = round(bytes);
  // a cached block fits when it wastes at most 2× below 1 MiB, 1/8 above
  const size_t limit = want < (size_t(1) << 20) ? 2 * want : want + want / 8;
  auto it = cached_.lower_bound(want);
  if (it != cached_.end() && it->first <= limit) {
    *out = it->second;
    cached_bytes_ -= it->first;
    in_use_bytes_ += it->first;
    cached_.erase(it);
    return cudaSuccess;
  }
  cudaError_t err = raw_alloc(want, out);
  if (err == cudaErrorMemoryAllocation && !cached_.empty()) {
    cudaGetLastError();  // not sticky: clear it and retry with the cache given back to the driver
    cudaDeviceSynchronize();
    release_cached();
    err = raw_alloc(want, out);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    *out = nullptr;
    return err;
  }
  size_of_[*out] = want;
  in_use_bytes_ += want;
  return cudaSuccess;
}

void CachingAllocator::free(void* p) {
  if (p == nullptr) return;
  auto it = size_of_.find(p);
  if (it == size_of_.end()) return;
  in_use_bytes_ -= it->second;
  cached_bytes_ += it->second;
  cached_.emplace(it->second, p);
}

size_t CachingAllocator::block_size(void* p) const {
  auto it = size_of_.find(p);
  return it == size_of_.end() ? 0 : it->second;
}

cudaError_t CachingAllocator::release_cached() {
  for (auto& [size, p] : cached_) {
    raw_free(p);
    size_of_.erase(p);
  }
  cached_.clear();
  cached_bytes_ = 0;
  return cudaGetLastError();
}

void CachingAllocator::release_all() {
  for (auto& [p, size] : size_of_) raw_free(p);
  size_of_.clear();
  cached_.clear();
  cached_bytes_ = in_use_bytes_ = 0;
}

namespace {

// splitmix64 of (seed, index): a counter-based generator, so any thread computes any element
__device__ __forceinline__ uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ double from_float<double>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float x) {
  uint32_t u = __float_as_uint(x);
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even (the inputs are finite)
  return bf16{uint16_t(u >> 16)};
}
template <> __device__ __forceinline__ f16 from_float<f16>(float x) { return f16{__half_as_ushort(__float2half_rn(x))}; }

template <typename T>
__global__ void fill_normal_kernel(T* data, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t r = mix(seed ^ mix(uint64_t(i)));
    const float u1 = (float(uint32_t(r >> 40)) + 0.5f) * (1.f / 16777216.f);  // (0, 1)
    const float u2 = float(uint32_t(r) & 0xffffffu) * (1.f / 16777216.f);
    data[i] = from_float<T>(scale * sqrtf(-2.f * __logf(u1)) * __cosf(6.2831853f * u2));
  }
}

__global__ void fill_int_kernel(int32_t* data, int64_t n, int32_t limit, uint64_t seed) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    data[i] = int32_t(mix(seed ^ mix(uint64_t(i))) % uint64_t(limit));
  }
}

template <typename T>
__global__ void round_kernel(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) out[i] = to_bits<T>(in[i]);
}

unsigned grid_for(int64_t n) { return unsigned(n < 1 ? 1 : (n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536); }

}  // namespace

cudaError_t fill_normal(void* data, DType dtype, int64_t n, uint64_t seed, float scale, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  dispatch_dtype(dtype, [&]<typename T>() { fill_normal_kernel<<<grid_for(n), 256, 0, stream>>>(static_cast<T*>(data), n, seed, scale); });
  return cudaGetLastError();
}

cudaError_t round_to_16(const float* in, uint16_t* out, int64_t n, DType dtype, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (dtype == DType::f16) round_kernel<f16><<<grid_for(n), 256, 0, stream>>>(in, out, n);
  else round_kernel<bf16><<<grid_for(n), 256, 0, stream>>>(in, out, n);
  return cudaGetLastError();
}

cudaError_t fill_uniform_int(int32_t* data, int64_t n, int32_t limit, uint64_t seed, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  fill_int_kernel<<<grid_for(n), 256, 0, stream>>>(data, n, limit < 1 ? 1 : limit, seed);
  return cudaGetLastError();
}

}  // namespace rk::gpu
