/**
 * The native addon loader. Order: RLHF_KERNELS_NATIVE_PATH, then the local build (build/Release, made by the
 * install step when it compiled), then the prebuilt binary shipped in the package
 * (prebuilds/<platform>-<arch>, also found when install scripts never ran), then nothing (the `js` backend,
 * with one warning on stderr). It never throws at import, except when RLHF_KERNELS_REQUIRE names a backend
 * that could not be had: then it throws an Error listing every cause.
 */
import { constants as bufferConstants } from 'node:buffer'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { markAsUntransferable } from 'node:worker_threads'
import { registerBackend } from './backend.js'
import {
  AGGREGATIONS, GROUP_METHODS, IS_LEVELS, KL_ESTIMATORS, POLICY_VARIANTS, PPO_KL_ESTIMATORS, PREFERENCE_TYPES, REDUCTIONS, ROLLOUT_CORRECTIONS,
} from './choices.js'
import { TRUST_REGIONS } from './choices.js'
import { RlhfKernelsError } from './errors.js'
import type { Kernels } from './kernels.js'
import type { CheckedOut } from './outputs.js'
import { DeviceData, type HostArray, Tensor, installDeviceMemory } from './tensor.js'
import { onDevice } from './validate.js'
import { validatorOf } from './ops.js'

/** What the addon's info() reports. */
export interface NativeInfo {
  napiVersion: number
  threads: number
  /** the build of the CPU row kernels this CPU runs: x86-64-v4, x86-64-v3 or baseline (RLHF_KERNELS_ISA caps it) */
  isa: string
  cuda: {
    compiled: boolean
    error: number
    errorName: string
    errorString: string
    deviceCount: number
    runtimeVersion: number
    driverVersion: number
    devices: { name: string; computeCapability: string; totalMemory: number; l2CacheBytes: number }[]
  }
}

/** What the install step recorded (build/Release/build-info.json). */
export interface BuildInfo {
  [key: string]: unknown
  ok?: boolean
  cuda?: boolean
  reason?: string
}

export interface NativeStatus {
  loaded: boolean
  path: string | null
  /** why each candidate failed, in order */
  errors: string[]
  build: BuildInfo | null
  info: NativeInfo | null
}

type NativeFn = (...args: any[]) => any
type Addon = Record<string, NativeFn> & {
  info(): NativeInfo
  /** the cuda backend's entry points, in a build with CUDA */
  cuda?: Record<string, NativeFn>
}

/** What this thread holds on the GPU (all zeros before the first GPU call, or without the cuda backend). */
export interface MemoryInfo {
  /** live device tensors (made by to('cuda') or returned by ops on device tensors) */
  tensors: number
  /** their bytes, also reported to V8 as external memory */
  tensorBytes: number
  /** device bytes in use: tensors and the temporaries of calls in flight */
  deviceBytes: number
  /** device bytes kept by the caching pool for reuse (releaseCachedMemory() gives them back) */
  cachedBytes: number
  /** pinned host bytes (staging for copies), in use or cached */
  pinnedBytes: number
}

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const BUILD_HINT = 'build it with `npm run build:native` in the package (needs cmake, a C++ compiler, cmake-js and node-addon-api)'
/** where scripts/prebuild.mjs puts the binary for this platform (scripts/install.mjs looks there too) */
const PREBUILD_DIR = join(root, 'prebuilds', `${process.platform}-${process.arch}`)

function readBuildInfo(dir: string): BuildInfo | null {
  const file = join(dir, 'build-info.json')
  if (!existsSync(file)) return null
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as BuildInfo
  } catch {
    return null
  }
}

function load(): { addon: Addon | null; status: NativeStatus } {
  const status: NativeStatus = { loaded: false, path: null, errors: [], build: null, info: null }
  if (process.env.RLHF_KERNELS_BACKEND === 'js') {
    status.errors.push('RLHF_KERNELS_BACKEND=js: the native addon was not loaded')
    return { addon: null, status }
  }
  const local = join(root, 'build', 'Release', 'rlhf_kernels.node')
  const prebuild = join(PREBUILD_DIR, 'rlhf_kernels.node')
  status.build = readBuildInfo(dirname(local)) ?? readBuildInfo(PREBUILD_DIR)
  const candidates = [process.env.RLHF_KERNELS_NATIVE_PATH, local, prebuild].filter((p): p is string => !!p)
  const missing = (path: string) =>
    path === local ? `no local build at ${path}${status.build?.reason ? ` (install: ${status.build.reason})` : ''}`
      : path === prebuild ? `no prebuilt binary for ${process.platform}-${process.arch} in this package; ${BUILD_HINT}`
        : `RLHF_KERNELS_NATIVE_PATH: ${path} does not exist`
  for (const path of candidates) {
    if (!existsSync(path)) {
      status.errors.push(missing(path))
      continue
    }
    try {
      const addon = require(path) as Addon
      // native failures are made as RlhfKernelsError instances (the addon keeps the class, per thread),
      // outputs longer than a typed array can be are refused before the engine would abort on them, and the
      // buffers small results share (native/addon/env.h ResultPool) cannot be transferred away from them
      addon.setup({ errorClass: RlhfKernelsError, maxArrayLength: bufferConstants.MAX_LENGTH, markAsUntransferable })
      status.info = addon.info()
      status.loaded = true
      status.path = path
      return { addon, status }
    } catch (error) {
      status.errors.push(`${path} failed to load: ${(error as Error).message}`)
    }
  }
  return { addon: null, status }
}

/**
 * A gradient matrix result given the input's shape: a device tensor (cuda) keeps its dtype; a host array is
 * float32, or (gradDtype 'input') 16-bit bit patterns in the logits' dtype.
 */
const matrix = (data: Float32Array | Uint16Array | Tensor, shape: readonly number[], args: { gradDtype?: string }) =>
  data instanceof Tensor ? data.reshaped(shape)
    : data instanceof Uint16Array ? new Tensor(data, shape, args.gradDtype as 'bfloat16' | 'float16')
      : new Tensor(data, shape, 'float32')

/** The addon's results shaped as the public API, for the cpu and cuda backends alike. */
const shapes: Record<string, (r: any, a: any) => unknown> = {
    logProbs: (r: any) => (r.maxToken instanceof Float32Array ? { ...r, maxToken: Int32Array.from(r.maxToken) } : r),
    logProbsBackward: (r: any, a: any) => ({ gradLogits: matrix(r.gradLogits, a.shape, a) }),
    crossEntropy: (r: any, a: any) => ({
      loss: r.loss, count: r.count, lse: r.lse,
      ...(a.reduction === 'none' ? { losses: r.losses } : {}),
      ...(r.gradLogits ? { gradLogits: matrix(r.gradLogits, a.shape, a) } : {}),
    }),
    rewardLoss: (r: any, a: any) => ({
      loss: r.loss, probs: r.probs, gradScores: r.gradScores, accuracy: r.accuracy, count: r.count,
      ...(a.reduction === 'none' ? { losses: r.losses } : {}),
    }),
    policyLoss: (r: any) => r,
    klDivergence: (r: any, a: any) => ({
      loss: r.loss, perRow: r.perRow, count: r.count,
      ...(r.gradQ ? { gradQ: matrix(r.gradQ, a.shape, a) } : {}),
      ...(r.gradP ? { gradP: matrix(r.gradP, a.shape, a) } : {}),
    }),
    klPenalty: (r: any) => r,
    valueLoss: (r: any) => r,
    gae: (r: any) => r,
    whiten: (r: any) => r.out,
    groupAdvantages: (r: any) => r.out,
    ppoLoss: (r: any, a: any) => ({
      loss: r.loss, objective: -r.loss, policyLoss: r.policyLoss, kl: r.kl, valueLoss: r.valueLoss, logp: r.logp,
      gradLogits: matrix(r.gradLogits, a.shape, a), ...(r.gradValues ? { gradValues: r.gradValues } : {}), metrics: r.metrics,
    }),
    keptLogProbs: (r: any, a: any) => ({ logp: r.logp, lse: r.lse, ...(r.gradLogits ? { gradLogits: matrix(r.gradLogits, a.shape, a) } : {}) }),
    sequenceLogProbs: (r: any) => r,
    preferenceLoss: (r: any, a: any) => {
      const { losses, ...rest } = r
      return a.reduction === 'none' ? r : rest
    },
}

/**
 * The enum options of the validated arguments and their lists (src/choices.ts): the addon is passed ordinals.
 * sequenceLogProbs' reduction ('sum' | 'mean') is an ordinal of REDUCTIONS too.
 */
const ORDINALS: Record<string, readonly string[]> = {
  reduction: REDUCTIONS, estimator: KL_ESTIMATORS, klEstimator: PPO_KL_ESTIMATORS, method: GROUP_METHODS,
  variant: POLICY_VARIANTS, isLevel: IS_LEVELS, rolloutCorrection: ROLLOUT_CORRECTIONS, type: PREFERENCE_TYPES,
  trustRegion: TRUST_REGIONS,
}

/**
 * @internal Validated arguments as the addon reads them: each enum option (and the aggregation's mode) as its
 * index in its list, which the native enum follows (test/enums.test.ts); everything else as it is.
 */
const ORDINAL_LISTS = Object.entries(ORDINALS)

export function nativeArgs(args: object): object {
  const out: Record<string, unknown> = { ...args }
  for (const [key, list] of ORDINAL_LISTS) {
    if (typeof out[key] === 'string') out[key] = list.indexOf(out[key] as string)
  }
  const agg = out.agg as { mode?: unknown } | null | undefined
  if (agg && typeof agg.mode === 'string') out.agg = { ...agg, mode: AGGREGATIONS.indexOf(agg.mode as never) }
  return out
}

/** The addon's arguments of a cpu call: nativeArgs, with the plain views of the checked `out` arrays (ops.ts). */
function cpuArgs(args: { out?: CheckedOut }): object {
  const a = nativeArgs(args) as { out?: unknown }
  if (args.out !== undefined) a.out = args.out.views
  return a
}

/** The cpu backend: the addon's kernels behind the Kernels interface. */
function cpuKernels(addon: Addon): Kernels {
  const kernels: Record<string, unknown> = {}
  for (const [name, shape] of Object.entries(shapes)) {
    const sync = addon[name]
    const async = addon[`${name}Async`]
    kernels[name] = (args: object) => shape(sync(cpuArgs(args)), args)
    kernels[`${name}Async`] = (args: object) => (async(cpuArgs(args)) as Promise<unknown>).then((r) => shape(r, args))
  }
  kernels.writesOut = true
  kernels.nativeGradDtype = true
  kernels.inlineBytes = INLINE_BYTES
  return kernels as unknown as Kernels
}

/**
 * An async cpu call whose input arrays hold at most this many bytes runs on the JS thread and returns a settled
 * promise: the libuv pool's round trip (queue the job, wake a thread, post the completion back) costs tens of
 * µs on a busy machine, more than such a kernel (policyLoss on 64 tokens: about 1 µs; bench/NOTES.md "Version 5").
 */
const INLINE_BYTES = 16384

/** Validated arguments as the cuda bindings read them: device storage becomes `{ device: handle }`. */
function toCudaArgs(value: unknown): unknown {
  if (value instanceof DeviceData) return { device: value.handle }
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value) || Array.isArray(value)) return value
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) {
    if (k === 'data' && v instanceof DeviceData) out.device = v.handle  // a float input { data, dtype }
    else out[k] = toCudaArgs(v)
  }
  return out
}

/** Device outputs of the cuda bindings (`{ device, length }`) as float32 device tensors. */
function fromCuda(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value)) return value
  const v = value as Record<string, unknown>
  if ('device' in v && typeof v.length === 'number') {
    const dtype = (v.dtype ?? 'float32') as 'float32' | 'bfloat16' | 'float16'
    return new Tensor(new DeviceData(v.device, v.length, dtype), [v.length], dtype)
  }
  for (const k of Object.keys(v)) v[k] = fromCuda(v[k])
  return v
}

/** Disposes the device outputs an op made but its public result leaves out (e.g. losses of a 'mean'). */
function releaseUnused(made: Record<string, unknown>, result: unknown) {
  const kept = new Set<unknown>()
  const walk = (x: unknown) => {
    if (x instanceof Tensor) {
      if (x.device === 'cuda') kept.add((x.storage('result') as DeviceData).handle)
    } else if (x !== null && typeof x === 'object' && !ArrayBuffer.isView(x)) Object.values(x).forEach(walk)
  }
  walk(result)
  for (const v of Object.values(made)) {
    if (v instanceof Tensor && v.device === 'cuda' && !kept.has((v.storage('result') as DeviceData).handle)) v.dispose()
  }
}

/** The cuda backend: host inputs are uploaded for the call; results of device inputs stay on the GPU. */
function cudaKernels(cuda: Record<string, NativeFn>): Kernels {
  const kernels: Record<string, unknown> = {}
  for (const [name, shape] of Object.entries(shapes)) {
    const sync = cuda[name]
    const async = cuda[`${name}Async`]
    const prepare = (args: object) => ({ ...(toCudaArgs(nativeArgs(args)) as object), deviceResults: onDevice(args) })
    const finish = (raw: unknown, args: object) => {
      const made = fromCuda(raw) as Record<string, unknown>
      const result = shape(made, args)
      releaseUnused(made, result)
      return result
    }
    kernels[name] = (args: object) => finish(sync(prepare(args)), args)
    kernels[`${name}Async`] = (args: object) => (async(prepare(args)) as Promise<unknown>).then((r) => finish(r, args))
  }
  kernels.nativeGradDtype = true
  return kernels as unknown as Kernels
}

/**
 * @internal The addon's CUDA-event timing of one op (the GPU benchmark): the options are validated as the
 * op validates them, inputs prepared once, then the milliseconds of each of `iterations` launches.
 */
export function cudaTime(op: string, options: object, iterations: number): Float64Array {
  const fn = addon?.cuda?.[`${op}Time`]
  const validate = validatorOf(op)
  if (!fn || !cudaUsable || !validate) throw new RlhfKernelsError('ERR_CUDA_UNAVAILABLE', `cudaTime: the cuda backend is not available: ${cudaWhy}`)
  return fn({ ...(toCudaArgs(nativeArgs(validate(options))) as object), deviceResults: true }, iterations) as Float64Array
}

function cudaReason(status: NativeStatus): string {
  if (!status.loaded || status.info === null) return `the native addon is not loaded: ${status.errors.join('; ')}`
  const c = status.info.cuda
  if (!c.compiled) return 'the native addon was built without CUDA (no nvcc at build time)'
  if (c.error !== 0) {
    const driver = c.error === 35 ? ' (no NVIDIA driver, or one older than the CUDA runtime)' : c.error === 100 ? ' (no GPU)' : ''
    return `compiled with CUDA ${Math.floor(c.runtimeVersion / 1000)}.${(c.runtimeVersion % 1000) / 10}, but cudaGetDeviceCount failed: ${c.errorName}: ${c.errorString}${driver}; devices: ${c.deviceCount}`
  }
  if (c.deviceCount === 0) return 'compiled with CUDA, but no GPU was found'
  return ''
}

const { addon, status } = load()
export const nativeStatus: Readonly<NativeStatus> = status

if (addon !== null) registerBackend('cpu', cpuKernels(addon))
else registerBackend('cpu', null, `the native addon is not loaded: ${status.errors.join('; ')}`)
const cudaWhy = cudaReason(status)
const cudaUsable = cudaWhy === '' && addon?.cuda !== undefined
if (cudaUsable) {
  const a = addon!
  registerBackend('cuda', cudaKernels(a.cuda!))
  installDeviceMemory({
    upload: (data: HostArray) => a.cudaUpload(data),
    download: (handle: unknown, into: HostArray) => { a.cudaDownload(handle, into) },
    downloadAsync: (handle: unknown, into: HostArray) => a.cudaDownloadAsync(handle, into) as Promise<void>,
    dispose: (handle: unknown) => { a.cudaDispose(handle) },
  })
} else {
  registerBackend('cuda', null, cudaWhy || 'the native addon has no CUDA entry points')
  installDeviceMemory(null, cudaWhy)
}

/** What this thread holds on the GPU; it drains the finalisers' queue first, so freed tensors do not count. */
export function memory(): MemoryInfo {
  if (!cudaUsable) return { tensors: 0, tensorBytes: 0, deviceBytes: 0, cachedBytes: 0, pinnedBytes: 0 }
  return addon!.cudaMemory({}) as MemoryInfo
}

/** Waits for this thread's GPU work, then gives the caching pool's unused blocks back to the driver. */
export function releaseCachedMemory(): void {
  if (cudaUsable) addon!.cudaReleaseCached({})
}

/** @internal the addon's floor probe for the host benchmark: read bandwidth and exp cost on one thread, or null */
export function hostFloor(bytes: number): { readGBs: number; expNs: number; isa: string } | null {
  return addon?.hostFloor ? addon.hostFloor(bytes) : null
}

/** @internal the addon's device helpers for the GPU benchmark */
export const cudaBench = cudaUsable
  ? {
      empty: (bytes: number) => addon!.cudaEmpty(bytes),
      fillNormal: (handle: unknown, dtype: string, seed: number, scale: number) => addon!.cudaFillNormal(handle, dtype, seed, scale),
      fillInt: (handle: unknown, limit: number, seed: number) => addon!.cudaFillInt(handle, limit, seed),
      copyBandwidth: (bytes: number, iterations: number) => addon!.cudaCopyBandwidth(bytes, iterations) as number,
    }
  : null

/**
 * One stderr line per thread and kind (a second copy of the package in the same thread stays silent);
 * RLHF_KERNELS_QUIET=1 silences them.
 */
function warnOnce(kind: string, message: string) {
  const key = Symbol.for(`rlhf-kernels.warned.${kind}`)
  const g = globalThis as Record<symbol, unknown>
  if (process.env.RLHF_KERNELS_QUIET === '1' || g[key]) return
  g[key] = true
  process.stderr.write(`rlhf-kernels: ${message} (RLHF_KERNELS_QUIET=1 silences this warning)\n`)
}

/** An NVIDIA GPU this process may use: the driver lists one and CUDA_VISIBLE_DEVICES does not hide them all. */
function gpuVisible(): boolean {
  const visible = process.env.CUDA_VISIBLE_DEVICES
  if (visible !== undefined && (visible.trim() === '' || visible.trim().startsWith('-1'))) return false
  if ((status.info?.cuda.deviceCount ?? 0) > 0) return true
  try {
    return readdirSync('/proc/driver/nvidia/gpus').length > 0
  } catch {
    return existsSync('/dev/nvidia0')
  }
}

if (addon === null && process.env.RLHF_KERNELS_BACKEND !== 'js') {
  warnOnce('js', `the native addon is not loaded, so host data runs on the pure-TypeScript backend 'js' (several times slower): ${status.errors.join('; ')}`)
}
if (!cudaUsable && gpuVisible()) warnOnce('cuda', `a GPU is visible, but the cuda backend is not usable: ${cudaWhy || 'the native addon has no CUDA entry points'}`)

const required = process.env.RLHF_KERNELS_REQUIRE
if (required === 'cpu' && addon === null) {
  throw new RlhfKernelsError('ERR_BACKEND_UNAVAILABLE', `RLHF_KERNELS_REQUIRE=cpu, but the cpu backend is unavailable:\n- ${status.errors.join('\n- ')}`)
}
if (required === 'cuda' && !cudaUsable) {
  throw new RlhfKernelsError('ERR_CUDA_UNAVAILABLE', `RLHF_KERNELS_REQUIRE=cuda, but the cuda backend is unavailable:\n- ${cudaWhy}`)
}
