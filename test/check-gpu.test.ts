/**
 * The GPU check (`npm run check:gpu`) on a machine without a GPU: it refuses at once and says why (never a
 * green "skipped"), its cases reach every kernel path by the launchers' own rule, and its parity section,
 * run with js as the target, is a real comparison that passes on correct results and fails on wrong ones.
 */
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { compareCase, contractCases, cudaUnusable, parity, parityCases, tilePath, vocabSizes } from '../src/cli/check-gpu.js'
import { registerBackend } from '../src/backend.js'
import type { Kernels } from '../src/kernels.js'
import type { CrossEntropyArgs } from '../src/vocab.js'
import { groupStart, invTemperature } from '../src/options.js'
import { jsKernels } from '../src/reference/index.js'
import type { FloatData } from '../src/validate.js'
import { decodeFloats } from '../src/dtypes.js'

const root = new URL('..', import.meta.url).pathname
const native = rk.backends().find((b) => b.name === 'cpu')!.available

describe('check --gpu without a usable GPU', () => {
  it.runIf(cudaUnusable() !== null)('exits 1 within seconds and names the reason', () => {
    const t0 = performance.now()
    const r = spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), 'check', '--gpu'], { encoding: 'utf8', timeout: 60_000 })
    expect(r.status).toBe(1)
    expect(r.stdout).toContain(`the cuda backend is not usable here: ${cudaUnusable()}`)
    expect(performance.now() - t0).toBeLessThan(20_000)
  })

  it('check without --gpu is a usage error', () => {
    const r = spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), 'check'], { encoding: 'utf8', timeout: 60_000 })
    expect(r.status).toBe(2)
    expect(r.stderr).toMatch(/check needs --gpu/)
  })
})

describe('the kernel paths the check reaches', () => {
  it('mirrors tile_cluster_size: 16-byte rows up to 8 CTAs of 16384 columns are single-pass', () => {
    expect(tilePath(37, 'float32')).toBe('two-pass (unaligned row)')
    expect(tilePath(32001, 'bfloat16')).toBe('two-pass (unaligned row)')
    expect(tilePath(16384, 'float32')).toBe('single-pass ×1')
    expect(tilePath(16385 + 7, 'bfloat16')).toBe('single-pass ×2')
    expect(tilePath(131072, 'float16')).toBe('single-pass ×8')
    expect(tilePath(152064, 'bfloat16')).toBe('two-pass (V > 131072)')
  })

  it('the full set of vocabulary sizes reaches every cluster size and every two-pass reason, in every dtype', () => {
    for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
      const paths = new Set(vocabSizes(false).map((V) => tilePath(V, dtype)))
      for (let c = 1; c <= 8; c++) expect(paths, `${dtype} cluster ${c}`).toContain(`single-pass ×${c}`)
      expect(paths).toContain('two-pass (unaligned row)')
      expect(paths).toContain('two-pass (V > 131072)')
    }
  })
})

describe.runIf(native)('the parity section, rehearsed with js as the target', () => {
  it('every quick case agrees with cpu within twice the parity tolerance', () => {
    const failures: string[] = []
    const log: string[] = []
    const summary = parity({ log: (l) => log.push(l), fail: (f) => failures.push(f) }, 'js', 11, true)
    expect(failures).toEqual([])
    expect(summary).toMatch(/^(\d+)\/\1 runs/)
    // every op of the package is exercised
    const ops = new Set(parityCases(11, true).map((c) => c.name.split(' ')[0]))
    for (const op of ['logProbs', 'logProbsBackward', 'crossEntropy', 'klDivergence', 'ppoLoss', 'policyLoss', 'klPenalty', 'valueLoss', 'gae', 'whiten', 'rewardLoss', 'groupAdvantages', 'crossEntropyPartial', 'klDivergencePartial']) {
      expect(ops, op).toContain(op)
    }
    expect(log.some((l) => l.startsWith('paths reached by crossEntropy:'))).toBe(true)
  }, 120_000)

  it('a result that differs by more than the tolerance, or in its fields, is reported', () => {
    const x = rk.tensor(Float32Array.of(0.5, 1, -2, 3), [2, 2])
    const shifted = {
      name: 'logProbs shifted on js', path: 'forward',
      run: () => {
        const r = rk.logProbs({ logits: x, targets: Int32Array.of(0, 1) })
        if (rk.currentBackend() === 'js') r.logp[1] += 1e-4
        return r
      },
    }
    expect(compareCase(shifted, 'js', 'cpu')).toMatch(/^logp\[1\]/)
    const extraField = { name: 'extra', path: 'forward', run: () => (rk.currentBackend() === 'js' ? { a: 1, b: 2 } : { a: 1 }) }
    expect(compareCase(extraField, 'js', 'cpu')).toMatch(/fields differ/)
    const nan = { name: 'nan', path: 'forward', run: () => ({ a: rk.currentBackend() === 'js' ? Float32Array.of(NaN) : Float32Array.of(0) }) }
    expect(compareCase(nan, 'js', 'cpu')).toMatch(/^a\[0\] = NaN/)
  })
})

/**
 * The earlier CUDA forms (bench/NOTES.md "The numerical contract on CUDA (issue 10)"), emulated on the js kernels
 * and installed as the cuda backend for one comparison: each new contract case must report them.
 */
const f = Math.fround
/** float32 data (the emulations take float32 cases only) */
const f32 = (x: FloatData) => {
  if (!(x.data instanceof Float32Array)) throw new Error(`a float32 input expected, got ${x.dtype}`)
  return x.data
}

/** the two-pass kernels' earlier s = fl(z·invT), then everything of s (the gradients times invT) */
function scaledFirst<A extends { temperature: number | Float32Array; V: number }>(a: A, keys: (keyof A)[]): A {
  const out = { ...a, temperature: 1 }
  for (const k of keys) {
    if (a[k] === null) continue
    const z = f32(a[k] as FloatData)
    ;(out as Record<keyof A, unknown>)[k] = { data: Float32Array.from(z, (x, i) => f(x * invTemperature(a.temperature, Math.floor(i / a.V)))), dtype: 'float32' }
  }
  return out
}
const timesInvT = (g: rk.Tensor, a: { temperature: number | Float32Array; V: number }) =>
  new rk.Tensor(Float32Array.from(g.toFloat32Array(), (x, i) => f(x * invTemperature(a.temperature, Math.floor(i / a.V)))), g.shape, 'float32')

const lse64 = (z: Float32Array, n: number, V: number, invT: number) => {
  let m = -Infinity, s = 0
  for (let v = n * V; v < (n + 1) * V; v++) m = Math.max(m, z[v] * invT)
  for (let v = n * V; v < (n + 1) * V; v++) s += Math.exp(z[v] * invT - m)
  return m + Math.log(s)
}

/**
 * cross_entropy_grad_kernel's earlier gradient (no class weights): s = fl(z·invT), lse = fl(m·invT + log S) with
 * the raw max m and S = Σ exp((z − m)·invT) in double,
 * q = fl(exp(fl(s − lse))), g_v = gs (cp q − (1−ε)[v = y] − ε/V), cp = 1 + 2·zLoss·lse, gs = scale·τ_n·invT.
 */
function earlierTwoPassGrad(a: CrossEntropyArgs): Float32Array {
  const z = f32(a.logits), tw = a.tokenWeights ? f32(a.tokenWeights) : null, { N, V } = a
  const counted = a.targets.filter((y) => y !== a.ignoreIndex).length
  const scale = a.reduction === 'mean' ? 1 / counted : 1
  const g = new Float32Array(N * V)
  for (let n = 0; n < N; n++) {
    const y = a.targets[n]
    if (y === a.ignoreIndex) continue
    const invT = f(invTemperature(a.temperature, n))
    const s = Float32Array.from(z.subarray(n * V, (n + 1) * V), (x) => f(x * invT))
    const lse = f(lse64(z, n, V, invT))
    const cp = f(1 + f(2 * a.zLoss * lse)), e = f(a.labelSmoothing / V), gs = f(scale * (tw ? tw[n] : 1) * invT)
    for (let v = 0; v < V; v++) g[n * V + v] = f(gs * f(f(f(cp * f(Math.exp(f(s[v] - lse)))) - (v === y ? f(1 - a.labelSmoothing) : 0)) - e))
  }
  return g
}

const EARLIER: Record<string, Partial<Kernels>> = {
  'two-pass s = fl(z·invT)': {
    crossEntropy: (a) => {
      const r = jsKernels.crossEntropy(scaledFirst(a, ['logits']))
      return { ...r, gradLogits: new rk.Tensor(earlierTwoPassGrad(a), a.shape, 'float32') }
    },
    ppoLoss: (a) => {
      const r = jsKernels.ppoLoss(scaledFirst(a, ['logits', 'anchorLogits']))
      return { ...r, gradLogits: timesInvT(r.gradLogits, a) }
    },
    klDivergence: (a) => {
      const r = jsKernels.klDivergence(scaledFirst(a, ['pLogits', 'qLogits']))
      return { ...r, ...(r.gradQ ? { gradQ: timesInvT(r.gradQ, a) } : {}), ...(r.gradP ? { gradP: timesInvT(r.gradP, a) } : {}) }
    },
  },
  // the tile's earlier loss: (1−ε)(lse − x_y) + ε/V (V·lse − Σ x) with lse = fl(m + log S), d loss/d lse = 1
  'tile loss from a float32 lse': {
    crossEntropy: (a) => {
      const r = jsKernels.crossEntropy(a)
      const z = Float32Array.from(decodeFloats(a.logits.data, a.logits.dtype))
      return { ...r, losses: Float32Array.from(r.losses!, (l, n) => { const L = lse64(z, n, a.V, 1); return f(l + (f(L) - L)) }) }
    },
  },
  // the true class as 1 − fl(p_y): g (1 − fl(exp(log p_y)))/T
  'logProbsBackward 1 − fl(p_y)': {
    logProbsBackward: (a) => {
      const g = jsKernels.logProbsBackward(a).gradLogits.toFloat32Array()
      const z = f32(a.logits), lse = f32(a.lse), gl = f32(a.gradLogp!)
      for (let n = 0; n < a.N; n++) {
        const y = a.targets[n], invT = invTemperature(a.temperature, n)
        if (y >= 0) g[n * a.V + y] = f(gl[n] * f(1 - f(Math.exp(z[n * a.V + y] * invT - lse[n]))) * invT)
      }
      return { gradLogits: new rk.Tensor(g, [a.N, a.V], 'float32') }
    },
  },
  // a term whose p rounds to 0 in float32 counted as 0 even where q = 0
  'KL with p rounded to 0 first': {
    klDivergence: (a) => {
      const zp = Float32Array.from(f32(a.pLogits)), zq = f32(a.qLogits)
      for (let i = 0; i < zp.length; i++) {
        const n = Math.floor(i / a.V)
        if (zq[i] === -Infinity && f(Math.exp(zp[i] * invTemperature(a.temperature, n) - lse64(zp, n, a.V, invTemperature(a.temperature, n)))) === 0) zp[i] = -Infinity
      }
      return jsKernels.klDivergence({ ...a, pLogits: { data: zp, dtype: 'float32' } })
    },
  },
  // reward_prompt's earlier loss: lse = fl(m + logf(Σ expf(s − m))), loss fl(lse − s_b)
  'reward loss from a float32 lse': {
    rewardLoss: (a) => {
      const r = jsKernels.rewardLoss(a)
      const s = f32(a.scores)
      const losses = Float32Array.from(r.losses!, (l, i) => {
        const lo = groupStart(a, i), hi = groupStart(a, i + 1)
        let m = -Infinity, sum = 0
        for (let j = lo; j < hi; j++) m = Math.max(m, s[j])
        for (let j = lo; j < hi; j++) sum = f(sum + f(Math.exp(f(s[j] - m))))
        return a.chosen![i] < 0 ? l : f(f(m + f(Math.log(sum))) - s[lo + a.chosen![i]])
      })
      return { ...r, losses }
    },
  },
  // the scan in float32: A_t = fl(δ_t + γλ A_{t+1})
  'GAE in float32': {
    gae: (a) => {
      const r = f32(a.rewards), v = f32(a.values), last = a.lastValues ? f32(a.lastValues) : null
      const adv = new Float32Array(r.length), ret = new Float32Array(r.length)
      for (let b = 0; b + 1 < a.layout.offsets.length; b++) {
        let A = 0, next = last ? last[b] : 0
        for (let t = a.layout.offsets[b + 1] - 1; t >= a.layout.offsets[b]; t--) {
          A = f(f(f(f(r[t] + f(a.gamma * next)) - v[t])) + f(f(a.gamma * a.lambda) * A))
          adv[t] = A
          ret[t] = f(A + v[t])
          next = v[t]
        }
      }
      return { advantages: adv, returns: ret }
    },
  },
}

function onEarlier<T>(form: string, fn: () => T): T {
  const why = rk.backends().find((b) => b.name === 'cuda')!.reason
  registerBackend('cuda', { ...jsKernels, ...EARLIER[form] } as Kernels)
  try {
    return fn()
  } finally {
    registerBackend('cuda', null, why)
  }
}

describe.runIf(native && cudaUnusable() !== null)('the contract cases report the earlier CUDA forms (emulated on js as the cuda backend)', () => {
  const cases = new Map(contractCases(11).map((c) => [c.name, c]))
  const named = (name: string) => {
    const c = cases.get(name)
    if (!c) throw new Error(`no case ${name}`)
    return c
  }
  it.each([
    ['two-pass s = fl(z·invT)', 'crossEntropy float32 [6, 2048] |z|/T≈1e4 T=0.7 labelSmoothing zLoss grad'],
    ['two-pass s = fl(z·invT)', 'crossEntropy float32 [6, 2048] confident row T=0.7 grad'],
    ['two-pass s = fl(z·invT)', 'ppoLoss float32 [6, 2048] |z|/T≈1e4 k3 T=0.7'],
    ['two-pass s = fl(z·invT)', 'ppoLoss float32 [6, 2048] |z|/T≈1e4 dppo-tv trustRegion full T=0.7'],
    ['two-pass s = fl(z·invT)', 'ppoLoss float32 [6, 2048] |z|/T≈1e4 dppo-kl trustRegion full T=0.7'],
    ['two-pass s = fl(z·invT)', 'klDivergence float32 [6, 2048] |z|/T≈1e4 +inf row T=0.7 grad both'],
    ['two-pass s = fl(z·invT)', 'klDivergence float32 [6, 2048] |z|/T≈1e4 +inf row T=0.7 grad q'],
    ['tile loss from a float32 lse', 'crossEntropy float32 [6, 2048] |z|/T≈1e4 T=1 labelSmoothing none'],
    ['tile loss from a float32 lse', 'crossEntropy bfloat16 [6, 2048] |z|/T≈1e4 T=1 labelSmoothing none'],
    ['logProbsBackward 1 − fl(p_y)', 'logProbsBackward float32 [6, 2048] confident row T=0.7'],
    ['logProbsBackward 1 − fl(p_y)', 'logProbsBackward float32 [6, 2048] confident row T=1'],
    ['KL with p rounded to 0 first', 'klDivergence float32 [6, 2047] |z|/T≈1e4 +inf row T=0.7 grad both'],
    ['reward loss from a float32 lse', 'rewardLoss 16×4 scores ±9000, chosen p = 1 − 2.3e-6'],
    ['GAE in float32', 'gae [2, 4099] γ=λ=1 rewards ~10'],
  ])('%s: %s', (form, name) => {
    const c = named(name)
    expect(compareCase(c, 'js', 'cpu'), 'the case passes on the js kernels').toBeNull()
    const problem = onEarlier(form, () => compareCase(c, 'cuda', 'cpu'))
    console.log(`${form} | ${name}: ${problem}`)
    expect(problem).not.toBeNull()
  })
})
