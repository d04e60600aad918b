// The ONNX graphs of the host benchmark (bench/host.js), written as protobuf bytes by a tiny encoder: the
// fields of onnx.proto3 that these graphs use (ModelProto, GraphProto, NodeProto, AttributeProto,
// TensorProto, ValueInfoProto) and nothing else. Opset 17, IR version 8.

const FIELD = { varint: 0, bytes: 2, fixed32: 5 }
export const ELEM = { float: 1, int64: 7 }
const ATTR = { float: 1, int: 2, string: 3, ints: 7 }

function varint(out, value) {
  let v = BigInt.asUintN(64, BigInt(value)) // a negative int64 takes ten bytes, as protobuf writes it
  do {
    const byte = Number(v & 0x7fn)
    v >>= 7n
    out.push(v ? byte | 0x80 : byte)
  } while (v)
}

class Message {
  bytes = []
  key(field, wire) { varint(this.bytes, (field << 3) | wire); return this }
  int(field, value) { this.key(field, FIELD.varint); varint(this.bytes, value); return this }
  raw(field, data) {
    const b = data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    this.key(field, FIELD.bytes)
    varint(this.bytes, b.length)
    for (const x of b) this.bytes.push(x)
    return this
  }
  string(field, s) { return this.raw(field, new TextEncoder().encode(s)) }
  message(field, m) { return this.raw(field, Uint8Array.from(m.bytes)) }
  float(field, f) {
    this.key(field, FIELD.fixed32)
    for (const x of new Uint8Array(Float32Array.of(f).buffer)) this.bytes.push(x)
    return this
  }
}

// AttributeProto: a string, { i }, { f } or { ints }
function attribute(name, value) {
  const a = new Message().string(1, name)
  if (typeof value === 'string') return a.raw(4, new TextEncoder().encode(value)).int(20, ATTR.string)
  if ('f' in value) return a.float(2, value.f).int(20, ATTR.float)
  if ('i' in value) return a.int(3, value.i).int(20, ATTR.int)
  for (const i of value.ints) a.int(8, i)
  return a.int(20, ATTR.ints)
}

// ValueInfoProto: name and element type; the shape is left to the runtime
function valueInfo(name, elem) {
  const tensorType = new Message().int(1, elem)
  return new Message().string(1, name).message(2, new Message().message(1, tensorType))
}

/** A graph under construction: inputs, constants, nodes, outputs; `model()` gives the ModelProto bytes. */
export class Graph {
  #nodes = []
  #inits = []
  #inputs = []
  #outputs = []
  #next = 0
  input(name, elem = ELEM.float) { this.#inputs.push(valueInfo(name, elem)); return name }
  output(name, elem = ELEM.float) { this.#outputs.push(valueInfo(name, elem)); return name }
  /** a constant tensor (float or int64) */
  constant(values, dims, elem = ELEM.float) {
    const name = `c${this.#next++}`
    const t = new Message()
    for (const d of dims) t.int(1, d)
    t.int(2, elem).string(8, name)
    t.raw(9, elem === ELEM.float ? Float32Array.from(values) : BigInt64Array.from(values, BigInt))
    this.#inits.push(t)
    return name
  }
  scalar(x) { return this.constant([x], []) }
  /** one node; `outputs`: a count of fresh names or the names; returns them (a single name alone) */
  node(op, inputs, attrs = {}, outputs = 1) {
    const names = typeof outputs === 'number' ? Array.from({ length: outputs }, () => `t${this.#next++}`) : outputs
    const n = new Message()
    for (const i of inputs) n.string(1, i)
    for (const o of names) n.string(2, o)
    n.string(4, op)
    for (const [k, v] of Object.entries(attrs)) n.message(5, attribute(k, v))
    this.#nodes.push(n)
    return names.length === 1 ? names[0] : names
  }
  model() {
    const g = new Message()
    for (const n of this.#nodes) g.message(1, n)
    g.string(2, 'bench')
    for (const t of this.#inits) g.message(5, t)
    for (const i of this.#inputs) g.message(11, i)
    for (const o of this.#outputs) g.message(12, o)
    const opset = new Message().string(1, '').int(2, 17)
    return Uint8Array.from(new Message().int(1, 8).string(2, 'rlhf-kernels bench').message(7, g).message(8, opset).bytes)
  }
}
