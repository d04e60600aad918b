/**
 * `rlhf-kernels demo --preference`: the demo's hidden-preference task (src/cli/demo.ts) trained without a
 * reward model: the policy learns from the humans' choices directly with preferenceLoss, its implicit reward
 * being β·(log π_θ(y|x) − log π_ref(y|x)); and the reward model + PPO pipeline of `demo` runs on the same task
 * (same seed: the same hidden matrix and the same comparisons) so both curves of the true reward are drawn
 * side by side.
 *
 * One step: the policy's logits at every token of every candidate → logProbs → sequenceLogProbs (sum) for the
 * policy and for the frozen reference → preferenceLoss over each prompt's K_n candidates (Plackett–Luce top-1
 * by default: the seed's K-wise loss on implicit rewards) → sequenceLogProbs with gradSeq scatters the
 * gradient to the tokens → logProbsBackward to the logits → the policy's parameters (Adam).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as rk from '../index.js'
import { mulberry32 } from '../internal.js'
import { Adam, DEMO_DEFAULTS, type DemoOptions, type DemoSummary, runDemo } from './demo.js'
import { lineChart } from './plot.js'
import { formatTable } from './table.js'
import { Progress } from './progress.js'

export interface PreferenceDemoOptions extends DemoOptions {
  type: rk.PreferenceType
  beta: number
  /** comparisons per preference step */
  prefBatch: number
}

export const PREFERENCE_DEMO_DEFAULTS: PreferenceDemoOptions = { ...DEMO_DEFAULTS, out: 'rlhf-demo-preference', type: 'plackett-luce', beta: 0.5, prefBatch: 64 }

export interface PreferenceDemoSummary {
  backend: string
  type: rk.PreferenceType
  trueRewardBefore: number
  trueRewardAfter: number
  /** the same task with reward model + PPO (runDemo) */
  ppo: Pick<DemoSummary, 'trueRewardBefore' | 'trueRewardAfter' | 'rmHeldOutAccuracy'>
  seconds: number
  curves: {
    preference: { step: number; loss: number; accuracy: number; margin: number; trueReward: number }[]
    ppo: { step: number; trueReward: number }[]
  }
}

/**
 * The demo's task drawn as runDemo draws it, in the same order from the same seed: the hidden scores, then
 * 4000 comparisons of K = 2..6 uniform responses, the human choosing with probability softmax(4 · true reward).
 */
function task(seed: number, P: number, V: number, L: number) {
  const { uniform, normal } = mulberry32(seed)
  const int = (n: number) => Math.floor(uniform() * n)
  const truth = Float64Array.from({ length: P * V }, () => normal())
  const trueReward = (c: number, y: ArrayLike<number>) => {
    let s = 0
    for (let t = 0; t < L; t++) s += truth[c * V + y[t]]
    return s / L
  }
  const comparisons = Array.from({ length: 4000 }, () => {
    const context = int(P)
    const K = 2 + int(5)
    const candidates = Array.from({ length: K }, () => Int32Array.from({ length: L }, () => int(V)))
    const scores = candidates.map((y) => trueReward(context, y))
    const m = Math.max(...scores)
    const w = scores.map((s) => Math.exp(4 * (s - m)))
    const z = w.reduce((a, b) => a + b, 0)
    let u = uniform(), chosen = K - 1
    for (let i = 0; i < K; i++) if ((u -= w[i] / z) <= 0) { chosen = i; break }
    return { context, candidates, chosen }
  })
  return { truth, trueReward, comparisons, uniform, int }
}

export function runPreferenceDemo(options: Partial<PreferenceDemoOptions> = {}): PreferenceDemoSummary {
  const o = { ...PREFERENCE_DEMO_DEFAULTS, ...options }
  const started = performance.now()
  const { contexts: P, vocab: V, length: L } = o
  const { trueReward, comparisons, uniform, int } = task(o.seed, P, V, L)
  const BOS = V
  // the policy of runDemo: logits(c, prev) = Wc[c] + Wp[prev]
  const init = mulberry32(o.seed + 1)
  const policy = Float64Array.from({ length: (P + V + 1) * V }, () => 0.01 * init.normal())
  const reference = Float64Array.from(policy)
  const opt = new Adam(policy, 0.03)
  const row = (params: Float64Array, c: number, prev: number, out: Float32Array, at: number) => {
    for (let v = 0; v < V; v++) out[at + v] = params[c * V + v] + params[(P + prev) * V + v]
  }
  const meanTrue = (n: number) => {
    const logits = new Float32Array(V)
    const y = new Int32Array(L)
    let s = 0
    for (let b = 0; b < n; b++) {
      const c = int(P)
      for (let t = 0, prev = BOS; t < L; t++) {
        row(policy, c, prev, logits, 0)
        let m = -Infinity, z = 0
        for (let v = 0; v < V; v++) m = Math.max(m, logits[v])
        for (let v = 0; v < V; v++) z += Math.exp(logits[v] - m)
        let u = uniform() * z
        y[t] = V - 1
        for (let v = 0; v < V; v++) if ((u -= Math.exp(logits[v] - m)) <= 0) { y[t] = v; break }
        prev = y[t]
      }
      s += trueReward(c, y)
    }
    return s / n
  }

  const trueBefore = meanTrue(2048)
  const curve: PreferenceDemoSummary['curves']['preference'] = []
  const bar = new Progress('preference  ', o.steps, o.quiet)
  for (let s = 1; s <= o.steps; s++) {
    const batch = Array.from({ length: o.prefBatch }, () => comparisons[int(comparisons.length)])
    const offsets = new Int32Array(batch.length + 1)
    batch.forEach((b, n) => (offsets[n + 1] = offsets[n] + b.candidates.length))
    const C = offsets[batch.length], rows = C * L
    const logits = new Float32Array(rows * V), refLogits = new Float32Array(rows * V), targets = new Int32Array(rows)
    const ctx = new Int32Array(rows), prevs = new Int32Array(rows)
    batch.forEach((b, n) => b.candidates.forEach((y, i) => {
      for (let t = 0; t < L; t++) {
        const at = (offsets[n] + i) * L + t
        ctx[at] = b.context
        prevs[at] = t === 0 ? BOS : y[t - 1]
        targets[at] = y[t]
        row(policy, b.context, prevs[at], logits, at * V)
        row(reference, b.context, prevs[at], refLogits, at * V)
      }
    }))
    const z = rk.tensor(logits, [rows, V])
    const tokens = rk.logProbs({ logits: z, targets })
    const refTokens = rk.logProbs({ logits: rk.tensor(refLogits, [rows, V]), targets })
    const seq = rk.sequenceLogProbs({ logp: rk.tensor(tokens.logp, [C, L]) })
    const refSeq = rk.sequenceLogProbs({ logp: rk.tensor(refTokens.logp, [C, L]) })
    const out = rk.preferenceLoss({
      logp: seq.seqLogp, refLogp: refSeq.seqLogp, offsets, chosen: Int32Array.from(batch, (b) => b.chosen), type: o.type, beta: o.beta,
    })
    const gradTokens = rk.sequenceLogProbs({ logp: rk.tensor(tokens.logp, [C, L]), gradSeq: out.gradLogp }).gradLogp!
    const g = rk.logProbsBackward({ logits: z, targets, lse: tokens.lse, gradLogp: gradTokens }).gradLogits.data as Float32Array
    const grad = new Float64Array(policy.length)
    for (let r = 0; r < rows; r++) {
      for (let v = 0; v < V; v++) {
        grad[ctx[r] * V + v] += g[r * V + v]
        grad[(P + prevs[r]) * V + v] += g[r * V + v]
      }
    }
    opt.step(grad)
    const trueNow = s % 5 === 0 || s === o.steps ? meanTrue(256) : NaN
    curve.push({ step: s, loss: out.loss, accuracy: out.accuracy, margin: out.margin, trueReward: trueNow })
    bar.update(s, `loss ${out.loss.toFixed(3)}  accuracy ${out.accuracy.toFixed(2)}`)
  }
  const trueAfter = meanTrue(2048)

  const baseline = runDemo({ ...o, out: null })
  const summary: PreferenceDemoSummary = {
    backend: rk.currentBackend(), type: o.type, trueRewardBefore: trueBefore, trueRewardAfter: trueAfter,
    ppo: { trueRewardBefore: baseline.trueRewardBefore, trueRewardAfter: baseline.trueRewardAfter, rmHeldOutAccuracy: baseline.rmHeldOutAccuracy },
    seconds: (performance.now() - started) / 1000,
    curves: { preference: curve, ppo: baseline.curves.ppo.map((p) => ({ step: p.step, trueReward: p.trueReward })) },
  }
  if (o.out !== null) {
    mkdirSync(o.out, { recursive: true })
    writeFileSync(join(o.out, 'curves.json'), `${JSON.stringify({ options: o, ...summary }, null, 2)}\n`)
    writeFileSync(join(o.out, 'curves.svg'), lineChart([
      {
        title: `True (hidden) reward: preferenceLoss (${o.type}) vs reward model + PPO`, xlabel: 'step (preference) / iteration (PPO)',
        series: [
          { name: `preferenceLoss`, points: curve.filter((p) => Number.isFinite(p.trueReward)).map((p) => [p.step, p.trueReward]) },
          { name: 'RM + PPO', points: summary.curves.ppo.map((p) => [p.step, p.trueReward]) },
        ],
      },
      {
        title: `preferenceLoss (${o.type}, β = ${o.beta}) on the human comparisons`, xlabel: 'step',
        series: [
          { name: 'loss', points: curve.map((p) => [p.step, p.loss]) },
          { name: 'batch accuracy', points: curve.map((p) => [p.step, p.accuracy]) },
          { name: 'reward margin', points: curve.map((p) => [p.step, p.margin]) },
        ],
      },
    ]))
  }
  return summary
}

/** The command's form: run, print the summary table, say where the curves went. */
export function preferenceDemoCommand(options: Partial<PreferenceDemoOptions>): void {
  const out = options.out === undefined || options.out === DEMO_DEFAULTS.out ? PREFERENCE_DEMO_DEFAULTS.out : options.out
  const s = runPreferenceDemo({ ...options, out })
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`
  const last = s.curves.preference.at(-1)!
  console.log(`\npreference demo (${s.type}) on the ${s.backend} backend, ${s.seconds.toFixed(1)} s`)
  console.log(formatTable(['', 'value'], [
    ['preferenceLoss: final batch loss', last.loss.toFixed(4)],
    ['preferenceLoss: final batch accuracy (implicit rewards)', pct(last.accuracy)],
    ['true (hidden) reward before', s.trueRewardBefore.toFixed(3)],
    ['true (hidden) reward after preferenceLoss', s.trueRewardAfter.toFixed(3)],
    ['true (hidden) reward after reward model + PPO', s.ppo.trueRewardAfter.toFixed(3)],
  ]))
  if (out !== null) console.log(`curves: ${join(out, 'curves.svg')}, ${join(out, 'curves.json')}`)
}
