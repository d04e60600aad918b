// The CUDA vocabulary kernels (native/cuda/vocab.cu): the same parameter structs as the CPU kernels, with
// every pointer on the device. Launches are asynchronous on `stream`; results of batch reductions stay on
// the device (no host round trip inside an op). Returns the launch status.
#pragma once
#include <cuda_runtime.h>

#include "vocab.h"

namespace rk::gpu {

// The scalar result block's size in floats (the addon allocates it, cleared, per call); each op's <Op>Slot
// (here and in rlhf/cuda_ops.h) lays out its block.
constexpr int RESULT_FLOATS = 64;

// Written by the kernels: the first row whose target lies outside [0, V) and is not ignore_index
// (INT32_MAX when there is none). The binding reads it after the op and raises a RangeError naming the row.
struct DeviceFlags {
  int32_t first_bad_row;
};

// lse, logp and (when p.entropy is set) entropy per row.
cudaError_t log_probs(const LogProbsParams& p, DeviceFlags* flags, cudaStream_t stream);

// Kept-set log-probs (native/cuda/kept.cu; device pointers), one block per row: with the set given as CSR
// (p.keep_offsets) the block reads only the kept tokens; with top_k / top_p / min_p it finds the row's cut
// (rlhf/vocab.h KeptCut) on chip and reads the row a few times (no device scratch).
cudaError_t kept_log_probs(const KeptLogProbsParams& p, DeviceFlags* flags, cudaStream_t stream);

// Whether cross_entropy takes the single-pass kernel (else the two-pass one: with p.grad16, p.grad must then
// be float32 staging of N·V elements, rounded into p.grad16 at the end).
bool cross_entropy_single_pass(const CrossEntropyParams& p);

// The result block of cross_entropy: the reduced loss, the non-ignored count and the reduction's scale (the
// mean's 1/denominator, else 1).
struct CrossEntropySlot {
  enum : int { loss, count, scale, K };
};
// Per-row losses, lse, and the result block; the gradient when p.grad is set. Class and token weights may be any float dtype.
// scratch: cross_entropy_scratch_floats(N) floats of device memory, 8-byte aligned.
constexpr int64_t cross_entropy_scratch_floats(int64_t N) { return 3 * N + 1; }
cudaError_t cross_entropy(const CrossEntropyParams& p, float* result, float* scratch, DeviceFlags* flags, cudaStream_t stream);

}  // namespace rk::gpu
