// The cost of the async contract on the cpu backend: an `…Async` call copies its float inputs before it
// returns (README, "Async calls and their inputs"), so a buffer changed, detached or resized while the job
// runs is never read. Per size, the medians of: the time the JS thread spends in the async call (validation
// and the copies, into blocks the addon reuses), the whole sync call (the work the job does), and a copy of
// the logits into fresh memory (`slice()`: what a copy costs without the reuse, page faults included).
// Run with `npm run build && node bench/async-copy.js`.
import * as rk from '../dist/index.js'
import { mulberry32 } from '../dist/internal.js'

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1]
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6

rk.setBackend('cpu')
const rows = []
for (const [N, V] of [[64, 32000], [256, 32000], [1024, 32000]]) {
  const u = mulberry32(N).uniform
  const z = Float32Array.from({ length: N * V }, () => (u() - 0.5) * 8)
  const logits = rk.tensor(z, [N, V])
  const targets = Int32Array.from({ length: N }, () => Math.floor(u() * V))
  const held = [], sync = [], copy = []
  for (let i = 0; i < 15; i++) {
    let t0 = process.hrtime.bigint()
    const p = rk.crossEntropyAsync({ logits, targets, grad: true })
    held.push(ms(t0))
    await p
    t0 = process.hrtime.bigint()
    rk.crossEntropy({ logits, targets, grad: true })
    sync.push(ms(t0))
    t0 = process.hrtime.bigint()
    z.slice()
    copy.push(ms(t0))
  }
  rows.push({ shape: `${N} x ${V}`, MB: (N * V * 4) / 2 ** 20, asyncHeldMs: median(held), syncMs: median(sync), freshCopyMs: median(copy) })
}
console.table(rows)
