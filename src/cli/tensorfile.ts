/**
 * Reading tensors saved from PyTorch or NumPy: safetensors files, .npy files (one array each; a directory of
 * them is read as one set, by file name) and .npz archives (stored or deflated). Every array comes back as
 * float64 values with its shape and source dtype; a malformed file is a TensorFileError with one clear line.
 *
 * Op options travel with the tensors as a JSON object: `options.json` inside an .npz archive, in a directory
 * of .npy files, or beside an .npy or .npz file; in a safetensors file, the metadata entry `options`.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { basename, dirname, extname, join } from 'node:path'
import { inflateRawSync } from 'node:zlib'
import { bf16ToFloat, f16ToFloat } from '../index.js'

export interface NamedArray {
  name: string
  dtype: string
  shape: number[]
  data: Float64Array
}

export interface TensorSet {
  arrays: Map<string, NamedArray>
  metadata: Record<string, string>
  /** the options object (options.json or the metadata entry `options`), or null */
  options: Record<string, unknown> | null
}

/** The JSON options object of `where`; anything but an object is a TensorFileError. */
function parseOptions(where: string, text: string): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new TensorFileError(`${where}: not valid JSON`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new TensorFileError(`${where}: must hold a JSON object of options`)
  return value as Record<string, unknown>
}

/** options.json in `dir`, when there is one. */
function optionsBeside(dir: string): Record<string, unknown> | null {
  const file = join(dir, 'options.json')
  return existsSync(file) ? parseOptions(file, readFileSync(file, 'utf8')) : null
}

export class TensorFileError extends Error {}

const bad = (file: string, why: string) => new TensorFileError(`${file}: ${why}`)

function decode(file: string, name: string, dtype: string, bytes: Uint8Array, count: number, littleEndian = true): Float64Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const out = new Float64Array(count)
  const size: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 }
  const s = size[dtype]
  if (s === undefined) throw bad(file, `${name} has dtype ${dtype}, which is not supported (float64/32/16, bfloat16, int64/32/16/8, uint8, bool)`)
  if (bytes.byteLength !== s * count) throw bad(file, `${name} holds ${bytes.byteLength} bytes, its shape and dtype need ${s * count}`)
  for (let i = 0; i < count; i++) {
    const o = i * s
    switch (dtype) {
      case 'F64': out[i] = view.getFloat64(o, littleEndian); break
      case 'F32': out[i] = view.getFloat32(o, littleEndian); break
      case 'F16': out[i] = f16ToFloat(view.getUint16(o, littleEndian)); break
      case 'BF16': out[i] = bf16ToFloat(view.getUint16(o, littleEndian)); break
      case 'I64': out[i] = Number(view.getBigInt64(o, littleEndian)); break
      case 'I32': out[i] = view.getInt32(o, littleEndian); break
      case 'I16': out[i] = view.getInt16(o, littleEndian); break
      case 'I8': out[i] = view.getInt8(o); break
      default: out[i] = view.getUint8(o)
    }
  }
  return out
}

/** safetensors: u64 header length, a JSON header { name: { dtype, shape, data_offsets }, __metadata__ }, data. */
export function readSafetensors(file: string, buf: Buffer): TensorSet {
  if (buf.length < 8) throw bad(file, 'too short to be a safetensors file')
  const n = Number(buf.readBigUInt64LE(0))
  if (n <= 0 || 8 + n > buf.length) throw bad(file, `header length ${n} does not fit in the file (${buf.length} bytes)`)
  let header: Record<string, any>
  try {
    header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'))
  } catch {
    throw bad(file, 'the safetensors header is not valid JSON')
  }
  const data = buf.subarray(8 + n)
  const arrays = new Map<string, NamedArray>()
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue
    if (!t || typeof t.dtype !== 'string' || !Array.isArray(t.shape) || !Array.isArray(t.data_offsets)) throw bad(file, `entry ${name} is malformed`)
    const [a, b] = t.data_offsets as number[]
    if (!(a >= 0 && b >= a && b <= data.length)) throw bad(file, `${name}'s data_offsets [${a}, ${b}] are outside the data (${data.length} bytes)`)
    const count = (t.shape as number[]).reduce((x, y) => x * y, 1)
    arrays.set(name, { name, dtype: t.dtype, shape: t.shape, data: decode(file, name, t.dtype, data.subarray(a, b), count) })
  }
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>
  return { arrays, metadata, options: metadata.options === undefined ? null : parseOptions(`${file}: metadata options`, metadata.options) }
}

const NPY_DTYPES: Record<string, string> = { f8: 'F64', f4: 'F32', f2: 'F16', i8: 'I64', i4: 'I32', i2: 'I16', i1: 'I8', u1: 'U8', b1: 'BOOL' }

/** .npy v1–3: magic, version, header length, a Python dict literal { 'descr', 'fortran_order', 'shape' }, data. */
export function readNpy(file: string, name: string, buf: Buffer): NamedArray {
  if (buf.length < 10 || buf.readUInt8(0) !== 0x93 || buf.subarray(1, 6).toString('latin1') !== 'NUMPY') throw bad(file, 'not a .npy file (bad magic)')
  const major = buf.readUInt8(6)
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8)
  const start = major === 1 ? 10 : 12
  const header = buf.subarray(start, start + hlen).toString('latin1')
  const descr = /'descr':\s*'([<>|=])([a-z]\d)'/.exec(header)
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)
  if (!descr || !shape) throw bad(file, 'the .npy header has no descr or shape')
  if (/'fortran_order':\s*True/.test(header)) throw bad(file, 'Fortran-ordered arrays are not supported (save with np.ascontiguousarray)')
  const dtype = NPY_DTYPES[descr[2]]
  if (!dtype) throw bad(file, `${name} has numpy dtype ${descr[2]}, which is not supported`)
  const dims = shape[1].split(',').map((s) => s.trim()).filter(Boolean).map(Number)
  const count = dims.reduce((a, b) => a * b, 1)
  return { name, dtype, shape: dims, data: decode(file, name, dtype, buf.subarray(start + hlen), count, descr[1] !== '>') }
}

/** .npz: a zip of .npy members (np.savez stores them; np.savez_compressed deflates them). */
export function readNpz(file: string, buf: Buffer): TensorSet {
  const arrays = new Map<string, NamedArray>()
  let options: Record<string, unknown> | null = null
  let eocd = -1
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i--) if (buf.readUInt32LE(i) === 0x06054b50) { eocd = i; break }
  if (eocd < 0) throw bad(file, 'not a zip archive (no end-of-central-directory record)')
  const entries = buf.readUInt16LE(eocd + 10)
  let p = buf.readUInt32LE(eocd + 16)
  for (let e = 0; e < entries; e++) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw bad(file, 'corrupt zip central directory')
    const method = buf.readUInt16LE(p + 10)
    const csize = buf.readUInt32LE(p + 20)
    const nlen = buf.readUInt16LE(p + 28), xlen = buf.readUInt16LE(p + 30), clen = buf.readUInt16LE(p + 32)
    const local = buf.readUInt32LE(p + 42)
    const member = buf.subarray(p + 46, p + 46 + nlen).toString('utf8')
    p += 46 + nlen + xlen + clen
    const lstart = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28)
    const raw = buf.subarray(lstart, lstart + csize)
    const body = method === 0 ? raw : method === 8 ? inflateRawSync(raw) : null
    if (body === null) throw bad(file, `${member} uses zip method ${method}; only stored and deflated are supported`)
    if (member === 'options.json') {
      options = parseOptions(`${file}:${member}`, body.toString('utf8'))
      continue
    }
    const name = member.replace(/\.npy$/, '')
    arrays.set(name, readNpy(`${file}:${member}`, name, body))
  }
  return { arrays, metadata: {}, options }
}

/** A safetensors file, an .npz archive, one .npy file, or a directory of .npy files. */
export function readTensorSet(path: string): TensorSet {
  if (!existsSync(path)) throw new TensorFileError(`${path}: no such file or directory`)
  if (statSync(path).isDirectory()) {
    const files = readdirSync(path).filter((f) => f.endsWith('.npy')).sort()
    if (files.length === 0) throw new TensorFileError(`${path}: the directory holds no .npy files`)
    const arrays = new Map(files.map((f) => {
      const name = basename(f, '.npy')
      return [name, readNpy(join(path, f), name, readFileSync(join(path, f)))] as const
    }))
    return { arrays, metadata: {}, options: optionsBeside(path) }
  }
  const buf = readFileSync(path)
  switch (extname(path)) {
    case '.safetensors': return readSafetensors(path, buf)
    case '.npz': {
      const set = readNpz(path, buf)
      return { ...set, options: set.options ?? optionsBeside(dirname(path)) }
    }
    case '.npy': {
      const name = basename(path, '.npy')
      return { arrays: new Map([[name, readNpy(path, name, buf)]]), metadata: {}, options: optionsBeside(dirname(path)) }
    }
    default: throw new TensorFileError(`${path}: unknown file type (expected .safetensors, .npz, .npy or a directory of .npy files)`)
  }
}
