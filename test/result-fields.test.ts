/**
 * The scalar result fields each op's C++ declares once (RK_<OP>_FIELDS in native/include/rlhf/*.h, exported by
 * the addon as resultFields) against the scalar keys of the js reference's result for the same op: a field
 * added, renamed or dropped on one side only fails here.
 */
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { on } from './backends.js'

const addonPath = new URL('../build/Release/rlhf_kernels.node', import.meta.url).pathname
const addon = existsSync(addonPath) ? (createRequire(import.meta.url)(addonPath) as { resultFields: Record<string, string[]> }) : null

// Scalars the TypeScript layer forms from the native ones (not the addon's): ppoLoss's objective is −loss.
const DERIVED: Record<string, string[]> = { ppoLoss: ['objective'] }

const logits = rk.tensor(Float32Array.from([0.1, -0.4, 0.7, 1.2, 0.3, -0.9]), [2, 3])
const t4 = (...v: number[]) => Float32Array.from(v)
const cases: [string, () => object][] = [
  ['crossEntropy', () => rk.crossEntropy({ logits, targets: Int32Array.from([0, 2]) })],
  ['klDivergence', () => rk.klDivergence({ pLogits: logits, qLogits: rk.tensor(t4(0.2, 0.1, -0.3, 0.5, 0.5, 0), [2, 3]) })],
  ['rewardLoss', () => rk.rewardLoss({ scores: t4(0.3, -0.2, 1, 0.4, 0.1), offsets: Int32Array.from([0, 2, 5]), chosen: Int32Array.from([0, 2]) })],
  ['policyLoss', () => rk.policyLoss({ logp: t4(-1, -0.5, -2, -0.1), oldLogp: t4(-1.1, -0.4, -2.5, -0.1), advantages: t4(1, -1, 0.5, 2) })],
  ['klPenalty', () => rk.klPenalty({ logp: t4(-1, -0.5, -2, -0.1), refLogp: t4(-1.1, -0.4, -2.5, -0.1) })],
  ['valueLoss', () => rk.valueLoss({ values: t4(0.1, 0.5, -0.2, 1), returns: t4(0.3, 0.2, 0, 1.5) })],
  ['preferenceLoss', () => rk.preferenceLoss({ logp: t4(-3, -5, -2, -4, -1), refLogp: t4(-3.5, -4, -2, -4.5, -2), offsets: Int32Array.from([0, 2, 5]), chosen: Int32Array.from([0, 2]) })],
  ['ppoLoss', () => rk.ppoLoss({
    logits, actions: Int32Array.from([1, 0]), oldLogp: t4(-1, -2), advantages: t4(0.5, -1), values: t4(0.1, 0.2), returns: t4(0.3, -0.1),
  })],
]

const scalarKeys = (o: object) => Object.entries(o).filter(([, v]) => typeof v === 'number').map(([k]) => k).sort()

describe.skipIf(addon === null)('result fields: the C++ declaration against the js reference', () => {
  it('every op with scalar results is declared, and nothing else', () => {
    const declared = Object.keys(addon!.resultFields).filter((k) => !k.includes('.')).sort()
    expect(declared).toEqual(cases.map(([op]) => op).sort())
  })

  it.each(cases)('%s', (op, call) => {
    const result = on('js', call) as Record<string, unknown>
    const native = [...addon!.resultFields[op], ...(DERIVED[op] ?? [])].sort()
    expect(native).toEqual(scalarKeys(result))
    for (const [key, value] of Object.entries(result)) {
      if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value) || value instanceof rk.Tensor) continue
      expect([...addon!.resultFields[`${op}.${key}`]].sort(), `${op}.${key}`).toEqual(scalarKeys(value))
    }
  })
})
