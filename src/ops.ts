/**
 * How every public op is put together: validate the options once, pick the backend's kernels, run.
 * The async twin validates synchronously (a bad argument rejects the promise) and runs the work off the
 * caller's turn: on the native backends in the libuv pool, on `js` in a later macrotask of this thread.
 * Inputs must not be modified until the promise settles.
 */
import { kernels } from './backend.js'
import type { Kernels } from './kernels.js'

export type Op<O, R> = (options: O) => R
export type AsyncOp<O, R> = (options: O) => Promise<R>

export function defineOp<O, A, R>(
  validate: (options: O) => A,
  run: (k: Kernels, args: A) => R,
  runAsync?: (k: Kernels, args: A) => Promise<R> | undefined,
): [Op<O, R>, AsyncOp<O, R>] {
  const sync = (options: O): R => run(kernels(), validate(options))
  const async = (options: O): Promise<R> => {
    let args: A
    let k: Kernels
    let native: Promise<R> | undefined
    try {
      args = validate(options)
      k = kernels()
      native = runAsync?.(k, args)
    } catch (error) {
      return Promise.reject(error)
    }
    if (native !== undefined) return native
    return new Promise<R>((resolve, reject) => {
      setImmediate(() => {
        try {
          resolve(run(k, args))
        } catch (error) {
          reject(error)
        }
      })
    })
  }
  return [sync, async]
}
