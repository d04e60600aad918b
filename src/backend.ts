/**
 * Backend selection. Three backends compute every op: `cuda` (device tensors), `cpu` (the native addon on
 * host data) and `js` (pure TypeScript, always present; also the float64 reference). Host data runs on
 * `cpu` when the addon loaded, else on `js`. RLHF_KERNELS_BACKEND or setBackend() force one.
 */
import { RlhfKernelsError, rangeError } from './errors.js'
import type { Kernels } from './kernels.js'
import { jsKernels } from './reference/index.js'

export type BackendName = 'cuda' | 'cpu' | 'js'
export type BackendChoice = BackendName | 'auto'

export interface BackendStatus {
  name: BackendName
  available: boolean
  /** why the backend is unavailable (absent when it is available) */
  reason?: string
}

interface Registered {
  kernels: Kernels | null
  reason: string
}

const registry: Record<BackendName, Registered> = {
  js: { kernels: jsKernels, reason: '' },
  cpu: { kernels: null, reason: 'the native addon is not part of this build' },
  cuda: { kernels: null, reason: 'the native addon is not part of this build' },
}

/** Installs (or withdraws, with null) a native backend; used by the addon loader. */
export function registerBackend(name: 'cpu' | 'cuda', kernels: Kernels | null, reason = ''): void {
  registry[name] = { kernels, reason }
}

const CHOICES: readonly BackendChoice[] = ['auto', 'cuda', 'cpu', 'js']

function parseChoice(where: string, value: unknown): BackendChoice {
  if (typeof value !== 'string' || !(CHOICES as readonly string[]).includes(value)) {
    throw rangeError(where, 'backend', "one of 'auto', 'cuda', 'cpu', 'js'", String(value))
  }
  return value as BackendChoice
}

let choice: BackendChoice = 'auto'
const fromEnv = process.env.RLHF_KERNELS_BACKEND
if (fromEnv !== undefined && fromEnv !== '') choice = parseChoice('RLHF_KERNELS_BACKEND', fromEnv)

/** Forces a backend for every following call ('auto' restores the default choice). */
export function setBackend(name: BackendChoice): void {
  const next = parseChoice('setBackend', name)
  if (next !== 'auto') requireBackend(next)
  choice = next
}

/** The backend that host data runs on now. */
export function currentBackend(): BackendName {
  if (choice !== 'auto') return choice
  return registry.cpu.kernels !== null ? 'cpu' : 'js'
}

/** Every backend with its availability and, when absent, why. */
export function backends(): BackendStatus[] {
  return (['cuda', 'cpu', 'js'] as const).map((name) => {
    const r = registry[name]
    return r.kernels !== null ? { name, available: true } : { name, available: false, reason: r.reason }
  })
}

/** @internal the kernels of a named backend (an RlhfKernelsError when it is not available) */
export function requireBackend(name: BackendName): Kernels {
  const r = registry[name]
  if (r.kernels === null) {
    throw new RlhfKernelsError(
      name === 'cuda' ? 'ERR_CUDA_UNAVAILABLE' : 'ERR_BACKEND_UNAVAILABLE',
      `the ${name} backend is not available: ${r.reason}`,
    )
  }
  return r.kernels
}

/**
 * The kernels an op runs on: `cuda` for arguments that hold device tensors (whatever the host choice),
 * else the current backend.
 */
export function kernels(device = false): Kernels {
  if (device) {
    if (choice === 'cpu' || choice === 'js') {
      throw new RlhfKernelsError('ERR_DEVICE_TENSOR', `the ${choice} backend was chosen, but an input is a cuda tensor: call toHost() on it, or setBackend('auto')`)
    }
    return requireBackend('cuda')
  }
  return requireBackend(currentBackend())
}
