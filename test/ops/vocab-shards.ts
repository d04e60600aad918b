/** Shared by the vocab-sharded suites: a [N, V] matrix cut into column shards. */
import * as rk from '../../src/index.js'
import type { rng } from '../helpers.js'

export type Dtype = 'float32' | 'bfloat16' | 'float16'

/** Columns [a, b) of a row-major [N, V] float32 matrix, as a tensor of `dtype`. */
export function columns(z: Float32Array, N: number, V: number, a: number, b: number, dtype: Dtype) {
  const out = new Float32Array(N * (b - a))
  for (let n = 0; n < N; n++) out.set(z.subarray(n * V + a, n * V + b), n * (b - a))
  return dtype === 'float32' ? rk.tensor(out, [N, b - a]) : rk.tensor(rk.encodeFloats(out, dtype), [N, b - a], { dtype })
}

/** k uneven shard bounds over [0, V): 0 = b_0 < b_1 < … < b_k = V */
export function bounds(r: ReturnType<typeof rng>, V: number, k: number): number[] {
  const cuts = new Set<number>()
  while (cuts.size < k - 1) cuts.add(1 + r.int(V - 1))
  return [0, ...[...cuts].sort((a, b) => a - b), V]
}
