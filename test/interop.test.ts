/**
 * onnxruntime-node tensors go straight into the ops, without copying: a tiny ONNX graph (written here as
 * protobuf bytes) computes logits = x · W in float32 and, cast, in float16; its output tensors are fed to
 * logProbs and compared with the float64 log-softmax of the same numbers. int64 token ids (as onnxruntime
 * and transformers.js give them) are converted to int32, each checked to fit.
 */
import * as ort from 'onnxruntime-node'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { f16ToFloat } from '../src/dtypes.js'

// ---- a protobuf encoder for the few ONNX messages the graph needs (onnx.proto field numbers) ----
type Bytes = number[]
function varint(value: number): Bytes {
  const out: Bytes = []
  let v = value
  while (v > 127) {
    out.push((v & 127) | 128)
    v = Math.floor(v / 128)
  }
  out.push(v)
  return out
}
const int = (field: number, value: number): Bytes => [...varint(field << 3), ...varint(value)]
const bytes = (field: number, payload: Bytes | Uint8Array): Bytes => [...varint((field << 3) | 2), ...varint(payload.length), ...payload]
const str = (field: number, s: string) => bytes(field, [...new TextEncoder().encode(s)])

const FLOAT = 1
const FLOAT16 = 10
/** ValueInfoProto: name, TypeProto.tensor_type { elem_type, shape { dim { dim_value } } } */
const valueInfo = (name: string, elemType: number, dims: number[]) =>
  [...str(1, name), ...bytes(2, bytes(1, [...int(1, elemType), ...bytes(2, dims.flatMap((d) => bytes(1, int(1, d))))]))]
/** NodeProto: inputs, outputs, op_type, attributes */
const node = (op: string, inputs: string[], outputs: string[], attributes: Bytes[] = []) =>
  [...inputs.flatMap((i) => str(1, i)), ...outputs.flatMap((o) => str(2, o)), ...str(4, op), ...attributes.flatMap((a) => bytes(5, a))]

const N = 3
const H = 4
const V = 5
const W = Float32Array.from({ length: H * V }, (_, i) => Math.sin(1.7 * i) * 2)
const X = Float32Array.from({ length: N * H }, (_, i) => Math.cos(0.9 * i + 0.3))

/** logits = MatMul(x, W) (float32) and logits16 = Cast(logits, to = FLOAT16) */
function model(): Uint8Array {
  const weight = [...int(1, H), ...int(1, V), ...int(2, FLOAT), ...str(8, 'W'), ...bytes(9, new Uint8Array(W.buffer))]
  const graph = [
    ...bytes(1, node('MatMul', ['x', 'W'], ['logits'])),
    ...bytes(1, node('Cast', ['logits'], ['logits16'], [[...str(1, 'to'), ...int(3, FLOAT16), ...int(20, 2)]])),
    ...str(2, 'logits'),
    ...bytes(5, weight),
    ...bytes(11, valueInfo('x', FLOAT, [N, H])),
    ...bytes(12, valueInfo('logits', FLOAT, [N, V])),
    ...bytes(12, valueInfo('logits16', FLOAT16, [N, V])),
  ]
  // ModelProto: ir_version 8, opset { domain '', version 13 }, graph
  return Uint8Array.from([...int(1, 8), ...bytes(8, [...str(1, ''), ...int(2, 13)]), ...bytes(7, graph)])
}

/** float64 log softmax of row r at column t */
function logSoftmax(values: ArrayLike<number>, r: number, t: number): number {
  const row = Array.from({ length: V }, (_, j) => values[r * V + j])
  const m = Math.max(...row)
  return row[t] - m - Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0))
}

const session = await ort.InferenceSession.create(model())
const out = await session.run({ x: new ort.Tensor('float32', X, [N, H]) })
const targets = new Int32Array([4, 0, 2])

describe('onnxruntime-node tensors as op inputs', () => {
  it('the graph computes x · W', () => {
    const logits = out.logits.data as Float32Array
    for (let r = 0; r < N; r++) {
      for (let j = 0; j < V; j++) {
        let s = 0
        for (let k = 0; k < H; k++) s += X[r * H + k] * W[k * V + j]
        expect(logits[r * V + j]).toBeCloseTo(s, 5)
      }
    }
  })

  it('float32 logits: logProbs reads them in place and matches the float64 log-softmax', () => {
    const t = rk.fromForeign(out.logits)
    expect(t.data).toBe(out.logits.data)  // the same array: no copy
    expect(t.shape).toEqual([N, V])
    for (const backend of rk.backends().filter((b) => b.available && b.name !== 'cuda')) {
      rk.setBackend(backend.name)
      const { logp } = rk.logProbs({ logits: out.logits, targets })
      for (let r = 0; r < N; r++) expect(logp[r]).toBeCloseTo(logSoftmax(out.logits.data as Float32Array, r, targets[r]), 5)
    }
    rk.setBackend('auto')
  })

  it('float16 logits (Uint16Array bit patterns): read in place, decoded in the kernel', async () => {
    const f16 = out.logits16
    expect(f16.type).toBe('float16')
    const t = rk.fromForeign(f16)
    expect(t.dtype).toBe('float16')
    expect((t.data as Uint16Array).buffer).toBe((f16.data as Uint16Array).buffer)
    const decoded = Array.from(f16.data as Uint16Array, f16ToFloat)
    const { logp } = await rk.logProbsAsync({ logits: f16, targets })
    for (let r = 0; r < N; r++) expect(logp[r]).toBeCloseTo(logSoftmax(decoded, r, targets[r]), 5)
    // a runtime with Float16Array hands float16 data as another 2-byte array: its bits are viewed, not copied
    const bits = f16.data as Uint16Array
    const other = new Int16Array(bits.buffer, bits.byteOffset, bits.length)
    const viewed = rk.fromForeign({ type: 'float16', dims: [N, V], data: other })
    expect(viewed.data).toBeInstanceOf(Uint16Array)
    expect((viewed.data as Uint16Array).buffer).toBe(bits.buffer)
    expect(rk.logProbs({ logits: viewed, targets }).logp).toEqual(rk.logProbs({ logits: f16, targets }).logp)
  })

  it('int64 targets are converted to int32; one that does not fit is a RangeError', () => {
    const ids = new ort.Tensor('int64', BigInt64Array.from([4n, 0n, 2n]), [N])
    const { logp } = rk.logProbs({ logits: out.logits, targets: ids })
    expect(Array.from(logp)).toEqual(Array.from(rk.logProbs({ logits: out.logits, targets }).logp))
    const huge = new ort.Tensor('int64', BigInt64Array.from([4n, 2n ** 40n, 2n]), [N])
    expect(() => rk.logProbs({ logits: out.logits, targets: huge })).toThrow(/logProbs: targets: data\[1\] must be an int64 value that fits in int32/)
  })

  it('refuses what it cannot read: a string tensor, data on a GPU, dims that do not match the data', () => {
    const strings = new ort.Tensor('string', ['a', 'b'], [2])
    expect(() => rk.logProbs({ logits: strings, targets })).toThrow(TypeError)
    const onGpu = { type: 'float32', dims: [N, V], location: 'gpu-buffer', get data(): never { throw new Error('not on the host') } }
    expect(() => rk.logProbs({ logits: onGpu, targets })).toThrow(/getData\(\)/)
    const wrongDims = { type: 'float32', dims: [N, V + 1], data: out.logits.data }
    expect(() => rk.logProbs({ logits: wrongDims, targets })).toThrow(RangeError)
  })
})
