/**
 * The parity cases' shared axes and helpers (test/ops/<family>.test.ts): every op, option and dtype on each
 * native backend against the js reference, on fresh random inputs each run (the seed is in each case's title,
 * so a failure can be replayed with PARITY_SEED). Shapes include one row, an odd V, a V that is not a
 * multiple of 8 or 16 (the vector lanes), V = 2048 and 32000 (the single-pass CUDA kernels in one CTA and in
 * a cluster), and V = 128256.
 * Backend-agnostic: on cuda the same host inputs are uploaded for each call (test/cuda.test.ts checks that
 * device-tensor inputs give bitwise the same results), and every result is read back to the host.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { halfGradTolerance, klGradPTolerance } from '../src/tolerance.js'
import { NATIVE_BACKENDS, on } from './backends.js'
import { parityError } from './compare.js'
import { type Tolerance, combos, rng } from './helpers.js'

// the cuda backend starts every output as NaN here, so an element a kernel fails to write cannot pass
process.env.RLHF_KERNELS_POISON ??= '1'

export const SEED = Number(process.env.PARITY_SEED ?? Date.now() % 1_000_000)
/** the cpu row kernels' build, for the titles: test/isa.test.ts runs the family suites on the narrower ones */
export const ISA = rk.nativeStatus.info?.isa ?? 'no addon'
/** what a parity describe's title ends with */
export const PARITY_TITLE = `(seed ${SEED}, cpu row kernels ${ISA})`

export type Dtype = 'float32' | 'bfloat16' | 'float16'
export const DTYPES: Dtype[] = ['float32', 'bfloat16', 'float16']
// 2048 and 32000: one CTA and a two-CTA cluster of the single-pass CUDA kernels; the others unaligned or large
export const SHAPES: [number, number][] = [[1, 37], [5, 1001], [3, 4099], [6, 2048], [4, 32000], [2, 128256]]

/** A case's own seed: the run's SEED and the case's index among its op's cases. */
const seeded = <C>(cases: C[], salt: number) => cases.map((c, i) => ({ ...c, seed: SEED + salt * 100_003 + i }))

/**
 * The rows of a vocabulary-sized op's cases: native backend × dtype × [N, V] × variant, each with its label,
 * its own seed, and without the float32 dtype for a variant marked `half` (gradDtype 'input').
 */
export function vocabCases<V extends { label: string; half?: boolean }>(salt: number, variants: readonly V[]) {
  const rows = combos({ backend: NATIVE_BACKENDS, dtype: DTYPES, shape: SHAPES, variant: variants })
    .filter((c) => !(c.variant.half && c.dtype === 'float32'))
    .map((c) => ({ ...c, N: c.shape[0], V: c.shape[1], label: c.variant.label }))
  return seeded(rows, salt)
}

/** The rows of a per-token op's cases: native backend × aggregation × layout × variant, labelled. */
export function tokenCases<V extends { label: string }>(variants: readonly V[]) {
  return combos({ backend: NATIVE_BACKENDS, aggregation: rk.AGGREGATIONS, layout: TOKEN_LAYOUTS, variant: variants })
    .map((c) => ({ ...c, label: c.variant.label }))
}

/** The rows of cases that vary only the options: native backend × variant, labelled. */
export function optionCases<V extends { label: string }>(variants: readonly V[]) {
  return combos({ backend: NATIVE_BACKENDS, variant: variants }).map((c) => ({ ...c, label: c.variant.label }))
}

/** A variant's label in a title. */
export const show = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v, (_, x) => (ArrayBuffer.isView(x) ? `[${x.constructor.name}]` : x)))

export function expectParity(actual: unknown, expected: unknown, what: string, overrides: Record<string, Tolerance> = {}) {
  const error = parityError(actual, expected, overrides)
  if (error !== null) expect.fail(`${what}: ${error}`)
}

/** The op on `backend` vs on js, with the same arguments. */
export function compare<O, R>(backend: rk.BackendName, op: (o: O) => R, options: O, what: string, overrides?: (expected: R) => Record<string, Tolerance>) {
  const expected = on('js', () => op(options))
  const actual = on(backend, () => op(options))
  expectParity(actual, expected, what, overrides?.(expected))
}

export const klGradP = (r: rk.KlDivergenceResult) => ({ gradP: klGradPTolerance(r.perRow) })
export const halfGrad = (dtype: Dtype, ...paths: string[]) => () => Object.fromEntries(paths.map((p) => [p, halfGradTolerance(dtype)]))

export function logitsOf(r: ReturnType<typeof rng>, N: number, V: number, dtype: Dtype, scale = 3, withNegInf = false) {
  const z = r.f32(N * V, scale)
  if (withNegInf) for (let i = 0; i < z.length; i += 7) z[i] = -Infinity
  return dtype === 'float32' ? rk.tensor(z, [N, V]) : rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
}

/** A 16-bit copy of float32 data in `dtype`, or the data as a float32 tensor. */
export function asDtype(z: Float32Array, shape: number[], dtype: Dtype) {
  return dtype === 'float32' ? rk.tensor(z, shape) : rk.tensor(rk.encodeFloats(z, dtype), shape, { dtype })
}

/** The per-token ops' parity batch: B = 4 sequences of T = 33 (one fully masked), the same every case. */
export function tokenBatch() {
  const r = rng(SEED + 5)
  const B = 4, T = 33, M = B * T
  const mask = r.mask(M)
  mask.fill(0, T, 2 * T) // a fully masked sequence
  const logp = r.f32(M, 0.5), oldLogp = Float32Array.from(logp, (x) => x + r.normal() * 0.3), adv = r.f32(M)
  return { B, T, M, mask, logp, oldLogp, adv }
}

/** The per-token layouts: a [B, T] tensor, and packed sequences of a flat vector. */
export const TOKEN_LAYOUTS = ['[B, T]', 'packed'] as const
export function tokenLayout(layout: (typeof TOKEN_LAYOUTS)[number], x: ReturnType<typeof tokenBatch>) {
  return layout === '[B, T]'
    ? { logp: rk.tensor(x.logp, [x.B, x.T]), seqLengths: undefined }
    : { logp: x.logp, seqLengths: Int32Array.of(10, 50, 40, 32) }
}

/**
 * The inputs of consecutive cases that share a key (the variants of one dtype and shape, which run one after
 * another), made once for them as in one loop: `make` runs again only when the key changes.
 */
export function shared<K extends unknown[], T>(make: (...key: K) => T): (...key: K) => T {
  let last: string | null = null
  let value: T
  return (...key: K) => {
    const id = JSON.stringify(key)
    if (id !== last) {
      value = make(...key)
      last = id
    }
    return value
  }
}

/**
 * it.each rows [title, case] with the title made from `template`, each `$key` replaced by the case's value
 * (vitest's own `$key` quotes strings, which `-t` patterns such as test/isa.test.ts's would have to match).
 */
export function titled<C extends Record<string, unknown>>(template: string, cases: C[]): [string, C][] {
  return cases.map((c) => [template.replace(/\$(\w+)/g, (_, k: string) => String(c[k])), c])
}

/** A family's parity cases; without a native backend, one skipped case that says why (a suite needs one). */
export function describeParity(family: string, cases: () => void) {
  const title = `${family} parity with the js reference ${PARITY_TITLE}`
  if (NATIVE_BACKENDS.length > 0) return describe(title, cases)
  const why = rk.backends().filter((b) => b.name !== 'js').map((b) => `${b.name}: ${b.reason}`).join('; ')
  describe(title, () => it.skip(`no native backend to compare (${why})`, () => {}))
}
