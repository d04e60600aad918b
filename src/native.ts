/**
 * The native addon loader. Order: RLHF_KERNELS_NATIVE_PATH, then the local build (build/Release), then
 * nothing (the `js` backend). It never throws at import, except when RLHF_KERNELS_REQUIRE names a backend
 * that could not be had: then it throws an Error listing every cause.
 */
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { registerBackend } from './backend.js'
import { RlhfKernelsError } from './errors.js'
import type { Kernels } from './kernels.js'
import { Tensor } from './tensor.js'

/** What the addon's info() reports. */
export interface NativeInfo {
  napiVersion: number
  threads: number
  cuda: {
    compiled: boolean
    error: number
    errorName: string
    errorString: string
    deviceCount: number
    runtimeVersion: number
    driverVersion: number
    devices: { name: string; computeCapability: string; totalMemory: number }[]
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

type Addon = Record<string, (args: object) => any> & { info(): NativeInfo }

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const BUILD_HINT = 'build it with `npm run build:native` in the package (needs cmake and a C++ compiler), or reinstall with scripts allowed'

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
  status.build = readBuildInfo(dirname(local))
  const candidates = [process.env.RLHF_KERNELS_NATIVE_PATH, local].filter((p): p is string => !!p)
  for (const path of candidates) {
    if (!existsSync(path)) {
      status.errors.push(path === local
        ? `no native build at ${path}${status.build?.reason ? ` (install: ${status.build.reason})` : ''}; ${BUILD_HINT}`
        : `RLHF_KERNELS_NATIVE_PATH: ${path} does not exist`)
      continue
    }
    try {
      const addon = require(path) as Addon
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

const matrix = (data: Float32Array, shape: readonly number[]) => new Tensor(data, shape, 'float32')

/** The cpu backend: the addon's kernels behind the Kernels interface, results shaped as the public API. */
function cpuKernels(addon: Addon): Kernels {
  const shapes = {
    logProbs: (r: any) => r,
    logProbsBackward: (r: any, a: any) => ({ gradLogits: matrix(r.gradLogits, a.shape) }),
    crossEntropy: (r: any, a: any) => ({
      loss: r.loss, count: r.count, lse: r.lse,
      ...(a.reduction === 'none' ? { losses: r.losses } : {}),
      ...(r.gradLogits ? { gradLogits: matrix(r.gradLogits, a.shape) } : {}),
    }),
    rewardLoss: (r: any, a: any) => ({
      loss: r.loss, probs: r.probs, gradScores: r.gradScores, accuracy: r.accuracy, count: r.count,
      ...(a.reduction === 'none' ? { losses: r.losses } : {}),
    }),
    policyLoss: (r: any) => r,
    klDivergence: (r: any, a: any) => ({
      loss: r.loss, perRow: r.perRow, count: r.count,
      ...(r.gradQ ? { gradQ: matrix(r.gradQ, a.shape) } : {}),
      ...(r.gradP ? { gradP: matrix(r.gradP, a.shape) } : {}),
    }),
    klPenalty: (r: any) => r,
    valueLoss: (r: any) => r,
    gae: (r: any) => r,
    whiten: (r: any) => r.out,
    groupAdvantages: (r: any) => r.out,
    ppoLoss: (r: any, a: any) => ({
      loss: r.loss, objective: -r.loss, policyLoss: r.policyLoss, kl: r.kl, valueLoss: r.valueLoss, logp: r.logp,
      gradLogits: matrix(r.gradLogits, a.shape), ...(r.gradValues ? { gradValues: r.gradValues } : {}), metrics: r.metrics,
    }),
  }
  const kernels: Record<string, unknown> = {}
  for (const [name, shape] of Object.entries(shapes)) {
    const sync = addon[name]
    const async = addon[`${name}Async`]
    kernels[name] = (args: object) => shape(sync(args), args)
    kernels[`${name}Async`] = (args: object) => (async(args) as Promise<unknown>).then((r) => shape(r, args))
  }
  return kernels as unknown as Kernels
}

function cudaReason(status: NativeStatus): string {
  if (!status.loaded || status.info === null) return `the native addon is not loaded: ${status.errors.join('; ')}`
  const c = status.info.cuda
  if (!c.compiled) return 'the native addon was built without CUDA (no nvcc at build time)'
  if (c.error !== 0) {
    const driver = c.error === 35 ? ' (no NVIDIA driver, or one older than the CUDA runtime)' : c.error === 100 ? ' (no GPU)' : ''
    return `compiled with CUDA ${Math.floor(c.runtimeVersion / 1000)}.${(c.runtimeVersion % 1000) / 10}, but cudaGetDeviceCount failed: ${c.errorName}: ${c.errorString}${driver}; devices: ${c.deviceCount}`
  }
  return `${c.deviceCount} GPU(s) found (${c.devices.map((d) => d.name).join(', ')}), but device tensors are not connected to the CUDA kernels yet (bench/cuda/*.cu checks the kernels directly)`
}

const { addon, status } = load()
export const nativeStatus: Readonly<NativeStatus> = status

if (addon !== null) registerBackend('cpu', cpuKernels(addon))
else registerBackend('cpu', null, `the native addon is not loaded: ${status.errors.join('; ')}`)
const cudaWhy = cudaReason(status)
registerBackend('cuda', null, cudaWhy)

if (status.info !== null && status.info.cuda.compiled && status.info.cuda.deviceCount > 0) {
  process.emitWarning(`rlhf-kernels: a GPU is present but the cuda backend is unusable: ${cudaWhy}`, { code: 'RLHF_KERNELS_FALLBACK' })
}

const required = process.env.RLHF_KERNELS_REQUIRE
if (required === 'cpu' && addon === null) {
  throw new RlhfKernelsError('ERR_BACKEND_UNAVAILABLE', `RLHF_KERNELS_REQUIRE=cpu, but the cpu backend is unavailable:\n- ${status.errors.join('\n- ')}`)
}
if (required === 'cuda') {
  throw new RlhfKernelsError('ERR_CUDA_UNAVAILABLE', `RLHF_KERNELS_REQUIRE=cuda, but the cuda backend is unavailable:\n- ${cudaWhy}`)
}
