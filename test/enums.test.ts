/**
 * Enum options cross to the addon as ordinals (src/native.ts nativeArgs): the native enums (RK_<LIST>(X) in
 * native/include/rlhf/*.h, exported by the addon as `enums`) must list the same names in the same order as
 * src/choices.ts, or an ordinal would name another choice.
 */
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import * as choices from '../src/choices.js'
import { nativeArgs } from '../src/native.js'

const addonPath = new URL('../build/Release/rlhf_kernels.node', import.meta.url).pathname
const addon = existsSync(addonPath) ? (createRequire(import.meta.url)(addonPath) as { enums: Record<string, string[]> }) : null

describe.skipIf(addon === null)('enum lists: the native order against src/choices.ts', () => {
  it('every native list has its TypeScript list', () => {
    for (const key of Object.keys(addon!.enums)) expect(choices, key).toHaveProperty(key)
  })

  it.each(Object.keys(addon?.enums ?? {}))('%s', (key) => {
    expect(addon!.enums[key]).toEqual([...(choices as unknown as Record<string, readonly string[]>)[key]])
  })
})

describe('nativeArgs', () => {
  it('turns each enum option and the aggregation mode into its index, and leaves the rest as it is', () => {
    const mask = new Uint8Array(2)
    const args = { reduction: 'none', estimator: 'k2', klEstimator: 'full', method: 'rloo', agg: { mode: 'seq-mean-token-sum', normConst: null }, mask, gradDtype: 'float32' }
    expect(nativeArgs(args)).toEqual({ reduction: 2, estimator: 2, klEstimator: 4, method: 1, agg: { mode: 2, normConst: null }, mask, gradDtype: 'float32' })
    expect(args.agg.mode).toBe('seq-mean-token-sum')  // the validated arguments are not changed
  })
})
