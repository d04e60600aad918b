/**
 * Reference value loss (DESIGN §1.6), per token:
 *   u = (V − R)²;  with clip ε_v: u = max(u, (clip(V, V_old ± ε_v) − R)²);  × ½ when `half`
 *   du/dV = 2h (V − R) where the unclipped term is the max, else 0 (the clipped V sits on a bound)
 * aggregated as in §1.9.
 */
import type { Aggregation } from '../aggregate.js'
import type { TokenLayout } from '../tokens.js'
import { type Floats, countValid, tokenLoss } from './aggregate.js'

export interface ValueKernelOptions {
  clip: number | null
  half: boolean
}

/** Loss and d/dV of one token into s[0], s[1]; returns whether the clipped term was taken. */
export function valueToken(V: number, R: number, Vold: number, o: ValueKernelOptions, s: Float64Array): boolean {
  const h = o.half ? 0.5 : 1
  const e1 = V - R
  let u = e1 * e1
  let clipped = false
  if (o.clip !== null) {
    const lo = Vold - o.clip
    const hi = Vold + o.clip
    const e2 = (V < lo ? lo : V > hi ? hi : V) - R
    if (e2 * e2 > u) {
      u = e2 * e2
      clipped = true
    }
  }
  s[0] = h * u
  s[1] = clipped ? 0 : 2 * h * e1
  return clipped
}

export function valueLossKernel(
  V: Floats, R: Floats, Vold: Floats | null, valid: Uint8Array | null, layout: TokenLayout, agg: Aggregation,
  o: ValueKernelOptions, perToken: Floats, grad: Floats,
): { loss: number; clipFraction: number } {
  let clipped = 0
  const loss = tokenLoss(layout, valid, agg, perToken, grad, (t, s) => {
    if (valueToken(V[t], R[t], Vold === null ? 0 : Vold[t], o, s)) clipped++
  })
  const n = countValid(valid, layout.tokens)
  return { loss, clipFraction: n > 0 ? clipped / n : 0 }
}
