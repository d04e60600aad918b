/** The backends a suite runs on: `js` always, `cpu` when the addon loaded (`cuda` joins with device tensors). */
import { afterAll, beforeAll } from 'vitest'
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

/** Called in a describe: its tests run on `name`, with the automatic choice restored after them. */
export function useBackend(name: rk.BackendName) {
  beforeAll(() => rk.setBackend(name))
  afterAll(() => rk.setBackend('auto'))
}
