/**
 * The one internal entry point: what the CLI (src/cli/*), the benchmarks (bench/*) and the GPU check use
 * beyond the public API of index.ts. The package's `exports` do not name it; its names may change in any
 * release. Everything else in the CLI and bench comes from index.ts.
 */
export { requireBackend } from './backend.js'
export { rangeError } from './errors.js'
export type { OpName } from './kernels.js'
export { cudaBench, cudaTime, hostFloor } from './native.js'
export { optionNamesOf, runOn } from './ops.js'
export { mulberry32, rng } from './random.js'
export { referenceKernels, type OutputPrecision } from './reference/index.js'
export { DeviceData } from './tensor.js'
export * from './tolerance.js'
export { VOCAB_KERNELS, withVocabKernel } from './vocab-kernel.js'
