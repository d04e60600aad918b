// Device and pinned host memory for the cuda backend (native/cuda/memory.cu): a caching allocator, so that
// repeated calls of the same shapes never reach cudaMalloc, and the random fill the GPU benchmark uses.
//
// A pool belongs to one stream's work (one Node env has one stream): a block freed into the cache may be
// handed out again at once, because every later use of it is enqueued on that stream after every earlier
// one. Not thread-safe: the addon calls it from its env's JS thread only.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <unordered_map>

#include "common.h"

namespace rk::gpu {

enum class MemoryKind { device, pinned };

class CachingAllocator {
 public:
  explicit CachingAllocator(MemoryKind kind) : kind_(kind) {}
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least `bytes` (never null on success; 0 bytes gives the smallest block). On failure,
  // after one retry with the cache released, returns the CUDA error and sets *out to null.
  cudaError_t allocate(size_t bytes, void** out);
  // Back to the cache; null is ignored.
  void free(void* p);
  // cudaFree / cudaFreeHost of every cached block. The caller has synchronised the stream.
  cudaError_t release_cached();
  // Frees everything, in use or cached (env teardown, after the stream is synchronised).
  void release_all();

  size_t block_size(void* p) const;
  size_t in_use_bytes() const { return in_use_bytes_; }
  size_t cached_bytes() const { return cached_bytes_; }
  size_t in_use_blocks() const { return size_of_.size() - cached_.size(); }

  // Sizes are rounded to 512 B below 1 MiB and to 2 MiB above, so nearby sizes share blocks.
  static size_t round(size_t bytes);

 private:
  cudaError_t raw_alloc(size_t bytes, void** out);
  void raw_free(void* p);
  MemoryKind kind_;
  std::multimap<size_t, void*> cached_;       // size → free block
  std::unordered_map<void*, size_t> size_of_;  // every block this pool owns
  size_t in_use_bytes_ = 0, cached_bytes_ = 0;
};

// Fills n elements of `dtype` with normal(0, scale) values from a counter-based generator (the same seed
// gives the same data on any GPU). For benchmarks: it avoids building gigabytes of logits on the host.
cudaError_t fill_normal(void* data, DType dtype, int64_t n, uint64_t seed, float scale, cudaStream_t stream);
// out[i] = in[i] rounded to nearest even in `dtype` (bf16 or f16): the 16-bit gradient of the two-pass kernels.
cudaError_t round_to_16(const float* in, uint16_t* out, int64_t n, DType dtype, cudaStream_t stream);
// Fills n int32 with uniform values in [0, limit).
cudaError_t fill_uniform_int(int32_t* data, int64_t n, int32_t limit, uint64_t seed, cudaStream_t stream);

}  // namespace rk::gpu
