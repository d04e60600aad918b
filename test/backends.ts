/** The backends a suite runs on: `js` always, `cpu` when the addon loaded (`cuda` joins with device tensors). */
import * as rk from '../src/index.js'

export const HOST_BACKENDS = rk.backends().filter((b) => b.available && b.name !== 'cuda').map((b) => b.name)
export const NATIVE_BACKENDS = rk.backends().filter((b) => b.available && b.name !== 'js').map((b) => b.name)

/** Runs fn with `name` forced, restoring the automatic choice afterwards. */
export function on<T>(name: rk.BackendName, fn: () => T): T {
  rk.setBackend(name)
  try {
    return fn()
  } finally {
    rk.setBackend('auto')
  }
}
