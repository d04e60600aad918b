/**
 * Hostile input, case by case: what a caller can do to the package (bad shapes, forged arrays, getters that
 * change the arguments while they are read, buffers changed, detached or resized while a call runs), on the
 * `js` and `cpu` backends and on the raw addon with hand-made arguments. Each case says what must happen:
 * an error of a given class (and message or code), or a result equal to the one the untouched inputs give.
 * The cases run in child processes (child.ts), so that a crash fails its case instead of the test runner.
 */
import { createRequire } from 'node:module'
import { runInNewContext } from 'node:vm'
import * as rk from '../../src/index.js'
import { nativeArgs } from '../../src/native.js'
import { validatorOf } from '../../src/ops.js'

type ErrorClass = abstract new (...args: never[]) => Error

export interface Case {
  name: string
  run: () => unknown
  /** the error the call throws (or its promise rejects with), or a check of its value (throws when wrong) */
  expect: { error: ErrorClass; message?: RegExp; code?: string } | { check: (value: unknown) => void }
}

// ---- inputs ----

const N = 3, V = 5, M = 6
const values = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 7.1 + i * 1.3) * 2)
const logitsData = () => values(N * V, 1)
const targets = () => Int32Array.of(0, 4, -100)
const logits = () => rk.tensor(logitsData(), [N, V])
// the async cases' sizes: a job that runs for a while, and buffers the allocator maps and unmaps on their own
const BN = 64, BV = 8192
const bigLogits = (seed = 1) => rk.tensor(values(BN * BV, seed), [BN, BV])
const bigTargets = () => Int32Array.from({ length: BN }, (_, i) => (i * 977) % BV)

/** A resizable ArrayBuffer (ES2024; the compiler's lib here is ES2022). */
type Resizable = ArrayBuffer & { resize(byteLength: number): void }
const ResizableBuffer = ArrayBuffer as unknown as new (byteLength: number, options: { maxByteLength: number }) => Resizable

/** A Float32Array over a resizable buffer (length-tracking), and the buffer. */
function resizable(data: Float32Array): [Float32Array, Resizable] {
  const buffer = new ResizableBuffer(data.byteLength, { maxByteLength: data.byteLength * 2 })
  const a = new Float32Array(buffer)
  a.set(data)
  return [a, buffer]
}
/**
 * Detaches a buffer, as a transfer to another thread does, and (with --expose-gc, as the suite runs) lets the
 * collector free the memory: a job still reading it would read unmapped memory.
 */
const detach = (buffer: ArrayBufferLike) => {
  structuredClone(buffer, { transfer: [buffer as ArrayBuffer] })
  ;(globalThis as { gc?: () => void }).gc?.()
}
const transferMethod = (ArrayBuffer.prototype as { transfer?: (n?: number) => ArrayBuffer }).transfer

// ---- checks ----

/** Equal results: typed arrays bitwise, numbers by Object.is, Tensors by shape, dtype and data. */
function same(actual: unknown, expected: unknown, path = 'result'): void {
  if (expected instanceof rk.Tensor) {
    if (!(actual instanceof rk.Tensor)) throw new Error(`${path}: not a Tensor`)
    same(actual.shape.join(), expected.shape.join(), `${path}.shape`)
    same(actual.dtype, expected.dtype, `${path}.dtype`)
    return same(actual.data, expected.data, `${path}.data`)
  }
  if (ArrayBuffer.isView(expected)) {
    const e = expected as Float32Array, a = actual as Float32Array
    if (!ArrayBuffer.isView(actual) || a.length !== e.length) throw new Error(`${path}: length ${a?.length} ≠ ${e.length}`)
    for (let i = 0; i < e.length; i++) if (!Object.is(a[i], e[i])) throw new Error(`${path}[${i}]: ${a[i]} ≠ ${e[i]}`)
    return
  }
  if (expected !== null && typeof expected === 'object') {
    if (actual === null || typeof actual !== 'object') throw new Error(`${path}: not an object`)
    const keys = Object.keys(expected).sort()
    if (JSON.stringify(Object.keys(actual).sort()) !== JSON.stringify(keys)) throw new Error(`${path}: keys ${Object.keys(actual)} ≠ ${keys}`)
    for (const k of keys) same((actual as Record<string, unknown>)[k], (expected as Record<string, unknown>)[k], `${path}.${k}`)
    return
  }
  if (!Object.is(actual, expected)) throw new Error(`${path}: ${String(actual)} ≠ ${String(expected)}`)
}
const equals = (expected: () => unknown) => ({ check: (value: unknown) => same(value, expected()) })

/** An options object (or raw argument object) behind a Proxy that counts the reads of each key. */
function counted<T extends object>(target: T): [T, Map<PropertyKey, number>] {
  const reads = new Map<PropertyKey, number>()
  const proxy = new Proxy(target, {
    get(t, key, receiver) {
      reads.set(key, (reads.get(key) ?? 0) + 1)
      return Reflect.get(t, key, receiver)
    },
  })
  return [proxy, reads]
}
function readOnce(reads: Map<PropertyKey, number>): void {
  for (const [key, n] of reads) if (n > 1) throw new Error(`${String(key)} was read ${n} times`)
  if (reads.size === 0) throw new Error('nothing was read')
}

// ---- the public API, on one host backend ----

/** The sync call of an op after `setBackend(backend)`. */
const on = <T>(backend: rk.BackendName, fn: () => T) => () => {
  rk.setBackend(backend)
  return fn()
}

/**
 * An async call changed right after it returns (`change` gets its inputs), against the result of the same
 * call on untouched inputs.
 */
function asyncCase<I>(backend: rk.BackendName, name: string, inputs: () => I, call: (i: I) => Promise<unknown>, sync: (i: I) => unknown, change: (i: I) => void): Case {
  let expected: unknown
  return {
    name: `${backend}: async ${name}`,
    run: () => {
      rk.setBackend(backend)
      expected = sync(inputs())
      const i = inputs()
      const promise = call(i)
      change(i)
      return promise
    },
    expect: { check: (value) => same(value, expected) },
  }
}

function apiCases(backend: rk.BackendName): Case[] {
  const b = (name: string) => `${backend}: ${name}`
  const ce = (targetsArray: Int32Array) => () => rk.crossEntropy({ logits: logits(), targets: targetsArray, grad: true })
  const policy = (logp: Float32Array) => rk.policyLoss({ logp, oldLogp: values(M, 2), advantages: values(M, 3) })
  const cases: Case[] = [
    // shapes and element types (the example first: it looped forever on js and crashed cpu)
    { name: b('Tensor constructor, shape [4096, 2^52 + 1] over 4096 floats'), run: on(backend, () => new rk.Tensor(new Float32Array(4096), [4096, 2 ** 52 + 1], 'float32')), expect: { error: RangeError, message: /at most 2\^53 - 1 elements/ } },
    { name: b('tensor(), shape [4096, 2^52 + 1]'), run: on(backend, () => rk.tensor(new Float32Array(4096), [4096, 2 ** 52 + 1])), expect: { error: RangeError, message: /shape must be at most 2\^53 - 1 elements/ } },
    { name: b('shape [2^40, 2^40, 0]: an empty tensor whose leading rows overflow'), run: on(backend, () => rk.tensor(new Float32Array(0), [2 ** 40, 2 ** 40, 0])), expect: { error: RangeError, message: /2\^53/ } },
    { name: b('shape [0, 2^53] (one dimension past the exact integers)'), run: on(backend, () => rk.tensor(new Float32Array(0), [0, 2 ** 53])), expect: { error: RangeError, message: /shape must be at most 2\^53 - 1 elements/ } },
    { name: b('shape with a fraction'), run: on(backend, () => new rk.Tensor(new Float32Array(5), [2, 2.5], 'float32')), expect: { error: TypeError, message: /shape must be an array of non-negative integers/ } },
    { name: b('shape with a negative dimension'), run: on(backend, () => new rk.Tensor(new Float32Array(3), [-1, -3], 'float32')), expect: { error: TypeError, message: /non-negative integers/ } },
    { name: b('shape with NaN'), run: on(backend, () => rk.tensor(new Float32Array(3), [NaN])), expect: { error: TypeError, message: /non-negative integers/ } },
    { name: b('shape a string'), run: on(backend, () => new rk.Tensor(new Float32Array(3), '3' as never, 'float32')), expect: { error: TypeError, message: /shape must be an array/ } },
    { name: b('shape a sparse array'), run: on(backend, () => new rk.Tensor(new Float32Array(3), [, 3] as never, 'float32')), expect: { error: TypeError, message: /non-negative integers/ } },
    { name: b('Tensor: Float32Array labelled int32'), run: on(backend, () => new rk.Tensor(new Float32Array(15), [3, 5], 'int32')), expect: { error: TypeError, message: /data must be a Int32Array for dtype 'int32', got Float32Array/ } },
    { name: b('Tensor: Uint16Array labelled float32'), run: on(backend, () => new rk.Tensor(new Uint16Array(15), [3, 5], 'float32')), expect: { error: TypeError, message: /Float32Array for dtype 'float32'/ } },
    { name: b('Tensor: an unknown dtype'), run: on(backend, () => new rk.Tensor(new Float32Array(15), [3, 5], 'float128' as never)), expect: { error: TypeError, message: /dtype must be one of/ } },
    { name: b('Tensor: a Proxy of a Float32Array'), run: on(backend, () => new rk.Tensor(new Proxy(logitsData(), {}), [3, 5], 'float32')), expect: { error: TypeError, message: /data must be a Float32Array/ } },
    { name: b('tensor(): a Proxy of a Float32Array'), run: on(backend, () => rk.tensor(new Proxy(logitsData(), {}), [3, 5])), expect: { error: TypeError, message: /data must be a typed array/ } },
    { name: b('tensor(): a DataView'), run: on(backend, () => rk.tensor(new DataView(new ArrayBuffer(60)) as never, [3, 5])), expect: { error: TypeError, message: /data must be a typed array/ } },
    { name: b('tensor(): an object inheriting from Float32Array.prototype'), run: on(backend, () => rk.tensor(Object.create(Float32Array.prototype), [0])), expect: { error: TypeError, message: /data must be a typed array/ } },
    { name: b('targets: a Proxy of an Int32Array'), run: on(backend, ce(new Proxy(targets(), {}))), expect: { error: TypeError, message: /targets must be an Int32Array.*got Proxy/ } },
    { name: b('targets: a DataView'), run: on(backend, ce(new DataView(new ArrayBuffer(12)) as never)), expect: { error: TypeError, message: /targets must be an Int32Array/ } },
    { name: b('logp: a Proxy of a Float32Array'), run: on(backend, () => policy(new Proxy(values(M, 1), {}))), expect: { error: TypeError, message: /logp must be .*, got Proxy/ } },
    { name: b('logp: an object inheriting from Float32Array.prototype'), run: on(backend, () => policy(Object.create(Float32Array.prototype))), expect: { error: TypeError, message: /logp must be/ } },
    { name: b('mask: a DataView'), run: on(backend, () => rk.klPenalty({ logp: values(M, 1), refLogp: values(M, 2), mask: new DataView(new ArrayBuffer(6)) as never })), expect: { error: TypeError, message: /mask must be/ } },
    { name: b('klDivergence over [2^40, 0] logits (2^40 rows to return)'), run: on(backend, () => rk.klDivergence({ pLogits: rk.tensor(new Float32Array(0), [2 ** 40, 0]), qLogits: rk.tensor(new Float32Array(0), [2 ** 40, 0]) })), expect: { error: RangeError, message: /typed array/ } },
    { name: b('seqLengths whose int32 running sum wraps back to the token count'), run: on(backend, () => rk.policyLoss({ logp: values(M, 1), oldLogp: values(M, 2), advantages: values(M, 3), seqLengths: Int32Array.of(2 ** 31 - 1, 2 ** 31 - 1, 2, M) })), expect: { error: RangeError, message: /the sum of seqLengths/ } },
    // genuine arrays whose own properties lie: the ops read the elements the engine holds
    { name: b('targets: a subclass whose length getter lies'), run: on(backend, () => { const y = new (class extends Int32Array { override get length() { return 1e9 } })(3); y.set(targets()); return ce(y)() }), expect: equals(on(backend, ce(targets()))) },
    { name: b('targets: an own length property'), run: on(backend, ce(Object.defineProperty(targets(), 'length', { value: 1e9 }))), expect: equals(on(backend, ce(targets()))) },
    { name: b('logp: a subclass whose length getter lies'), run: on(backend, () => { const a = new (class extends Float32Array { override get length() { return 2 ** 40 } })(M); a.set(values(M, 1)); return policy(a) }), expect: equals(on(backend, () => policy(values(M, 1)))) },
    { name: b('targets and logits over SharedArrayBuffers'), run: on(backend, () => { const y = new Int32Array(new SharedArrayBuffer(12)); y.set(targets()); const z = new Float32Array(new SharedArrayBuffer(60)); z.set(logitsData()); return rk.crossEntropy({ logits: rk.tensor(z, [N, V]), targets: y, grad: true }) }), expect: equals(on(backend, ce(targets()))) },
    { name: b('typed arrays of another realm'), run: on(backend, () => rk.crossEntropy({ logits: rk.tensor(runInNewContext('new Float32Array(15)').fill(0).map((_: number, i: number) => logitsData()[i]), [N, V]), targets: runInNewContext('Int32Array.of(0, 4, -100)'), grad: true })), expect: equals(on(backend, ce(targets()))) },
    // the buffer under a tensor changes after the tensor is made: checked again at each use
    { name: b('logits buffer shrunk after the tensor was made'), run: on(backend, () => { const [a, buf] = resizable(logitsData()); const t = rk.tensor(a, [N, V]); buf.resize(8); return rk.crossEntropy({ logits: t, targets: targets() }) }), expect: { error: RangeError, message: /logits: data.length must be the product of shape \[3, 5\] = 15, got 2/ } },
    { name: b('logits buffer grown after the tensor was made'), run: on(backend, () => { const [a, buf] = resizable(logitsData()); const t = rk.tensor(a, [N, V]); buf.resize(120); return rk.logProbs({ logits: t, targets: targets() }) }), expect: { error: RangeError, message: /= 15, got 30/ } },
    { name: b('logits buffer detached after the tensor was made'), run: on(backend, () => { const t = logits(); detach(t.data.buffer); return rk.crossEntropy({ logits: t, targets: targets() }) }), expect: { error: RangeError, message: /= 15, got 0/ } },
    // options read once: a getter runs before anything is checked
    { name: b('a getter that detaches the logits buffer after logits was read'), run: on(backend, () => { const t = logits(); return rk.logProbs({ logits: t, targets: targets(), get temperature() { detach(t.data.buffer); return 1 } }) }), expect: { error: RangeError, message: /got 0/ } },
    { name: b('a getter that puts a target out of range after targets was read'), run: on(backend, () => { const y = targets(); return rk.crossEntropy({ logits: logits(), targets: y, get ignoreIndex() { y[0] = 1e6; return -100 } }) }), expect: { error: RangeError, message: /targets\[0\] must be in \[0, 5\).*got 1000000/ } },
    { name: b('options behind a Proxy: each read once'), run: on(backend, () => { const [o, reads] = counted({ logits: logits(), targets: targets(), temperature: 0.7, entropy: true }); const r = rk.logProbs(o); readOnce(reads); return r }), expect: equals(on(backend, () => rk.logProbs({ logits: logits(), targets: targets(), temperature: 0.7, entropy: true }))) },
    { name: b('options inheriting from a defaults object'), run: on(backend, () => rk.logProbs(Object.assign(Object.create({ temperature: 0.7, entropy: true }), { logits: logits(), targets: targets() }))), expect: equals(on(backend, () => rk.logProbs({ logits: logits(), targets: targets(), temperature: 0.7, entropy: true }))) },
    { name: b('a getter that throws'), run: on(backend, () => rk.logProbs({ logits: logits(), targets: targets(), get temperature(): number { throw new SyntaxError('from a getter') } })), expect: { error: SyntaxError, message: /from a getter/ } },
  ]
  // async calls: the inputs are read at the call; what happens to them afterwards does not reach the result
  const ceInputs = () => ({ logits: bigLogits(), targets: bigTargets(), grad: true, labelSmoothing: 0.1 })
  const lpInputs = () => { const [a, buffer] = resizable(values(BN * BV, 1)); return { logits: rk.tensor(a, [BN, BV]), targets: bigTargets(), entropy: true, temperature: 0.8, buffer } }
  const lp = ({ logits, targets, entropy, temperature }: ReturnType<typeof lpInputs>) => ({ logits, targets, entropy, temperature })
  const ppoInputs = () => ({ logits: bigLogits(), actions: bigTargets(), oldLogits: bigLogits(5), advantages: values(BN, 6), values: values(BN, 7), returns: values(BN, 8), beta: 0.1 })
  const rewardInputs = () => ({ scores: values(7, 1), offsets: Int32Array.of(0, 2, 7), chosen: Int32Array.of(1, 4), margins: values(7, 2) })
  const policyInputs = () => ({ logp: values(M, 1), oldLogp: values(M, 2), advantages: values(M, 3), mask: Uint8Array.of(1, 1, 0, 1, 1, 1), seqLengths: Int32Array.of(2, 4), aggregation: 'seq-mean-token-mean' as const })
  const gaeInputs = () => ({ rewards: values(M, 1), values: values(M, 2), seqLengths: Int32Array.of(3, 3), mask: Uint8Array.of(1, 1, 1, 0, 1, 1) })
  const groupInputs = () => ({ scores: values(M, 4), offsets: Int32Array.of(0, 2, 6) })
  const klInputs = () => ({ pLogits: bigLogits(), qLogits: bigLogits(9), grad: 'both' as const, mask: Uint8Array.from({ length: BN }, (_, i) => i % 3 ? 1 : 0) })
  const whitenInputs = () => ({ values: values(M, 3), mask: Uint8Array.of(1, 1, 0, 1, 1, 1) })
  cases.push(
    asyncCase(backend, 'crossEntropy, targets put out of range after the call', ceInputs, rk.crossEntropyAsync, rk.crossEntropy, (i) => { i.targets[0] = 1e9; i.targets[2] = -7 }),
    asyncCase(backend, 'crossEntropy, logits buffer detached after the call', ceInputs, rk.crossEntropyAsync, rk.crossEntropy, (i) => detach(i.logits.data.buffer)),
    asyncCase(backend, 'crossEntropy, logits overwritten after the call', ceInputs, rk.crossEntropyAsync, rk.crossEntropy, (i) => (i.logits.data as Float32Array).fill(NaN)),
    asyncCase(backend, 'logProbs, resizable logits buffer shrunk to 0 after the call', lpInputs, (i) => rk.logProbsAsync(lp(i)), (i) => rk.logProbs(lp(i)), (i) => i.buffer.resize(0)),
    asyncCase(backend, 'logProbs, logits buffer transferred after the call', lpInputs, (i) => rk.logProbsAsync(lp(i)), (i) => rk.logProbs(lp(i)),
      (i) => (transferMethod ? transferMethod.call(i.buffer, 0) : detach(i.buffer))),
    asyncCase(backend, 'ppoLoss, actions out of range and logits detached after the call', ppoInputs, rk.ppoLossAsync, rk.ppoLoss, (i) => { i.actions.fill(1 << 30); detach(i.logits.data.buffer); detach(i.oldLogits.data.buffer) }),
    asyncCase(backend, 'rewardLoss, offsets and chosen changed after the call', rewardInputs, rk.rewardLossAsync, rk.rewardLoss, (i) => { i.offsets.set([5, 1 << 30, -9]); i.chosen.fill(1 << 30); detach(i.scores.buffer) }),
    asyncCase(backend, 'policyLoss, seqLengths and mask changed after the call', policyInputs, rk.policyLossAsync, rk.policyLoss, (i) => { i.seqLengths.fill(1 << 30); i.mask.fill(7); detach(i.logp.buffer) }),
    asyncCase(backend, 'gae, seqLengths changed and rewards detached after the call', gaeInputs, rk.gaeAsync, rk.gae, (i) => { i.seqLengths.set([-5, 1 << 30]); detach(i.rewards.buffer) }),
    asyncCase(backend, 'groupAdvantages, offsets changed after the call', groupInputs, rk.groupAdvantagesAsync, rk.groupAdvantages, (i) => { i.offsets.set([0, 1 << 30, 3]); detach(i.scores.buffer) }),
    asyncCase(backend, 'klDivergence, both logits detached after the call', klInputs, rk.klDivergenceAsync, rk.klDivergence, (i) => { detach(i.pLogits.data.buffer); detach(i.qLogits.data.buffer); i.mask.fill(9) }),
    asyncCase(backend, 'whiten, values detached and mask changed after the call', whitenInputs, rk.whitenAsync, rk.whiten, (i) => { detach(i.values.buffer); i.mask.fill(0) }),
  )
  cases.push(...outCases(backend))
  return cases
}

// ---- the raw addon, with hand-made arguments ----

interface RawAddon {
  [op: string]: (args: object) => unknown
}

function rawCases(): Case[] {
  const addon = createRequire(import.meta.url)('../../build/Release/rlhf_kernels.node') as RawAddon & { cuda?: RawAddon; setup(o: object): void }
  /** The validated arguments of an op, as the package hands them to the addon. */
  const args = <T extends object>(op: string, options: object) => nativeArgs(validatorOf(op)!(options)) as T & Record<string, any>
  const lpArgs = () => args<{ logits: { data: Float32Array } }>('logProbs', { logits: logits(), targets: targets(), entropy: true, temperature: 0.9 })
  const keptArgs = () => args('keptLogProbs', { logits: logits(), targets: targets(), keepOffsets: Int32Array.of(0, 2, 3, 4), keepTokens: Int32Array.of(0, 1, 4, 2) })
  const ceArgs = () => args('crossEntropy', { logits: logits(), targets: targets(), grad: true })
  const plArgs = () => args('policyLoss', { logp: values(M, 1), oldLogp: values(M, 2), advantages: values(M, 3), seqLengths: Int32Array.of(2, 4) })
  const rwArgs = () => args('rewardLoss', { scores: values(7, 1), offsets: Int32Array.of(0, 2, 7), chosen: Int32Array.of(1, 4) })
  const raw = (name: string, run: () => unknown, expect: Case['expect']): Case => ({ name: `raw addon: ${name}`, run, expect })
  const prArgs = () => args('preferenceLoss', { logp: values(7, 1), refLogp: values(7, 2), offsets: Int32Array.of(0, 2, 7), ranking: Int32Array.of(1, 0, 4, 0, 3, 1, 2) })
  const slArgs = () => args('sequenceLogProbs', { logp: values(M, 1), seqLengths: Int32Array.of(2, 4), gradSeq: values(2, 3) })
  const cases: Case[] = [
    raw('logProbs, N = 4096 and V = 2^52 + 1 over 4096 floats', () => addon.logProbs({ ...lpArgs(), N: 4096, V: 2 ** 52 + 1, logits: { data: new Float32Array(4096), dtype: 'float32' }, targets: new Int32Array(4096) }), { error: RangeError, message: /logits has 4096 x 4503599627370497 elements, more than 2\^53 - 1/ }),
    raw('crossEntropy, N x V = 2^64 (wraps to 0 in 64 bits) over no floats', () => addon.crossEntropy({ ...ceArgs(), N: 2 ** 33, V: 2 ** 31, logits: { data: new Float32Array(0), dtype: 'float32' }, targets: new Int32Array(0) }), { error: RangeError, message: /more than 2\^53 - 1/ }),
    raw('klDivergence, N x V past 2^63', () => addon.klDivergence({ ...args('klDivergence', { pLogits: logits(), qLogits: logits() }), N: 2 ** 40, V: 2 ** 40 }), { error: RangeError, message: /more than 2\^53 - 1/ }),
    raw('ppoLoss, tokens x V past 2^53', () => addon.ppoLoss({ ...args('ppoLoss', { logits: logits(), actions: Int32Array.of(0, 1, 2), oldLogp: values(N, 1), advantages: values(N, 2) }), V: 2 ** 52 }), { error: RangeError, message: /more than 2\^53 - 1/ }),
    raw('logProbs, N = 2^53 (not an exact count)', () => addon.logProbs({ ...lpArgs(), N: 2 ** 53 }), { error: RangeError, message: /N must be a count/ }),
    raw('logProbs, N = -1', () => addon.logProbs({ ...lpArgs(), N: -1 }), { error: RangeError, message: /N must be a count/ }),
    raw('logProbs, targets shorter than N', () => addon.logProbs({ ...lpArgs(), targets: Int32Array.of(0, 1) }), { error: RangeError, message: /targets must have 3 elements, got 2/ }),
    raw('logProbs, targets a Proxy of an Int32Array', () => addon.logProbs({ ...lpArgs(), targets: new Proxy(targets(), {}) }), { error: TypeError, message: /targets must be an Int32Array/ }),
    raw('logProbs, targets a DataView', () => addon.logProbs({ ...lpArgs(), targets: new DataView(new ArrayBuffer(12)) }), { error: TypeError, message: /targets must be an Int32Array/ }),
    raw('logProbs, targets a Float32Array', () => addon.logProbs({ ...lpArgs(), targets: new Float32Array(3) }), { error: TypeError, message: /targets must be an Int32Array/ }),
    raw('logProbs, target out of range', () => addon.logProbs({ ...lpArgs(), targets: Int32Array.of(0, 5, 1) }), { error: RangeError, message: /targets\[1\] must be in \[0, 5\)/ }),
    raw('logProbs, logits.data a Proxy', () => addon.logProbs({ ...lpArgs(), logits: { data: new Proxy(logitsData(), {}), dtype: 'float32' } }), { error: TypeError, message: /logits.data must be a typed array/ }),
    raw('logProbs, logits.data a DataView', () => addon.logProbs({ ...lpArgs(), logits: { data: new DataView(new ArrayBuffer(60)), dtype: 'float32' } }), { error: TypeError, message: /logits.data must be a typed array/ }),
    raw('logProbs, Float32Array labelled float64', () => addon.logProbs({ ...lpArgs(), logits: { data: logitsData(), dtype: 'float64' } }), { error: TypeError, message: /logits.data does not match its dtype float64/ }),
    raw('logProbs, Float32Array labelled bfloat16', () => addon.logProbs({ ...lpArgs(), logits: { data: logitsData(), dtype: 'bfloat16' } }), { error: TypeError, message: /does not match its dtype bfloat16/ }),
    raw('logProbs, logits a bare typed array', () => addon.logProbs({ ...lpArgs(), logits: logitsData() }), { error: TypeError, message: /logits must be a float input/ }),
    raw('logProbs, a device tensor on the cpu backend', () => addon.logProbs({ ...lpArgs(), logits: { device: {}, dtype: 'float32' } }), { error: TypeError, message: /runs on the cuda backend only/ }),
    raw('logProbs, ignoreIndex 2^40', () => addon.logProbs({ ...lpArgs(), ignoreIndex: 2 ** 40 }), { error: RangeError, message: /ignoreIndex must be an int32/ }),
    raw('logProbs, temperature 1e-7 (z/T past float32)', () => addon.logProbs({ ...lpArgs(), temperature: 1e-7 }), { error: RangeError, message: /temperature must be a finite number >= 1e-6/ }),
    raw('crossEntropy, a per-row temperature holding 0', () => addon.crossEntropy({ ...ceArgs(), temperature: Float32Array.of(1, 0, 1) }), { error: RangeError, message: /temperature\[1\] must be a finite number >= 1e-6/ }),
    raw('keptLogProbs, keepTokens out of range', () => addon.keptLogProbs({ ...keptArgs(), keepTokens: Int32Array.of(0, 1, 5, 2) }), { error: RangeError, message: /keepTokens\[2\] must be in \[0, V\)/ }),
    raw('keptLogProbs, keepTokens not increasing', () => addon.keptLogProbs({ ...keptArgs(), keepTokens: Int32Array.of(1, 1, 4, 2) }), { error: RangeError, message: /keepTokens\[1\]/ }),
    raw('keptLogProbs, keepOffsets past the tokens', () => addon.keptLogProbs({ ...keptArgs(), keepOffsets: Int32Array.of(0, 2, 3, 1 << 30) }), { error: RangeError, message: /keepOffsets must run from 0 to 4/ }),
    raw('keptLogProbs, keepOffsets of the wrong length', () => addon.keptLogProbs({ ...keptArgs(), keepOffsets: Int32Array.of(0, 4) }), { error: RangeError, message: /keepOffsets must have N \+ 1 elements/ }),
    raw('keptLogProbs, topP 0', () => addon.keptLogProbs({ ...args('keptLogProbs', { logits: logits(), targets: targets(), topK: 2 }), topP: new Float32Array(3) }), { error: RangeError, message: /topP must be in \(0, 1\]/ }),
    raw('keptLogProbs, topK too short', () => addon.keptLogProbs({ ...args('keptLogProbs', { logits: logits(), targets: targets(), topK: 2 }), topK: Int32Array.of(1) }), { error: RangeError, message: /topK must have 3 elements, got 1/ }),
    raw('logProbs, per-row temperature holding 0', () => addon.logProbs({ ...lpArgs(), temperature: Float32Array.of(1, 0, 1) }), { error: RangeError, message: /temperature\[1\] must be a finite number >= 1e-6/ }),
    raw('logProbs, per-row temperature holding NaN', () => addon.logProbs({ ...lpArgs(), temperature: Float32Array.of(1, 1, NaN) }), { error: RangeError, message: /temperature\[2\] must be a finite number >= 1e-6/ }),
    raw('logProbs, per-row temperature too short', () => addon.logProbs({ ...lpArgs(), temperature: Float32Array.of(1, 1) }), { error: RangeError, message: /temperature must have 3 elements, got 2/ }),
    raw('logProbs, per-row temperature a Float64Array', () => addon.logProbs({ ...lpArgs(), temperature: Float64Array.of(1, 1, 1) }), { error: TypeError, message: /temperature must be a number or a Float32Array/ }),
    raw('klDivergence, per-row temperature holding 1e-7', () => addon.klDivergence({ ...args('klDivergence', { pLogits: logits(), qLogits: logits() }), temperature: Float32Array.of(1, 1e-7, 1) }), { error: RangeError, message: /temperature\[1\]/ }),
    raw('ppoLoss, per-row temperature of the wrong length', () => addon.ppoLoss({ ...args('ppoLoss', { logits: logits(), actions: Int32Array.of(0, 1, 2), oldLogp: values(N, 2), advantages: values(N, 3) }), temperature: new Float32Array(M).fill(1) }), { error: RangeError, message: /temperature must have 3 elements, got 6/ }),
    raw('policyLoss, logRatioClamp 1000 (exp past float32)', () => addon.policyLoss({ ...plArgs(), logRatioClamp: 1000 }), { error: RangeError, message: /logRatioClamp must be in \(0, 80\]/ }),
    raw('logProbs, ignoreIndex NaN', () => addon.logProbs({ ...lpArgs(), ignoreIndex: NaN }), { error: RangeError, message: /ignoreIndex must be an int32/ }),
    raw('logProbs, arguments not an object', () => addon.logProbs(7 as never), { error: TypeError, message: /arguments must be an object/ }),
    raw('logProbsAsync, arguments not an object (rejects)', () => addon.logProbsAsync(7 as never), { error: TypeError, message: /arguments must be an object/ }),
    raw('rewardLoss, empty offsets', () => addon.rewardLoss({ ...rwArgs(), offsets: new Int32Array(0) }), { error: RangeError, message: /offsets must run from 0 to 7/ }),
    raw('rewardLoss, decreasing offsets', () => addon.rewardLoss({ ...rwArgs(), offsets: Int32Array.of(0, 9, 7) }), { error: RangeError, message: /offsets must be non-decreasing/ }),
    raw('rewardLoss, chosen out of its group', () => addon.rewardLoss({ ...rwArgs(), chosen: Int32Array.of(1, 5) }), { error: RangeError, message: /chosen\[1\] must be in \[0, 5\)/ }),
    raw('preferenceLoss, a ranking index past its prompt', () => addon.preferenceLoss({ ...prArgs(), ranking: Int32Array.of(1, 0, 4, 0, 3, 1, 5) }), { error: RangeError, message: /ranking of prompt 1 must be a permutation of 0..4, got 5 at ranking\[6\]/ }),
    raw('preferenceLoss, a ranking repeating a candidate', () => addon.preferenceLoss({ ...prArgs(), ranking: Int32Array.of(1, 1, 4, 0, 3, 1, 2) }), { error: RangeError, message: /ranking of prompt 0 must be a permutation of 0..1, got 1 at ranking\[1\]/ }),
    raw('preferenceLoss, a negative ranking index', () => addon.preferenceLoss({ ...prArgs(), ranking: Int32Array.of(1, 0, 4, 0, -2147483648, 1, 2) }), { error: RangeError, message: /got -2147483648 at ranking\[4\]/ }),
    raw('preferenceLoss, a ranking shorter than the candidates', () => addon.preferenceLoss({ ...prArgs(), ranking: Int32Array.of(1, 0) }), { error: RangeError, message: /ranking must have 7 elements, got 2/ }),
    raw('preferenceLoss, chosen past its prompt', () => addon.preferenceLoss({ ...prArgs(), ranking: undefined, chosen: Int32Array.of(0, 5) }), { error: RangeError, message: /chosen\[1\] must be in \[0, 5\)/ }),
    raw('preferenceLoss, offsets past the candidates', () => addon.preferenceLoss({ ...prArgs(), offsets: Int32Array.of(0, 2, 1 << 30) }), { error: RangeError, message: /offsets must run from 0 to 7/ }),
    raw('preferenceLoss, refLogp shorter than logp', () => addon.preferenceLoss({ ...prArgs(), refLogp: { data: new Float32Array(3), dtype: 'float32' } }), { error: RangeError, message: /refLogp must have 7 elements, got 3/ }),
    raw('preferenceLoss, simpo with no lengths', () => addon.preferenceLoss({ ...prArgs(), type: 4, refLogp: undefined }), { error: TypeError, message: /lengths must be given for type 'simpo'/ }),
    raw('preferenceLoss, robust with labelSmoothing 0.5 (a division by 0)', () => addon.preferenceLoss({ ...prArgs(), type: 1, labelSmoothing: 0.5 }), { error: RangeError, message: /labelSmoothing must be in \[0, 1\] \(robust: \[0, 0.5\)\)/ }),
    raw('preferenceLoss, beta NaN', () => addon.preferenceLoss({ ...prArgs(), beta: NaN }), { error: RangeError, message: /beta must be a finite number > 0/ }),
    raw('preferenceLoss, a type ordinal past the list', () => addon.preferenceLoss({ ...prArgs(), type: 6 }), { error: RangeError, message: /type must be the ordinal of one of 0 dpo, 1 robust, 2 ipo, 3 hinge, 4 simpo, 5 plackett-luce/ }),
    raw('sequenceLogProbs, reduction none', () => addon.sequenceLogProbs({ ...slArgs(), reduction: 2 }), { error: RangeError, message: /reduction must be the ordinal of 'sum' or 'mean'/ }),
    raw('sequenceLogProbs, layout offsets past the tokens', () => addon.sequenceLogProbs({ ...slArgs(), layout: { tokens: M, width: 4, offsets: Int32Array.of(0, 2, 1 << 30) } }), { error: RangeError, message: /layout.offsets must run from 0 to 6/ }),
    raw('sequenceLogProbs, gradSeq shorter than the sequences', () => addon.sequenceLogProbs({ ...slArgs(), gradSeq: { data: new Float32Array(1), dtype: 'float32' } }), { error: RangeError, message: /gradSeq must have 2 elements, got 1/ }),
    raw('sequenceLogProbs, logp shorter than the layout', () => addon.sequenceLogProbs({ ...slArgs(), logp: { data: new Float32Array(2), dtype: 'float32' } }), { error: RangeError, message: /logp must have 6 elements, got 2/ }),
    raw('policyLoss, offsets past the tokens', () => addon.policyLoss({ ...plArgs(), layout: { tokens: M, width: 4, offsets: Int32Array.of(0, 2, 1 << 30) } }), { error: RangeError, message: /layout.offsets must run from 0 to 6/ }),
    raw('policyLoss, mask holding 2', () => addon.policyLoss({ ...plArgs(), mask: Uint8Array.of(1, 2, 1, 1, 1, 1) }), { error: RangeError, message: /mask must hold 0 or 1/ }),
    raw('gae, offsets an Int32Array of another length than the layout says', () => addon.gae({ ...args('gae', { rewards: values(M, 1), values: values(M, 2), seqLengths: Int32Array.of(3, 3) }), layout: { tokens: M, width: 3, offsets: Int32Array.of(0, 3) } }), { error: RangeError, message: /offsets must run from 0 to 6/ }),
    // read once, then check: getters and Proxy traps run before any check
    raw('a getter that detaches the logits buffer after logits was read', () => { const a = lpArgs(); return addon.logProbs({ ...a, get temperature() { detach(a.logits.data.buffer); return 1 } }) }, { error: RangeError, message: /logits must have 15 elements, got 0/ }),
    raw('a getter that puts a target out of range after targets was read', () => { const a = lpArgs(); return addon.logProbs({ ...a, get entropy() { a.targets[0] = 1e6; return true } }) }, { error: RangeError, message: /targets\[0\] must be in \[0, 5\).*got 1000000/ }),
    raw('a getter that shrinks the resizable logits buffer', () => { const [d, buf] = resizable(logitsData()); return addon.logProbs({ ...lpArgs(), logits: { data: d, dtype: 'float32' }, get entropy() { buf.resize(4); return true } }) }, { error: RangeError, message: /logits must have 15 elements, got 1/ }),
    raw('a nested getter (layout.offsets) that detaches logp', () => { const a = plArgs(); return addon.policyLoss({ ...a, layout: { tokens: M, width: 4, get offsets() { detach(a.logp.data.buffer); return Int32Array.of(0, 2, 6) } } }) }, { error: RangeError, message: /logp must have 6 elements, got 0/ }),
    raw('a getter (dtype) that detaches its own data', () => { const d = logitsData(); return addon.logProbs({ ...lpArgs(), logits: { data: d, get dtype() { detach(d.buffer); return 'float32' } } }) }, { error: RangeError, message: /got 0/ }),
    raw('a getter whose value changes on each read', () => { let n = 3; return addon.logProbs({ ...lpArgs(), get N() { return n++ * 1e6 } }) }, { error: RangeError, message: /logits must have 15000000 elements, got 15/ }),
    raw('arguments behind a Proxy: each property read once', () => { const [o, reads] = counted(lpArgs()); const r = addon.logProbs(o); readOnce(reads); return r }, equals(() => addon.logProbs(lpArgs()))),
    raw('a getter that throws (sync)', () => addon.logProbs({ ...lpArgs(), get temperature(): number { throw new SyntaxError('from a getter') } }), { error: SyntaxError, message: /from a getter/ }),
    raw('a getter that throws (async: rejects)', () => addon.logProbsAsync({ ...lpArgs(), get temperature(): number { throw new SyntaxError('from a getter') } }), { error: SyntaxError, message: /from a getter/ }),
    raw('a Proxy whose ownKeys trap throws', () => addon.logProbs(new Proxy(lpArgs(), { ownKeys() { throw new EvalError('ownKeys') } })), { error: EvalError, message: /ownKeys/ }),
    raw('policyLoss, rolloutCorrection without behaviorLogp', () => addon.policyLoss({ ...plArgs(), rolloutCorrection: 3 }), { error: TypeError, message: /rolloutCorrection needs behaviorLogp/ }),
    raw('policyLoss, behaviorLogp shorter than the tokens', () => addon.policyLoss({ ...plArgs(), behaviorLogp: { data: values(2, 1), dtype: 'float32' }, rolloutCorrection: 1 }), { error: RangeError, message: /behaviorLogp must have 6 elements, got 2/ }),
    raw('policyLoss, a variant ordinal past the list', () => addon.policyLoss({ ...plArgs(), variant: 4, isLevel: 1 }), { error: RangeError, message: /variant must be the ordinal of one of 0 ppo, 1 cispo, 2 dppo-tv, 3 dppo-kl/ }),
    raw('policyLoss, isLevel sequence over an empty sequence and a NaN opsmDelta', () => addon.policyLoss({ ...plArgs(), isLevel: 1, opsmDelta: NaN, layout: { tokens: M, width: 6, offsets: Int32Array.of(0, 0, 6) } }), { error: RangeError, message: /opsmDelta must be a number, or null for off/ }),
    raw('ppoLoss, rolloutCorrection without behaviorLogp', () => addon.ppoLoss({ ...args('ppoLoss', { logits: logits(), actions: Int32Array.of(0, 1, 2), oldLogp: values(N, 1), advantages: values(N, 2) }), rolloutCorrection: 0 }), { error: TypeError, message: /rolloutCorrection needs behaviorLogp/ }),
    raw("ppoLoss, trustRegion 'full' without oldLogits", () => addon.ppoLoss({ ...args('ppoLoss', { logits: logits(), actions: Int32Array.of(0, 1, 2), oldLogp: values(N, 1), advantages: values(N, 2), variant: 'dppo-tv' }), trustRegion: 1 }), { error: TypeError, message: /trustRegion 'full' needs oldLogits/ }),
    raw("ppoLoss, trustRegion 'full' with variant ppo", () => addon.ppoLoss({ ...args('ppoLoss', { logits: logits(), actions: Int32Array.of(0, 1, 2), oldLogp: values(N, 1), advantages: values(N, 2) }), trustRegion: 1 }), { error: TypeError, message: /trustRegion 'full' belongs to variant 'dppo-tv' \/ 'dppo-kl'/ }),
    raw('ppoLoss, a trustRegion ordinal past the list', () => addon.ppoLoss({ ...args('ppoLoss', { logits: logits(), actions: Int32Array.of(0, 1, 2), oldLogp: values(N, 1), advantages: values(N, 2), variant: 'dppo-kl' }), trustRegion: 2 }), { error: RangeError, message: /trustRegion must be the ordinal of one of 0 binary, 1 full/ }),
  ]
  // async: the job runs on copies made at the call
  // a longer job than the api cases' (1024 rows): the change must come while it runs
  const RN = 1024
  const bigArgs = () => args<{ logits: { data: Float32Array } }>('logProbs', {
    logits: rk.tensor(values(RN * BV, 1), [RN, BV]), targets: Int32Array.from({ length: RN }, (_, i) => (i * 977) % BV), entropy: true, temperature: 0.9,
  })
  const asyncRaw = (name: string, change: (a: ReturnType<typeof bigArgs>) => void): Case => {
    let expected: unknown
    return raw(`logProbsAsync, ${name}`, () => {
      expected = addon.logProbs(bigArgs())
      const a = bigArgs()
      const promise = addon.logProbsAsync(a)
      change(a)
      return promise
    }, { check: (value) => same(value, expected) })
  }
  cases.push(
    asyncRaw('logits detached after the call', (a) => detach(a.logits.data.buffer)),
    asyncRaw('targets put out of range after the call', (a) => a.targets.fill(1 << 30)),
    asyncRaw('targets detached after the call', (a) => detach(a.targets.buffer)),
    asyncRaw('logits overwritten after the call', (a) => a.logits.data.fill(1e30)),
    (() => {
      let expected: unknown
      return raw('logProbsAsync, resizable logits shrunk to 0 after the call', () => {
        expected = addon.logProbs(bigArgs())
        const [d, buf] = resizable(values(RN * BV, 1))
        const promise = addon.logProbsAsync({ ...bigArgs(), logits: { data: d, dtype: 'float32' } })
        buf.resize(0)
        return promise
      }, { check: (value) => same(value, expected) })
    })(),
  )
  // outputs longer than the engine's typed arrays: V8 would abort the process if asked to make one
  cases.push(
    raw('klDivergence, N = 2^40 rows of V = 0 (a perRow output of 2^40 floats)', () => addon.klDivergence({ ...args('klDivergence', { pLogits: logits(), qLogits: logits() }), N: 2 ** 40, V: 0, pLogits: { data: new Float32Array(0), dtype: 'float32' }, qLogits: { data: new Float32Array(0), dtype: 'float32' } }), { error: RangeError, message: /perRow would have 1099511627776 elements, more than a typed array holds/ }),
  )
  // native failures are RlhfKernelsError instances (the package gave the addon the class at load); the cuda
  // entry points fail so on any machine (no GPU: ERR_CUDA_UNAVAILABLE; a GPU: the forged handle, ERR_DISPOSED)
  cases.push(...rawOutCases(addon as never))
  cases.push(raw('setup without a constructor', () => addon.setup({ errorClass: 7 }), { error: TypeError, message: /errorClass must be a constructor/ }))
  if (addon.cuda !== undefined) {
    const cuda = addon.cuda
    const code = rk.backends().find((b) => b.name === 'cuda')!.available ? 'ERR_DISPOSED' : 'ERR_CUDA_UNAVAILABLE'
    cases.push(
      raw(`a cuda call (${code}) is an RlhfKernelsError`, () => cuda.logProbs({ ...lpArgs(), logits: { device: {}, dtype: 'float32' } }), { error: rk.RlhfKernelsError, code }),
      raw(`a cuda async call (${code}) rejects with an RlhfKernelsError`, () => cuda.logProbsAsync({ ...lpArgs(), logits: { device: {}, dtype: 'float32' } }), { error: rk.RlhfKernelsError, code }),
    )
  }
  return cases
}

/**
 * Out of memory on the cpu backend, in a process whose address space is limited (hostile.test.ts sets the
 * limit so that the input fits and a second copy of it does not): the async call cannot copy its input.
 */
export const OOM_ELEMENTS = 400_000_000
function oomCases(): Case[] {
  return [{
    name: 'cpu: an async call that cannot copy its input is an RlhfKernelsError ERR_OUT_OF_MEMORY',
    run: () => {
      rk.setBackend('cpu')
      return rk.whitenAsync({ values: new Float32Array(OOM_ELEMENTS) })
    },
    expect: { error: rk.RlhfKernelsError, code: 'ERR_OUT_OF_MEMORY', message: /whiten: out of memory/ },
  }]
}

/** Every group of cases by name; each group runs in one child process. */
export const GROUPS: Record<string, () => Case[]> = {
  js: () => apiCases('js'),
  cpu: () => apiCases('cpu'),
  raw: rawCases,
  oom: oomCases,
}

// ---- caller-provided outputs (`out`, src/outputs.ts) ----

/**
 * An async call's `out` arrays are written when it settles, on the JS thread: one detached, transferred or
 * shrunk meanwhile is never written (ERR_OUTPUT_CHANGED), one overwritten meanwhile gets the result.
 */
function outCases(backend: rk.BackendName): Case[] {
  const b = (name: string) => `${backend}: out, ${name}`
  const ceOptions = () => ({ logits: bigLogits(), targets: bigTargets(), grad: true, labelSmoothing: 0.1 })
  const expected = () => { rk.setBackend(backend); return rk.crossEntropy(ceOptions()) }
  const changed = { error: rk.RlhfKernelsError, code: 'ERR_OUTPUT_CHANGED', message: /crossEntropy: out.gradLogits was detached or resized while the call ran/ }
  const asyncOut = (gradLogits: Float32Array, after: () => void) => () => {
    rk.setBackend(backend)
    const promise = rk.crossEntropyAsync({ ...ceOptions(), out: { gradLogits } })
    after()
    return promise
  }
  let kept: Float32Array | null = null
  return [
    { name: b('async, gradLogits detached after the call'), run: () => { const g = new Float32Array(BN * BV); return asyncOut(g, () => detach(g.buffer))() }, expect: changed },
    { name: b('async, gradLogits transferred after the call: the new owner is not written'), run: async () => {
      const g = new Float32Array(BN * BV)
      let moved: ArrayBuffer | null = null
      try {
        await asyncOut(g, () => { moved = transferMethod ? transferMethod.call(g.buffer) : (detach(g.buffer), null) })()
      } finally {
        if (moved !== null && new Float32Array(moved).some((x) => x !== 0)) throw new Error('the transferred buffer was written')
      }
    }, expect: changed },
    { name: b('async, resizable gradLogits shrunk after the call'), run: () => { const [g, buf] = resizable(new Float32Array(BN * BV)); return asyncOut(g, () => buf.resize(8))() }, expect: changed },
    { name: b('async, gradLogits overwritten while it runs gets the result'), run: () => { const g = new Float32Array(BN * BV); kept = g; return asyncOut(g, () => g.fill(NaN))() },
      expect: { check: (value) => { same(value, expected()); if ((value as { gradLogits: rk.Tensor }).gradLogits.data !== kept) throw new Error('not the caller\'s array') } } },
    { name: b('async, gradLogits over a SharedArrayBuffer'), run: () => { const g = new Float32Array(new SharedArrayBuffer(4 * BN * BV)); return asyncOut(g, () => undefined)() }, expect: equals(expected) },
    { name: b('a getter in out that detaches out.gradLogits after it was read'), run: on(backend, () => {
      const g = new Float32Array(N * V)
      return rk.crossEntropy({ logits: logits(), targets: targets(), grad: true, out: { gradLogits: g, get lse() { detach(g.buffer); return undefined } } })
    }), expect: { error: RangeError, message: /out.gradLogits.length must be 15, got 0/ } },
    { name: b('out aliasing the logits'), run: on(backend, () => { const t = logits(); return rk.crossEntropy({ logits: t, targets: targets(), grad: true, out: { gradLogits: t.data as Float32Array } }) }),
      expect: { error: RangeError, message: /out.gradLogits must be memory apart from every input, got an array sharing memory with logits/ } },
  ]
}

/** The addon's own checks of `out` (a caller bypassing the TypeScript layer), and its async delivery. */
function rawOutCases(addon: RawAddon): Case[] {
  const RN = 256
  const args = () => nativeArgs(validatorOf('crossEntropy')!({ logits: rk.tensor(values(RN * BV, 1), [RN, BV]), targets: Int32Array.from({ length: RN }, (_, i) => (i * 977) % BV), grad: true })) as Record<string, any>
  const raw = (name: string, run: () => unknown, expect: Case['expect']): Case => ({ name: `raw addon: out, ${name}`, run, expect })
  const changed = { error: rk.RlhfKernelsError, code: 'ERR_OUTPUT_CHANGED' }
  return [
    raw('async, gradLogits detached after the call', () => { const g = new Float32Array(RN * BV); const p = addon.crossEntropyAsync({ ...args(), out: { gradLogits: g } }); detach(g.buffer); return p }, changed),
    raw('async, resizable gradLogits shrunk after the call', () => { const [g, buf] = resizable(new Float32Array(RN * BV)); const p = addon.crossEntropyAsync({ ...args(), out: { gradLogits: g } }); buf.resize(4); return p }, changed),
    raw('async, lse transferred after the call', () => { const l = new Float32Array(RN); const p = addon.crossEntropyAsync({ ...args(), out: { lse: l } }); detach(l.buffer); return p }, { ...changed, message: /out.lse/ }),
    raw('a getter that detaches out.gradLogits after it was read', () => { const g = new Float32Array(RN * BV); return addon.crossEntropy({ ...args(), out: { gradLogits: g }, get zLoss() { detach(g.buffer); return 0 } }) }, { error: RangeError, message: /out.gradLogits must have 2097152 elements, got 0/ }),
    raw('gradLogits over the logits', () => { const a = args(); return addon.crossEntropy({ ...a, out: { gradLogits: a.logits.data } }) }, { error: RangeError, message: /out.gradLogits must not share memory with the input logits/ }),
    raw('losses over the targets', () => { const a = args(); return addon.crossEntropy({ ...a, out: { losses: new Float32Array(a.targets.buffer) } }) }, { error: RangeError, message: /out.losses must not share memory with the input targets/ }),
  ]
}
