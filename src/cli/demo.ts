/**
 * `rlhf-kernels demo`: RLHF end to end on a synthetic task whose true preferences the learner never sees.
 *
 * The task: a prompt is one of P contexts; a response is L tokens from a vocabulary of V. A hidden matrix
 * A* scores each token in each context; the true reward of a response is the mean of its tokens' scores.
 * "Humans" compare K candidates (K varies per prompt) and choose one with probability softmax(β·true reward),
 * the seed's model of preference data.
 *
 * Stage 1 trains a linear reward model (one weight per context and token) with rewardLoss on the humans'
 * choices (or, with --soft, on their choice distributions). Stage 2 trains a policy (context and previous-
 * token logits) and a value head with ppoLoss, against the learned reward: sampling, GAE, whitened
 * advantages, several epochs per batch, clipping, and a full-vocabulary KL to the initial (reference) policy.
 * The models are small enough to write by hand; every loss and gradient comes from this package.
 *
 * With a preset (--preset), stage 2 takes a trainer's defaults: a preset with GAE settings (verl-ppo, trl-ppo,
 * openrlhf-ppo) keeps GAE, whitening and the value head under the preset; the others (verl-grpo, dapo, ...)
 * sample groups of responses to one context, take groupAdvantages of their scores and train no value head.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as rk from '../index.js'
import { mulberry32 } from '../internal.js'
import { lineChart } from './plot.js'
import { Progress } from './progress.js'

export interface DemoOptions {
  seed: number
  /** PPO iterations */
  steps: number
  /** reward-model optimiser steps */
  rmSteps: number
  soft: boolean
  /** stage 2 with a trainer's defaults (see above); default none: the demo's own settings */
  preset?: rk.PresetName
  out: string | null
  quiet: boolean
  /** problem size (tests use a smaller one) */
  contexts: number
  vocab: number
  length: number
  batch: number
}

export const DEMO_DEFAULTS: DemoOptions = {
  seed: 1, steps: 150, rmSteps: 600, soft: false, out: 'rlhf-demo', quiet: false, contexts: 8, vocab: 64, length: 12, batch: 128,
}

export interface DemoSummary {
  backend: string
  rmHeldOutAccuracy: number
  rmHumanAccuracy: number
  trueRewardBefore: number
  trueRewardAfter: number
  finalKl: number
  finalClipFraction: number
  seconds: number
  curves: {
    rm: { step: number; loss: number; accuracy: number }[]
    ppo: { step: number; trueReward: number; modelReward: number; kl: number; clipFraction: number; loss: number }[]
  }
}

function random(seed: number) {
  const { uniform, normal } = mulberry32(seed)
  /** an index drawn from softmax(logits) */
  const categorical = (logits: ArrayLike<number>, from = 0, n = logits.length) => {
    let m = -Infinity
    for (let i = 0; i < n; i++) m = Math.max(m, logits[from + i])
    let s = 0
    for (let i = 0; i < n; i++) s += Math.exp(logits[from + i] - m)
    let u = uniform() * s
    for (let i = 0; i < n; i++) {
      u -= Math.exp(logits[from + i] - m)
      if (u <= 0) return i
    }
    return n - 1
  }
  return { uniform, normal, categorical, int: (n: number) => Math.floor(uniform() * n) }
}

/** Adam over one flat parameter vector. */
export class Adam {
  private m: Float64Array
  private v: Float64Array
  private t = 0
  constructor(readonly params: Float64Array, private lr: number) {
    this.m = new Float64Array(params.length)
    this.v = new Float64Array(params.length)
  }
  step(grad: Float64Array) {
    this.t++
    const b1 = 0.9, b2 = 0.999
    const c1 = 1 - b1 ** this.t, c2 = 1 - b2 ** this.t
    for (let i = 0; i < grad.length; i++) {
      this.m[i] = b1 * this.m[i] + (1 - b1) * grad[i]
      this.v[i] = b2 * this.v[i] + (1 - b2) * grad[i] * grad[i]
      this.params[i] -= (this.lr * this.m[i]) / c1 / (Math.sqrt(this.v[i] / c2) + 1e-8)
    }
  }
}

interface Comparison {
  context: number
  candidates: Int32Array[]
  trueScores: number[]
  chosen: number
  humanProbs: number[]
}

export function runDemo(options: Partial<DemoOptions> = {}): DemoSummary {
  const o = { ...DEMO_DEFAULTS, ...options }
  const started = performance.now()
  const r = random(o.seed)
  const { contexts: P, vocab: V, length: L } = o
  const humanBeta = 4

  // the hidden truth
  const truth = Float64Array.from({ length: P * V }, () => r.normal())
  const trueReward = (c: number, y: Int32Array) => {
    let s = 0
    for (let t = 0; t < L; t++) s += truth[c * V + y[t]]
    return s / L
  }

  // ---------------- stage 1: the reward model from human comparisons ----------------
  const uniformResponse = () => Int32Array.from({ length: L }, () => r.int(V))
  const comparison = (): Comparison => {
    const context = r.int(P)
    const K = 2 + r.int(5)
    const candidates = Array.from({ length: K }, uniformResponse)
    const trueScores = candidates.map((y) => trueReward(context, y))
    const m = Math.max(...trueScores)
    const w = trueScores.map((s) => Math.exp(humanBeta * (s - m)))
    const z = w.reduce((a, b) => a + b, 0)
    const humanProbs = w.map((x) => x / z)
    let u = r.uniform(), chosen = K - 1
    for (let i = 0; i < K; i++) if ((u -= humanProbs[i]) <= 0) { chosen = i; break }
    return { context, candidates, trueScores, chosen, humanProbs }
  }
  const train = Array.from({ length: 4000 }, comparison)
  const heldOut = Array.from({ length: 400 }, comparison)

  const phi = new Float64Array(P * V) // reward model: r_φ(c, y) = mean_t φ[c, y_t]
  const rmScore = (c: number, y: Int32Array) => {
    let s = 0
    for (let t = 0; t < L; t++) s += phi[c * V + y[t]]
    return s / L
  }
  const rmOpt = new Adam(phi, 0.05)
  const rmCurve: DemoSummary['curves']['rm'] = []
  const rmBar = new Progress('reward model', o.rmSteps, o.quiet)
  const rmBatch = 64
  for (let step = 1; step <= o.rmSteps; step++) {
    const batch = Array.from({ length: rmBatch }, () => train[r.int(train.length)])
    const offsets = new Int32Array(rmBatch + 1)
    batch.forEach((b, n) => (offsets[n + 1] = offsets[n] + b.candidates.length))
    const scores = new Float32Array(offsets[rmBatch])
    const targetProbs = new Float32Array(offsets[rmBatch])
    batch.forEach((b, n) => b.candidates.forEach((y, i) => {
      scores[offsets[n] + i] = rmScore(b.context, y)
      targetProbs[offsets[n] + i] = b.humanProbs[i]
    }))
    const label = o.soft ? { targetProbs } : { chosen: Int32Array.from(batch, (b) => b.chosen) }
    const out = rk.rewardLoss({ scores, offsets, ...label })
    const grad = new Float64Array(P * V)
    batch.forEach((b, n) => b.candidates.forEach((y, i) => {
      const g = out.gradScores[offsets[n] + i] / L
      for (let t = 0; t < L; t++) grad[b.context * V + y[t]] += g
    }))
    rmOpt.step(grad)
    if (step % 10 === 0 || step === o.rmSteps) rmCurve.push({ step, loss: out.loss, accuracy: out.accuracy })
    rmBar.update(step, `loss ${out.loss.toFixed(3)}`)
  }
  // held-out: does the model order two candidates as the hidden truth does?
  let agree = 0, pairs = 0, human = 0
  for (const h of heldOut) {
    const s = h.candidates.map((y) => rmScore(h.context, y))
    for (let i = 0; i < s.length; i++) {
      for (let j = i + 1; j < s.length; j++) {
        if (h.trueScores[i] === h.trueScores[j]) continue
        pairs++
        if ((s[i] - s[j]) * (h.trueScores[i] - h.trueScores[j]) > 0) agree++
      }
    }
    if (s.indexOf(Math.max(...s)) === h.chosen) human++
  }

  // ---------------- stage 2: PPO against the learned reward ----------------
  const BOS = V
  // policy: logits(c, prev) = Wc[c] + Wp[prev]; value: v(c, t, prev) = Uc[c] + Ut[t] + Up[prev]
  const policy = Float64Array.from({ length: (P + V + 1) * V }, () => 0.01 * r.normal())
  const reference = Float64Array.from(policy)
  const value = new Float64Array(P + L + V + 1)
  const policyOpt = new Adam(policy, 0.03)
  const valueOpt = new Adam(value, 0.05)
  const rowLogits = (params: Float64Array, c: number, prev: number, out: Float32Array, at: number) => {
    for (let v = 0; v < V; v++) out[at + v] = params[c * V + v] + params[(P + prev) * V + v]
  }
  const valueOf = (c: number, t: number, prev: number) => value[c] + value[P + t] + value[P + L + prev]
  const B = o.batch, N = B * L

  /** n responses; `group` consecutive ones share a context */
  const sample = (params: Float64Array, n: number, group = 1) => {
    const ctx = new Int32Array(n)
    for (let b = 0; b < n; b++) ctx[b] = b % group === 0 ? r.int(P) : ctx[b - 1]
    const actions = new Int32Array(n * L)
    const row = new Float32Array(V)
    for (let b = 0; b < n; b++) {
      let prev = BOS
      for (let t = 0; t < L; t++) {
        rowLogits(params, ctx[b], prev, row, 0)
        prev = actions[b * L + t] = r.categorical(row)
      }
    }
    return { ctx, actions }
  }
  const meanTrue = (params: Float64Array, n: number) => {
    const { ctx, actions } = sample(params, n)
    let s = 0
    for (let b = 0; b < n; b++) s += trueReward(ctx[b], actions.subarray(b * L, (b + 1) * L))
    return s / n
  }
  const allLogits = (params: Float64Array, ctx: Int32Array, actions: Int32Array) => {
    const out = new Float32Array(N * V)
    for (let b = 0; b < B; b++) for (let t = 0; t < L; t++) rowLogits(params, ctx[b], t === 0 ? BOS : actions[b * L + t - 1], out, (b * L + t) * V)
    return rk.tensor(out, [B, L, V])
  }

  // a group preset: groups of G responses per context, group advantages, no value head
  const grouped = o.preset !== undefined && rk.presetsFor('groupAdvantages').includes(o.preset)
  const G = grouped ? [8, 4, 2].find((g) => B % g === 0) ?? 1 : 1
  const trueBefore = meanTrue(reference, 2048)
  const ppoCurve: DemoSummary['curves']['ppo'] = []
  const ppoBar = new Progress('PPO         ', o.steps, o.quiet)
  let last = { kl: 0, clipFraction: 0 }
  for (let step = 1; step <= o.steps; step++) {
    const { ctx, actions } = sample(policy, B, G)
    const logits = allLogits(policy, ctx, actions)
    const refLogits = allLogits(reference, ctx, actions)
    // old log-probs through the same kernel as the update's, so the first ratio is exactly 1
    const oldLogp = rk.logProbs({ logits, targets: actions }).logp
    const rewards = new Float32Array(N)
    const values = new Float32Array(N)
    let modelReward = 0, trueMean = 0
    for (let b = 0; b < B; b++) {
      const y = actions.subarray(b * L, (b + 1) * L)
      const s = rmScore(ctx[b], y)
      rewards[b * L + L - 1] = s
      modelReward += s / B
      trueMean += trueReward(ctx[b], y) / B
      for (let t = 0; t < L; t++) values[b * L + t] = valueOf(ctx[b], t, t === 0 ? BOS : y[t - 1])
    }
    let whitened: Float32Array, returns: Float32Array | undefined
    if (grouped) {
      const perSequence = rk.groupAdvantages({ scores: Float32Array.from({ length: B }, (_, b) => rewards[b * L + L - 1]), groupSize: G, preset: o.preset })
      whitened = Float32Array.from({ length: N }, (_, i) => perSequence[Math.floor(i / L)])
    } else {
      const settings = o.preset !== undefined ? { preset: o.preset } : { gamma: 1, lambda: 0.95 }
      const g = rk.gae({ rewards: rk.tensor(rewards, [B, L]), values, ...settings })
      returns = g.returns
      whitened = rk.whiten({ values: g.advantages, preset: o.preset })
    }
    let out!: rk.PpoLossResult
    for (let epoch = 0; epoch < 4; epoch++) {
      const current = allLogits(policy, ctx, actions)
      const v = Float32Array.from({ length: N }, (_, i) => valueOf(ctx[Math.floor(i / L)], i % L, i % L === 0 ? BOS : actions[i - 1]))
      out = rk.ppoLoss({
        logits: current, actions, oldLogp, refLogits, advantages: whitened,
        ...(grouped ? {} : { values: v, returns, oldValues: values }),
        ...(o.preset !== undefined ? { preset: o.preset } : { beta: 0.1, c1: 0.5, valueClip: 0.2, clipLow: 0.2, clipHigh: 0.2 }),
      })
      const gp = new Float64Array(policy.length)
      const gv = new Float64Array(value.length)
      const g = out.gradLogits.data as Float32Array
      for (let i = 0; i < N; i++) {
        const b = Math.floor(i / L), t = i % L
        const prev = t === 0 ? BOS : actions[i - 1]
        for (let k = 0; k < V; k++) {
          gp[ctx[b] * V + k] += g[i * V + k]
          gp[(P + prev) * V + k] += g[i * V + k]
        }
        if (out.gradValues === undefined) continue
        const d = out.gradValues[i]
        gv[ctx[b]] += d
        gv[P + t] += d
        gv[P + L + prev] += d
      }
      policyOpt.step(gp)
      if (!grouped) valueOpt.step(gv)
    }
    last = { kl: out.kl, clipFraction: out.metrics.clipFraction }
    ppoCurve.push({ step, trueReward: trueMean, modelReward, kl: out.kl, clipFraction: out.metrics.clipFraction, loss: out.loss })
    ppoBar.update(step, `true reward ${trueMean.toFixed(3)}  KL ${out.kl.toFixed(3)}`)
  }
  const trueAfter = meanTrue(policy, 2048)

  const summary: DemoSummary = {
    backend: rk.currentBackend(),
    rmHeldOutAccuracy: pairs > 0 ? agree / pairs : 0,
    rmHumanAccuracy: human / heldOut.length,
    trueRewardBefore: trueBefore,
    trueRewardAfter: trueAfter,
    finalKl: last.kl,
    finalClipFraction: last.clipFraction,
    seconds: (performance.now() - started) / 1000,
    curves: { rm: rmCurve, ppo: ppoCurve },
  }
  if (o.out !== null) {
    mkdirSync(o.out, { recursive: true })
    writeFileSync(join(o.out, 'curves.json'), `${JSON.stringify({ options: o, ...summary }, null, 2)}\n`)
    writeFileSync(join(o.out, 'curves.svg'), lineChart([
      {
        title: 'Reward model (rewardLoss)', xlabel: 'optimiser step',
        series: [
          { name: 'loss', points: rmCurve.map((p) => [p.step, p.loss]) },
          { name: 'batch accuracy', points: rmCurve.map((p) => [p.step, p.accuracy]) },
        ],
      },
      {
        title: 'PPO (ppoLoss) against the learned reward', xlabel: 'iteration',
        series: [
          { name: 'true (hidden) reward', points: ppoCurve.map((p) => [p.step, p.trueReward]) },
          { name: 'reward-model score', points: ppoCurve.map((p) => [p.step, p.modelReward]) },
          { name: 'KL to reference', points: ppoCurve.map((p) => [p.step, p.kl]) },
        ],
      },
    ]))
  }
  return summary
}
