/**
 * The versions of the single-pass CUDA vocabulary kernels (native/cuda/rowtile.cuh), chosen by
 * RLHF_KERNELS_VOCAB_KERNEL, which the launchers read at each call: the GPU check and the benchmark run each.
 */
export const VOCAB_KERNELS = ['v2', 'v3'] as const

/** fn with RLHF_KERNELS_VOCAB_KERNEL set to `version` (the launchers read it at each call). */
export function withVocabKernel<T>(version: string, fn: () => T): T {
  const before = process.env.RLHF_KERNELS_VOCAB_KERNEL
  process.env.RLHF_KERNELS_VOCAB_KERNEL = version
  try {
    return fn()
  } finally {
    if (before === undefined) delete process.env.RLHF_KERNELS_VOCAB_KERNEL
    else process.env.RLHF_KERNELS_VOCAB_KERNEL = before
  }
}
