// `npm run bench -- --host`: the host table of issue 13, one thread, every contender side by side in one run.
//
// floor        max(bytes moved / read bandwidth, exps / exp rate), both measured in this run by the addon's
//              probe (hostFloor: one thread, the widest vector clone this CPU runs)
// cpu, js      rlhf-kernels through its public API (RLHF_KERNELS_THREADS=1)
// onnxruntime  onnxruntime-node (devDependency) on graphs written by bench/onnx.js, one intra-op thread
// pytorch      bench/host_torch.py in a child `python3` (BENCH_PYTHON overrides) when it imports torch
//
// Every contender's result is checked against the float64 reference (the js backend) before it is timed;
// times are medians of the `benchmark` package's samples (PyTorch: of its own perf_counter samples).
// BENCH_CLOCK=cpu times each call in process CPU time instead (process.cpuUsage, Python's process_time):
// every contender runs one thread, so on an idle machine the two agree, and on a machine shared with other
// work the CPU time leaves out the time spent waiting for a core.
// BENCH_ROWS=ce,kl picks rows, BENCH_CONTENDERS=cpu,pytorch contenders; BENCH_MAXTIME (seconds per contender, default 1).
import Benchmark from 'benchmark'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os, { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as rk from '../dist/index.js'
import { hostFloor, mulberry32 } from '../dist/internal.js'
import { ELEM, Graph } from './onnx.js'

const MAXTIME = Number(process.env.BENCH_MAXTIME ?? 1)
const PYTHON = process.env.BENCH_PYTHON ?? 'python3'
const CPU_CLOCK = process.env.BENCH_CLOCK === 'cpu'
const V = 32000
const TOKENS = 2 ** 20
const CLIP = 0.2

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2 }
const f32 = (x) => (x instanceof Float32Array ? x : Float32Array.from(x.data ?? x))

function uniform(seed, n, lo, hi) {
  const u = mulberry32(seed).uniform
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * u())
}
function ints(seed, n, k) {
  const u = mulberry32(seed).uniform
  return Int32Array.from({ length: n }, () => Math.floor(u() * k))
}
const mask = (seed, n) => Uint8Array.from(uniform(seed, n, 0, 1), (x) => (x < 0.9 ? 1 : 0))

// ---- ONNX graphs (opset 17) ----
const axes1 = (g) => g.constant([1], [1], ELEM.int64)
/** loss of mean cross-entropy and (grad) its gradient (softmax − onehot)/N, from SoftmaxCrossEntropyLoss */
function ortCrossEntropy(N, grad) {
  const g = new Graph()
  const [loss, lp] = g.node('SoftmaxCrossEntropyLoss', [g.input('x'), g.input('y', ELEM.int64)], { reduction: 'mean' }, ['loss', 'logprob'])
  g.output(loss)
  if (grad) {
    const y2 = g.node('Unsqueeze', ['y', axes1(g)])
    const p = g.node('Mul', [g.node('Exp', [lp]), g.scalar(1 / N)])
    g.node('ScatterElements', [p, y2, g.node('Sub', [g.node('GatherElements', [p, y2], { axis: { i: 1 } }), g.scalar(1 / N)])], { axis: { i: 1 } }, ['grad'])
    g.output('grad')
  }
  return g.model()
}
function ortLogProbs() {
  const g = new Graph()
  const lp = g.node('LogSoftmax', [g.input('x')], { axis: { i: -1 } })
  const y2 = g.node('Unsqueeze', [g.input('y', ELEM.int64), axes1(g)])
  g.node('Squeeze', [g.node('GatherElements', [lp, y2], { axis: { i: 1 } }), axes1(g)], {}, ['logp'])
  g.node('Neg', [g.node('ReduceSum', [g.node('Mul', [g.node('Exp', [lp]), lp]), axes1(g)], { keepdims: { i: 0 } })], {}, ['entropy'])
  g.output('logp'); g.output('entropy')
  return g.model()
}
function ortKl(N) {
  const g = new Graph()
  const lp = g.node('LogSoftmax', [g.input('p')], { axis: { i: -1 } })
  const lq = g.node('LogSoftmax', [g.input('q')], { axis: { i: -1 } })
  const p = g.node('Exp', [lp])
  const rowKl = g.node('ReduceSum', [g.node('Mul', [p, g.node('Sub', [lp, lq])]), axes1(g)], { keepdims: { i: 0 } }) // per row, then over rows: a float32 sum of N·V terms is off by 2e-3
  g.node('Mul', [g.node('ReduceSum', [rowKl], { keepdims: { i: 0 } }), g.scalar(1 / N)], {}, ['loss'])
  g.node('Mul', [g.node('Sub', [g.node('Exp', [lq]), p]), g.scalar(1 / N)], {}, ['grad'])
  g.output('loss'); g.output('grad')
  return g.model()
}
function ortPolicy() {
  const g = new Graph()
  const [logp, old, adv, m] = ['logp', 'old', 'adv', 'mask'].map((n) => g.input(n))
  const ratio = g.node('Exp', [g.node('Sub', [logp, old])])
  const s1 = g.node('Mul', [ratio, adv])
  const s2 = g.node('Mul', [g.node('Clip', [ratio, g.scalar(1 - CLIP), g.scalar(1 + CLIP)]), adv])
  const invCount = g.node('Reciprocal', [g.node('ReduceSum', [m], { keepdims: { i: 0 } })])
  g.node('Mul', [g.node('Neg', [g.node('ReduceSum', [g.node('Mul', [g.node('Min', [s1, s2]), m])], { keepdims: { i: 0 } })]), invCount], {}, ['loss'])
  const unclipped = g.node('Where', [g.node('LessOrEqual', [s1, s2]), s1, g.scalar(0)])
  g.node('Neg', [g.node('Mul', [g.node('Mul', [unclipped, m]), invCount])], {}, ['grad'])
  g.output('loss'); g.output('grad')
  return g.model()
}
/** (x − mean) / (sqrt(var + eps)) over everything (whiten), or (x − mean) / (std + eps) per group of G */
function ortStandardise(eps, G) {
  const g = new Graph()
  const x = G ? g.node('Reshape', [g.input('x'), g.constant([-1, G], [2], ELEM.int64)]) : g.input('x')
  const ax = G ? [axes1(g)] : []
  const n = G ?? TOKENS
  const d = g.node('Sub', [x, g.node('Mul', [g.node('ReduceSum', [x, ...ax]), g.scalar(1 / n)])])
  const variance = g.node('Mul', [g.node('ReduceSum', [g.node('Mul', [d, d]), ...ax]), g.scalar(1 / (n - 1))])
  const out = G ? g.node('Div', [d, g.node('Add', [g.node('Sqrt', [variance]), g.scalar(eps)])])
    : g.node('Div', [d, g.node('Sqrt', [g.node('Add', [variance, g.scalar(eps)])])])
  g.node('Reshape', [out, g.constant([-1], [1], ELEM.int64)], {}, ['values'])
  g.output('values')
  return g.model()
}

// ---- the rows ----
// Each row: its inputs, the bytes that must move and the exps that must be computed (the floor), the rk call
// (→ { loss?, <array>… }), the reference call when it is another one (ref, run on js; else rk on js), and how
// onnxruntime (graph, feeds) and PyTorch (op, inputs, params) express it.
const t = (name, data, dims) => ({ name, data, dims })
/** the vocabulary shards of the sharded rows */
const SHARDS = 4
/** columns [i·V/SHARDS, (i + 1)·V/SHARDS) of a row-major [N, V] matrix, for each shard i */
function shardsOf(x, N) {
  const w = V / SHARDS
  return Array.from({ length: SHARDS }, (_, i) => {
    const out = new Float32Array(N * w)
    for (let n = 0; n < N; n++) out.set(x.subarray(n * V + i * w, n * V + (i + 1) * w), n * w)
    return out
  })
}
/** a [N, V] gradient as { grad0, grad1, … }: each shard's columns */
const shardGrads = (g, N) => Object.fromEntries(shardsOf(f32(g), N).map((s, i) => [`grad${i}`, s]))
function rows() {
  const logits = (seed, n) => uniform(seed, n * V, -4, 4)
  return [
    {
      key: 'ce', op: `crossEntropy fwd ${1024}×${V} f32`, N: 1024,
      make() { return { x: logits(1, this.N), y: ints(2, this.N, V) } },
      bytes() { return this.N * V * 4 }, exps() { return this.N * V },
      rk: ({ x, y }, N) => ({ loss: rk.crossEntropy({ logits: rk.tensor(x, [N, V]), targets: y }).loss }),
      ort: (N) => ortCrossEntropy(N, false), ortIn: ({ x, y }, N) => [t('x', x, [N, V]), t('y', y, [N])],
      torch: ({ x, y }, N) => ({ op: 'ce', inputs: [t('x', x, [N, V]), t('targets', y, [N])] }),
    },
    {
      key: 'ce-bwd', op: `crossEntropy fwd+bwd ${1024}×${V} f32`, N: 1024,
      make() { return { x: logits(1, this.N), y: ints(2, this.N, V) } },
      bytes() { return 2 * this.N * V * 4 }, exps() { return this.N * V },
      rk: ({ x, y }, N) => { const r = rk.crossEntropy({ logits: rk.tensor(x, [N, V]), targets: y, grad: true }); return { loss: r.loss, grad: r.gradLogits } },
      ort: (N) => ortCrossEntropy(N, true), ortIn: ({ x, y }, N) => [t('x', x, [N, V]), t('y', y, [N])],
      torch: ({ x, y }, N) => ({ op: 'ce_bwd', inputs: [t('x', x, [N, V]), t('targets', y, [N])] }),
    },
    {
      // the same call writing into the caller's arrays (out): no fresh zero-filled gradient per call
      key: 'ce-bwd-out', op: `crossEntropy fwd+bwd ${1024}×${V} f32, out`, N: 1024,
      make() { return { x: logits(1, this.N), y: ints(2, this.N, V), g: new Float32Array(this.N * V), lse: new Float32Array(this.N) } },
      bytes() { return 2 * this.N * V * 4 }, exps() { return this.N * V },
      rk: ({ x, y, g, lse }, N) => { const r = rk.crossEntropy({ logits: rk.tensor(x, [N, V]), targets: y, grad: true, out: { gradLogits: g, lse } }); return { loss: r.loss, grad: r.gradLogits } },
      ort: (N) => ortCrossEntropy(N, true), ortIn: ({ x, y }, N) => [t('x', x, [N, V]), t('y', y, [N])],
    },
    {
      key: 'logprobs', op: `logProbs + entropy ${1024}×${V}`, N: 1024,
      make() { return { x: logits(1, this.N), y: ints(2, this.N, V) } },
      bytes() { return this.N * V * 4 }, exps() { return this.N * V },
      rk: ({ x, y }, N) => { const r = rk.logProbs({ logits: rk.tensor(x, [N, V]), targets: y, entropy: true }); return { logp: r.logp, entropy: r.entropy } },
      ort: () => ortLogProbs(), ortIn: ({ x, y }, N) => [t('x', x, [N, V]), t('y', y, [N])],
      torch: ({ x, y }, N) => ({ op: 'log_probs', inputs: [t('x', x, [N, V]), t('targets', y, [N])] }),
    },
    // issue 15: per-row temperature, the one-pass row statistics, kept-set log-probs (the set given; drawn by
    // top-k: a selection; by top-p: a sort of the survivors)
    {
      key: 'logprobs-stats', op: `logProbs + entropy, Σp², max p ${1024}×${V}`, N: 1024,
      make() { return { x: logits(1, this.N), y: ints(2, this.N, V) } },
      bytes() { return this.N * V * 4 }, exps() { return this.N * V },
      rk: ({ x, y }, N) => { const r = rk.logProbs({ logits: rk.tensor(x, [N, V]), targets: y, entropy: true, sumProbSq: true, maxProb: true }); return { logp: r.logp, entropy: r.entropy, sumProbSq: r.sumProbSq, maxProb: r.maxProb } },
    },
    {
      key: 'logprobs-rowT', op: `logProbs, per-row T ${1024}×${V}`, N: 1024,
      make() { return { x: logits(1, this.N), y: ints(2, this.N, V), T: uniform(3, this.N, 0.5, 1.5) } },
      bytes() { return this.N * V * 4 }, exps() { return this.N * V },
      rk: ({ x, y, T }, N) => ({ logp: rk.logProbs({ logits: rk.tensor(x, [N, V]), targets: y, temperature: T }).logp }),
    },
    {
      key: 'kept-csr', op: `keptLogProbs, 1000 given tokens, +grad ${256}×${V}`, N: 256,
      make() {
        const y = ints(2, this.N, V), offsets = Int32Array.from({ length: this.N + 1 }, (_, n) => 1000 * n)
        const tokens = Int32Array.from({ length: 1000 * this.N }, (_, i) => (i % 1000) * 32 + (y[Math.floor(i / 1000)] % 32))
        return { x: logits(1, this.N), y, offsets, tokens, g: uniform(4, this.N, -1, 1) }
      },
      bytes() { return this.N * V * 4 + this.N * 1000 * 8 }, exps() { return this.N * 1000 },
      rk: ({ x, y, offsets, tokens, g }, N) => { const r = rk.keptLogProbs({ logits: rk.tensor(x, [N, V]), targets: y, keepOffsets: offsets, keepTokens: tokens, gradLogp: g }); return { logp: r.logp, grad: r.gradLogits } },
    },
    {
      key: 'kept-topk', op: `keptLogProbs top-k 50 ${256}×${V}`, N: 256,
      make() { return { x: logits(1, this.N), y: ints(2, this.N, V) } },
      bytes() { return this.N * V * 4 }, exps() { return this.N * V },
      rk: ({ x, y }, N) => ({ lse: rk.keptLogProbs({ logits: rk.tensor(x, [N, V]), targets: y, topK: 50 }).lse }),
    },
    {
      key: 'kept-topp', op: `keptLogProbs top-p 0.9 ${256}×${V}`, N: 256,
      make() { return { x: logits(1, this.N), y: ints(2, this.N, V) } },
      bytes() { return this.N * V * 4 }, exps() { return this.N * V },
      rk: ({ x, y }, N) => ({ lse: rk.keptLogProbs({ logits: rk.tensor(x, [N, V]), targets: y, topP: 0.9 }).lse }),
    },
    // issue 15, the vocab-sharded forms: V in 4 shards of V/4 columns, every rank's work on this one thread (each
    // shard's partials, the merge, each shard's backward). The inputs are those of 'logprobs', 'ce-bwd' and 'kl',
    // and the check is against those unsharded ops (ref, on js): each shard's gradient against its columns of the
    // unsharded one. The floor of a form with a backward counts two passes: the merge (an all-gather across
    // ranks) comes between the forward's read of the logits and the backward's.
    {
      key: 'sharded-logprobs', op: `logProbsPartial ×4 + merge, 4×${1024}×${V / SHARDS}`, N: 1024,
      make() { const x = logits(1, this.N); return { x, xs: shardsOf(x, this.N), y: ints(2, this.N, V) } },
      bytes() { return this.N * V * 4 }, exps() { return this.N * V },
      rk: ({ xs, y }, N) => {
        const partials = xs.map((s, i) => rk.logProbsPartial({ logits: rk.tensor(s, [N, V / SHARDS]), targets: y, vocabStart: (i * V) / SHARDS }))
        const m = rk.mergeVocabPartials({ partials, targets: y })
        return { logp: m.logp, entropy: m.entropy, sumProbSq: m.sumProbSq }
      },
      ref: ({ x, y }, N) => { const r = rk.logProbs({ logits: rk.tensor(x, [N, V]), targets: y, entropy: true, sumProbSq: true }); return { logp: r.logp, entropy: r.entropy, sumProbSq: r.sumProbSq } },
    },
    {
      key: 'sharded-ce-bwd', op: `crossEntropyPartial ×4 + merge + backward ×4, 4×${1024}×${V / SHARDS}`, N: 1024,
      make() { const x = logits(1, this.N); return { x, xs: shardsOf(x, this.N), y: ints(2, this.N, V) } },
      bytes() { return 3 * this.N * V * 4 }, exps() { return 2 * this.N * V },
      rk: ({ xs, y }, N) => {
        const shards = xs.map((s, i) => ({ logits: rk.tensor(s, [N, V / SHARDS]), targets: y, vocabStart: (i * V) / SHARDS, vocabSize: V }))
        const m = rk.mergeCrossEntropyPartials({ partials: shards.map((s) => rk.crossEntropyPartial(s)), targets: y })
        return { loss: m.loss, ...Object.fromEntries(shards.map((s, i) => [`grad${i}`, rk.crossEntropyPartialBackward({ ...s, lse: m.lse, gradRows: m.gradRows }).gradLogits])) }
      },
      ref: ({ x, y }, N) => { const r = rk.crossEntropy({ logits: rk.tensor(x, [N, V]), targets: y, grad: true }); return { loss: r.loss, ...shardGrads(r.gradLogits, N) } },
    },
    {
      key: 'sharded-kl', op: `klDivergencePartial ×4 + merge + backward ×4, grad q, 4×${512}×${V / SHARDS}`, N: 512,
      make() { const p = logits(3, this.N), q = logits(4, this.N); return { p, q, ps: shardsOf(p, this.N), qs: shardsOf(q, this.N) } },
      bytes() { return 5 * this.N * V * 4 }, exps() { return 4 * this.N * V },
      rk: ({ ps, qs }, N) => {
        const shards = ps.map((p, i) => ({ pLogits: rk.tensor(p, [N, V / SHARDS]), qLogits: rk.tensor(qs[i], [N, V / SHARDS]) }))
        const m = rk.mergeKlPartials({ partials: shards.map((s) => rk.klDivergencePartial(s)) })
        const grad = (s) => rk.klDivergencePartialBackward({ ...s, pLse: m.pLse, qLse: m.qLse, perRow: m.perRow, gradRows: m.gradRows, grad: 'q' }).gradQ
        return { loss: m.loss, ...Object.fromEntries(shards.map((s, i) => [`grad${i}`, grad(s)])) }
      },
      ref: ({ p, q }, N) => { const r = rk.klDivergence({ pLogits: rk.tensor(p, [N, V]), qLogits: rk.tensor(q, [N, V]), grad: 'q' }); return { loss: r.loss, ...shardGrads(r.gradQ, N) } },
    },
    {
      key: 'kl', op: `klDivergence grad q ${512}×${V}`, N: 512,
      make() { return { p: logits(3, this.N), q: logits(4, this.N) } },
      bytes() { return 3 * this.N * V * 4 }, exps() { return 2 * this.N * V },
      rk: ({ p, q, out }, N) => { const r = rk.klDivergence({ pLogits: rk.tensor(p, [N, V]), qLogits: rk.tensor(q, [N, V]), grad: 'q', out }); return { loss: r.loss, grad: r.gradQ } },
      ort: (N) => ortKl(N), ortIn: ({ p, q }, N) => [t('p', p, [N, V]), t('q', q, [N, V])],
      torch: ({ p, q }, N) => ({ op: 'kl', inputs: [t('P', p, [N, V]), t('Q', q, [N, V])] }),
    },
    {
      key: 'ppo', op: `ppoLoss 4×256×${V}`, N: 1024,
      make() {
        const x = logits(5, this.N), actions = ints(6, this.N, V)
        rk.setBackend('js')
        const lp = rk.logProbs({ logits: rk.tensor(x, [this.N, V]), targets: actions }).logp
        const shift = uniform(7, this.N, -0.3, 0.3)
        return { x, actions, old: Float32Array.from(lp, (v, i) => v + shift[i]), adv: uniform(8, this.N, -1, 1), m: mask(9, this.N) }
      },
      bytes() { return 2 * this.N * V * 4 }, exps() { return this.N * V },
      rk: ({ x, actions, old, adv, m, out }, N) => {
        const r = rk.ppoLoss({ logits: rk.tensor(x, [4, N / 4, V]), actions, oldLogp: old, advantages: adv, mask: m, out })
        return { loss: r.loss, grad: r.gradLogits }
      },
      torch: ({ x, actions, old, adv, m }, N) => ({
        op: 'ppo', params: { clip: CLIP },
        inputs: [t('x', x, [N, V]), t('actions', actions, [N]), t('old', old, [N]), t('adv', adv, [N]), t('mask', Float32Array.from(m), [N])],
      }),
    },
    // the DPPO trust region from π_old's logits: the taken token's binary TV against the exact full-vocabulary
    // TV of each position (trustRegion 'full'), the full KL to π_old (β = 0.01) in both
    ...['binary', 'full'].map((trustRegion) => ({
      key: `ppo-dppo-${trustRegion}`, op: `ppoLoss dppo-tv ${trustRegion} 4×256×${V}`, N: 1024,
      make() {
        const x = logits(5, this.N), old = Float32Array.from(logits(17, this.N), (v, i) => x[i] + 0.3 * v)
        return { x, old, actions: ints(6, this.N, V), adv: uniform(8, this.N, -1, 1), m: mask(9, this.N) }
      },
      bytes() { return 3 * this.N * V * 4 }, exps() { return 2 * this.N * V },
      rk: ({ x, old, actions, adv, m }, N) => {
        const r = rk.ppoLoss({
          logits: rk.tensor(x, [4, N / 4, V]), oldLogits: rk.tensor(old, [4, N / 4, V]), actions, advantages: adv, mask: m,
          variant: 'dppo-tv', clipLow: 0.1, clipHigh: 0.1, trustRegion, beta: 0.01,
        })
        return { loss: r.loss, grad: r.gradLogits }
      },
    })),
    {
      key: 'reward', op: 'rewardLoss 2^20 × 4', N: TOKENS,
      make() { return { s: uniform(10, 4 * this.N, -2, 2), c: ints(11, this.N, 4) } },
      bytes() { return this.N * 4 * 4 * 3 + this.N * 4 }, exps() { return 4 * this.N },
      rk: ({ s, c, out }) => { const r = rk.rewardLoss({ scores: s, K: 4, chosen: c, out }); return { loss: r.loss, grad: r.gradScores } },
      ort: (N) => ortCrossEntropy(N, true), ortIn: ({ s, c }, N) => [t('x', s, [N, 4]), t('y', c, [N])],
      torch: ({ s, c }, N) => ({ op: 'reward', params: { K: 4 }, inputs: [t('scores', s, [N * 4]), t('chosen', c, [N])] }),
    },
    {
      key: 'policy', op: 'policyLoss 2^20 tokens', N: TOKENS,
      make() {
        const logp = uniform(12, this.N, -3, 0), shift = uniform(13, this.N, -0.3, 0.3)
        return { logp, old: Float32Array.from(logp, (v, i) => v + shift[i]), adv: uniform(14, this.N, -1, 1), m: mask(15, this.N) }
      },
      bytes() { return this.N * (4 * 4 + 1) }, exps() { return this.N },
      rk: ({ logp, old, adv, m, out }) => { const r = rk.policyLoss({ logp, oldLogp: old, advantages: adv, mask: m, out }); return { loss: r.loss, grad: r.gradLogp } },
      ort: () => ortPolicy(),
      ortIn: ({ logp, old, adv, m }, N) => [t('logp', logp, [N]), t('old', old, [N]), t('adv', adv, [N]), t('mask', Float32Array.from(m), [N])],
      torch: ({ logp, old, adv, m }, N) => ({
        op: 'policy', params: { clip: CLIP },
        inputs: [t('logp', logp, [N]), t('old', old, [N]), t('adv', adv, [N]), t('mask', Float32Array.from(m), [N])],
      }),
    },
    {
      key: 'value', op: 'valueLoss clip 0.2, 2^20 tokens', N: TOKENS,
      make() { return { v: uniform(18, this.N, -1, 1), r: uniform(19, this.N, -1, 1), old: uniform(20, this.N, -1, 1), m: mask(21, this.N) } },
      bytes() { return this.N * (5 * 4 + 1) }, exps() { return 0 },
      rk: ({ v, r, old, m, out }) => { const x = rk.valueLoss({ values: v, returns: r, oldValues: old, clip: 0.2, mask: m, out }); return { loss: x.loss, grad: x.gradValues } },
    },
    {
      key: 'klpen', op: 'klPenalty k3 2^20 tokens', N: TOKENS,
      make() { const logp = uniform(22, this.N, -3, 0), shift = uniform(23, this.N, -0.3, 0.3); return { logp, ref: Float32Array.from(logp, (v, i) => v + shift[i]), m: mask(24, this.N) } },
      bytes() { return this.N * (4 * 4 + 1) }, exps() { return this.N },
      rk: ({ logp, ref, m, out }) => { const x = rk.klPenalty({ logp, refLogp: ref, estimator: 'k3', mask: m, out }); return { loss: x.loss, grad: x.gradLogp } },
    },
    {
      key: 'gae', op: 'gae 2^20 tokens, 4096 × 256', N: TOKENS,
      make() { return { r: uniform(25, this.N, -1, 1), v: uniform(26, this.N, -1, 1), m: mask(27, this.N), len: new Int32Array(this.N / 256).fill(256) } },
      bytes() { return this.N * (4 * 4 + 1) }, exps() { return 0 },
      rk: ({ r, v, m, len, out }) => { const x = rk.gae({ rewards: r, values: v, mask: m, seqLengths: len, gamma: 0.99, lambda: 0.95, out }); return { advantages: x.advantages, returns: x.returns } },
    },
    {
      key: 'whiten', op: 'whiten 2^20', N: TOKENS,
      make() { return { x: uniform(16, this.N, -3, 5) } },
      bytes() { return this.N * 8 }, exps() { return 0 },
      rk: ({ x, out }) => ({ values: rk.whiten({ values: x, out }) }),
      ort: () => ortStandardise(1e-8), ortIn: ({ x }, N) => [t('x', x, [N])],
      torch: ({ x }, N) => ({ op: 'whiten', params: { eps: 1e-8 }, inputs: [t('x', x, [N])] }),
    },
    // G = 4: a size that is not a multiple of the lanes (advantages.cc strided_groups)
    ...[['group', 8, 17], ['group4', 4, 18]].map(([key, G, seed]) => ({
      key, op: `groupAdvantages 2^20, G = ${G}`, N: TOKENS,
      make() { return { x: uniform(seed, this.N, 0, 1) } },
      bytes() { return this.N * 8 }, exps() { return 0 },
      rk: ({ x, out }) => ({ values: rk.groupAdvantages({ scores: x, groupSize: G, out }) }),
      ort: () => ortStandardise(1e-6, G), ortIn: ({ x }, N) => [t('x', x, [N])],
      torch: ({ x }, N) => ({ op: 'group', params: { G, eps: 1e-6 }, inputs: [t('x', x, [N])] }),
    })),
    {
      // ragged groups of 2 to 9 (advantages.cc ragged_lanes); neither peer takes ragged groups as such
      key: 'group-ragged', op: 'groupAdvantages ~2^20, ragged groups of 2–9', N: TOKENS,
      make() {
        const sizes = Int32Array.from({ length: Math.floor(this.N / 5.5) }, (_, i) => 2 + ((i * 5 + (i >> 4)) % 8))
        const offsets = new Int32Array(sizes.length + 1)
        for (let i = 0; i < sizes.length; i++) offsets[i + 1] = offsets[i] + sizes[i]
        return { x: uniform(19, offsets[sizes.length], 0, 1), offsets }
      },
      bytes() { return this.N * 8 }, exps() { return 0 },
      rk: ({ x, offsets, out }) => ({ values: rk.groupAdvantages({ scores: x, offsets, out }) }),
    },
  ]
}

function withOut(list) {
  // the rows writing into the caller's arrays (out), as a training loop reuses them: no fresh output pages
  // to fault in per call (their rk call passes `out` through; no peer row). Sizes per row (N).
  // (null: an op whose result is one array, of its scores' length, which `out` is itself)
  const outs = {
    kl: { perRow: 1, gradQ: V }, ppo: { logp: 1, gradLogits: V }, reward: { probs: 4, gradScores: 4 }, policy: { perToken: 1, gradLogp: 1 },
    value: { perToken: 1, gradValues: 1 }, klpen: { perToken: 1, gradLogp: 1 }, gae: { advantages: 1, returns: 1 },
    whiten: null, group: null, group4: null, 'group-ragged': null,
  }
  for (const [key, names] of Object.entries(outs)) {
    const row = list.find((r) => r.key === key)
    list.splice(list.indexOf(row) + 1, 0, {
      ...row, key: `${key}-out`, op: `${row.op}, out`, ort: undefined, torch: undefined,
      make() {
        const inputs = row.make.call(this)
        return { ...inputs, out: names === null ? new Float32Array(inputs.x.length) : Object.fromEntries(Object.entries(names).map(([k, per]) => [k, new Float32Array(per * this.N)])) }
      },
    })
  }
  return list
}

// ---- checking ----
/** a contender's outputs against the reference: the loss to 1e-4 relative, each array to 1e-4 of its largest value */
function check(name, got, ref) {
  const notes = []
  for (const [k, r] of Object.entries(ref)) {
    if (!(k in got)) continue
    if (k === 'loss') {
      const err = Math.abs(got.loss - r) / Math.max(1e-3, Math.abs(r))
      if (!(err <= 1e-4)) throw new Error(`${name}: loss ${got.loss}, reference ${r} (relative error ${err})`)
      notes.push(`loss ${err.toExponential(0)}`)
      continue
    }
    const a = f32(got[k]), b = f32(r)
    if (a.length !== b.length) throw new Error(`${name}: ${k} has ${a.length} values, the reference ${b.length}`)
    let scale = 0, err = 0
    for (let i = 0; i < b.length; i++) { scale = Math.max(scale, Math.abs(b[i])); err = Math.max(err, Math.abs(a[i] - b[i])) }
    if (!(err <= 1e-4 * scale)) throw new Error(`${name}: ${k} off by ${err} (largest reference value ${scale})`)
    notes.push(`${k} ${(err / scale).toExponential(0)}`)
  }
  return notes.join(', ')
}

/** median process CPU time of fn (sync or async), at least 5 samples and MAXTIME seconds */
async function timeCpu(fn) {
  const samples = []
  const end = Date.now() + MAXTIME * 1e3
  while (samples.length < 5 || Date.now() < end) {
    const t0 = process.cpuUsage()
    await fn()
    const d = process.cpuUsage(t0)
    samples.push((d.user + d.system) / 1e3)
  }
  return median(samples)
}

function timeSync(fn) {
  if (CPU_CLOCK) return timeCpu(fn)
  return new Promise((resolve) => {
    const b = new Benchmark(fn, { minSamples: 5, maxTime: MAXTIME, initCount: 1, onComplete: () => resolve(median(b.stats.sample) * 1e3) })
    b.run()
  })
}
function timeAsync(fn) {
  if (CPU_CLOCK) return timeCpu(fn)
  return new Promise((resolve) => {
    const b = new Benchmark((d) => fn().then(() => d.resolve()), { defer: true, minSamples: 5, maxTime: MAXTIME, onComplete: () => resolve(median(b.stats.sample) * 1e3) })
    b.run()
  })
}

async function onnxRuntime() {
  try {
    const ort = (await import('onnxruntime-node')).default
    return { ort, version: ort.env.versions?.node ?? '' }
  } catch (error) {
    return { skip: `onnxruntime-node not installed (${error.message.split('\n')[0]})` }
  }
}

function torchAvailable() {
  const r = spawnSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' })
  return r.status === 0 ? { version: r.stdout.trim() } : { skip: `${PYTHON} cannot import torch (BENCH_PYTHON names another python)` }
}

function runTorch(job, dir) {
  const inputs = {}
  for (const i of job.inputs) {
    const dtype = i.data instanceof Float32Array ? 'float32' : i.data instanceof Int32Array ? 'int32' : null
    if (!dtype) throw new Error(`torch input ${i.name}: unsupported array`)
    writeFileSync(join(dir, `${i.name}.bin`), new Uint8Array(i.data.buffer, i.data.byteOffset, i.data.byteLength))
    inputs[i.name] = [dtype, i.dims]
  }
  const script = fileURLToPath(new URL('./host_torch.py', import.meta.url))
  const input = JSON.stringify({ op: job.op, dir, inputs, params: job.params ?? {}, minSamples: 5, maxTime: MAXTIME, cpuClock: CPU_CLOCK })
  const r = spawnSync(PYTHON, [script], { input, encoding: 'utf8', maxBuffer: 1 << 26, env: { ...process.env, OMP_NUM_THREADS: '1' } })
  if (r.status !== 0) throw new Error(`pytorch ${job.op}: ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`)
  const res = JSON.parse(r.stdout)
  const got = res.loss === null ? {} : { loss: res.loss }
  for (const k of res.outputs) got[k === 'values' ? 'values' : k] = new Float32Array(readFileSync(join(dir, `out_${k}.bin`)).buffer.slice(0))
  return { got, ms: median(res.ms) }
}

/**
 * A tiny call's fixed cost (issue 13: ≤ 8 µs sync, async overhead ≤ 10 µs): policyLoss on 64 tokens on cpu,
 * sync (one options object, as every row), sync into reused arrays (out; and with a fresh options object spread
 * per call), and async with 1, 8 and 32 calls in flight (per call).
 */
async function tinyCalls() {
  if (!rk.backends().find((b) => b.name === 'cpu')?.available) return []
  rk.setBackend('cpu')
  const M = 64, calls = 2000
  const o = { logp: uniform(20, M, -3, 0), oldLogp: uniform(21, M, -3, 0), advantages: uniform(22, M, -1, 1) }
  const out = { perToken: new Float32Array(M), gradLogp: new Float32Array(M) }
  const withOut = { ...o, out }
  const batch = (k) => async () => {
    for (let i = 0; i < calls; i += k) await Promise.all(Array.from({ length: k }, () => rk.policyLossAsync(o)))
  }
  const rows = [
    ['sync', await timeSync(() => { for (let i = 0; i < calls; i++) rk.policyLoss(o) })],
    ['sync, out', await timeSync(() => { for (let i = 0; i < calls; i++) rk.policyLoss(withOut) })],
    // a spread per call: V8 gives the object a map of its own each time (the caller's cost, and the reads of it)
    ['sync, out, `{ ...o, out }` per call', await timeSync(() => { for (let i = 0; i < calls; i++) rk.policyLoss({ ...o, out }) })],
    ['async, 1 in flight', await timeAsync(batch(1))],
    ['async, 8 in flight', await timeAsync(batch(8))],
    ['async, 32 in flight', await timeAsync(batch(32))],
  ]
  rk.setBackend('auto')
  return rows.map(([what, ms]) => [what, (ms * 1e3) / calls])
}

export async function hostSuite() {
  if (process.env.RLHF_KERNELS_THREADS !== '1') {
    return { skipped: 'host table: run with RLHF_KERNELS_THREADS=1 (npm run bench -- --host sets it)' }
  }
  const only = process.env.BENCH_ROWS?.split(',')
  const contenders = process.env.BENCH_CONTENDERS?.split(',')
  const wanted = (name) => !contenders || contenders.includes(name)
  const floor = hostFloor(512 * 2 ** 20)
  const ort = await onnxRuntime()
  const torch = torchAvailable()
  const dir = mkdtempSync(join(tmpdir(), 'rk-bench-'))
  const table = []
  try {
    for (const row of withOut(rows())) {
      if (only && !only.includes(row.key)) continue
      const inputs = row.make()
      const N = row.N
      rk.setBackend('js')
      // copied: a row writing into its own arrays (out) would overwrite the reference's
      const ref = Object.fromEntries(Object.entries((row.ref ?? row.rk)(inputs, N)).map(([k, v]) => [k, typeof v === 'number' ? v : f32(v).slice()]))
      const out = { op: row.op }
      out.floor = floor ? Math.max(row.bytes() / (floor.readGBs * 1e9), row.exps() * floor.expNs * 1e-9) * 1e3 : NaN
      const checks = []
      for (const name of ['cpu', 'js']) {
        if (!wanted(name) || !rk.backends().find((b) => b.name === name)?.available) { out[name] = null; continue }
        rk.setBackend(name)
        checks.push(`${name}: ${check(name, row.rk(inputs, N), ref)}`)
        out[name] = await timeSync(() => row.rk(inputs, N))
      }
      rk.setBackend('auto')
      if (row.ort && ort.ort && wanted('onnxruntime')) {
        const session = await ort.ort.InferenceSession.create(row.ort(N), { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' })
        const feeds = {}
        for (const i of row.ortIn(inputs, N)) {
          feeds[i.name] = i.data instanceof Int32Array ? new ort.ort.Tensor('int64', BigInt64Array.from(i.data, BigInt), i.dims) : new ort.ort.Tensor('float32', i.data, i.dims)
        }
        const run = async () => {
          const r = await session.run(feeds)
          return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, k === 'loss' ? v.data[0] : v.data]))
        }
        checks.push(`onnxruntime: ${check('onnxruntime', await run(), ref)}`)
        out.onnxruntime = await timeAsync(run)
        await session.release()
      }
      if (row.torch && torch.version && wanted('pytorch')) {
        const r = runTorch(row.torch(inputs, N), dir)
        checks.push(`pytorch: ${check('pytorch', r.got, ref)}`)
        out.pytorch = r.ms
      }
      out.checked = checks.join('; ')
      table.push(out)
      console.error(`  ${row.op}: ${['floor', 'cpu', 'js', 'onnxruntime', 'pytorch'].map((k) => `${k} ${out[k]?.toFixed?.(2) ?? '—'}`).join(', ')}`)
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  const tiny = !only || only.includes('tiny') ? await tinyCalls() : []
  const fmt = (x) => (x == null || Number.isNaN(x) ? '—' : x < 10 ? x.toFixed(2) : x.toFixed(1))
  const lines = [
    `floor: read ${floor ? floor.readGBs.toFixed(1) : '?'} GB/s, exp ${floor ? floor.expNs.toFixed(3) : '?'} ns (${floor?.isa ?? 'no addon'}), one thread; ` +
      `onnxruntime-node ${ort.version ?? `— ${ort.skip}`}; pytorch ${torch.version ?? `— ${torch.skip}`}; ms, medians of ${CPU_CLOCK ? 'process CPU time' : 'wall time'}`,
    '',
    '| op | floor | cpu | cpu/floor | js | onnxruntime | pytorch | best peer/cpu |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for (const r of table) {
    const peers = [r.onnxruntime, r.pytorch].filter((x) => x != null)
    lines.push(`| ${r.op} | ${fmt(r.floor)} | ${fmt(r.cpu)} | ${r.cpu && r.floor ? (r.cpu / r.floor).toFixed(1) : '—'} | ${fmt(r.js)} | ${fmt(r.onnxruntime)} | ${fmt(r.pytorch)} | ${peers.length && r.cpu ? (Math.min(...peers) / r.cpu).toFixed(1) : '—'} |`)
  }
  lines.push('', 'checked against the float64 reference (largest error / largest reference value):', ...table.map((r) => `- ${r.op}: ${r.checked}`))
  if (tiny.length) {
    lines.push('', `tiny calls: policyLoss on 64 tokens, cpu, µs per call (medians of ${CPU_CLOCK ? 'process CPU time' : 'wall time'}):`, '', '| call | µs |', '|---|---|')
    for (const [what, us] of tiny) lines.push(`| ${what} | ${us.toFixed(1)} |`)
  }
  return { title: 'host table (issue 13), 1 thread', text: lines.join('\n') }
}

/** the rows of the thread-scaling table (`--scaling`) unless BENCH_ROWS names others */
const SCALING_ROWS = ['ce', 'ce-bwd-out', 'logprobs', 'kl-out', 'ppo-out', 'reward-out', 'policy-out', 'klpen-out', 'gae-out', 'whiten-out', 'group-out']

/**
 * One child of the scaling table: the cpu rows' wall-clock medians at this process's thread count
 * (RLHF_KERNELS_THREADS, set by the parent before the addon loads), each checked against the float64
 * reference first.
 */
export async function cpuTimes() {
  const only = process.env.BENCH_ROWS?.split(',') ?? SCALING_ROWS
  const times = []
  for (const row of withOut(rows())) {
    if (!only.includes(row.key)) continue
    const inputs = row.make()
    rk.setBackend('js')
    const ref = Object.fromEntries(Object.entries((row.ref ?? row.rk)(inputs, row.N)).map(([k, v]) => [k, typeof v === 'number' ? v : f32(v).slice()]))
    rk.setBackend('cpu')
    check('cpu', row.rk(inputs, row.N), ref)
    times.push({ key: row.key, op: row.op, ms: await timeSync(() => row.rk(inputs, row.N)) })
  }
  return { threads: rk.nativeStatus.info?.threads, times }
}

/**
 * `npm run bench -- --scaling`: the cpu rows at 1 thread and at every count in BENCH_THREADS (default: 1 and
 * the cores), each count in a child process (the pool is sized when the addon loads), wall-clock medians.
 * Scaling needs an idle machine: the load average is printed with the table.
 */
export async function scalingSuite() {
  if (!rk.backends().find((b) => b.name === 'cpu')?.available) return { skipped: 'scaling table: the cpu backend is not available' }
  const cores = os.cpus().length
  const counts = process.env.BENCH_THREADS?.split(',').map(Number) ?? [...new Set([1, cores])]
  const load = [os.loadavg()[0]]
  const runs = counts.map((threads) => {
    const r = spawnSync(process.execPath, [fileURLToPath(new URL('./run.js', import.meta.url)), '--threads-child'], {
      encoding: 'utf8', maxBuffer: 1 << 24, env: { ...process.env, RLHF_KERNELS_THREADS: String(threads), BENCH_CLOCK: '' },
    })
    if (r.status !== 0) throw new Error(`scaling child at ${threads} threads: ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`)
    return JSON.parse(r.stdout.trim().split('\n').pop())
  })
  load.push(os.loadavg()[0])
  const fmt = (x) => (x < 10 ? x.toFixed(2) : x.toFixed(1))
  const lines = [
    `ms, medians of wall time; load average (1 min) ${load.map((l) => l.toFixed(1)).join(' → ')} on ${cores} cores`,
    '',
    `| op | ${runs.map((r) => `${r.threads} thread${r.threads === 1 ? '' : 's'}`).join(' | ')} | ${runs.slice(1).map((r) => `speed-up at ${r.threads}`).join(' | ')} |`,
    `|---|${runs.map(() => '---|').join('')}${runs.slice(1).map(() => '---|').join('')}`,
  ]
  for (const [i, t] of runs[0].times.entries()) {
    const ms = runs.map((r) => r.times[i].ms)
    lines.push(`| ${t.op} | ${ms.map(fmt).join(' | ')} | ${ms.slice(1).map((m) => `${(ms[0] / m).toFixed(2)}×`).join(' | ')} |`)
  }
  return { title: 'thread scaling, cpu backend', text: lines.join('\n') }
}
