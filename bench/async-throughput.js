// Async throughput on the cpu backend (issue 13): calls/s and elements/s with 1, 2, 4, 8, 16 and 32 calls in
// flight, against sync calls one after another, for crossEntropy 64×32000 fwd+bwd (also into one set of
// caller-provided outputs, `out`) and policyLoss on 2^16 tokens (each also with every array over a
// SharedArrayBuffer, which an async call reads in place instead of copying), with the kernels' pool at 1 and 2 threads (each thread count in a child process: the pool is sized
// when the addon loads). k in flight: k calls started, and each one that settles is replaced by a new one
// until `calls` have settled; the rate is calls / the wall time from the first start to the last settle.
// Each cell is the median of BENCH_ROUNDS rounds (default 3) of at least BENCH_SECONDS (default 0.5) each;
// beside the rate, the process CPU time per call (every thread: the JS thread's validation and copies, the
// kernels, and any time lost to threads contending for the cores), which a loaded machine inflates less
// than wall time; (Linux) the JS thread's part of it (validation, the input copies, making the output arrays,
// building results: work no number of threads shares), and the threads other than the JS thread that each
// took at least 10 % of the other threads' CPU time in a round: the threads that ran kernels (the pool's;
// before the kernels' pool took async jobs, the libuv pool's too).
//
//   npm run bench -- --async                 (or: npm run build && node bench/async-throughput.js)
//   BENCH_THREADS=1,2 BENCH_INFLIGHT=1,2,4,8,16,32 BENCH_OPS=ce,ce-out,ce-out-shared,policy,policy-shared  select what runs
//   RLHF_KERNELS_NATIVE_PATH=<addon>         time another build of the addon (e.g. an older one)
//   BENCH_PIN=1                              (Linux, taskset) run the child for t threads on the first t CPUs
//                                            only, its pool at its default size: throughput against cores
import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'

const list = (name, fallback) => (process.env[name] ?? fallback).split(',').filter(Boolean)
const THREADS = list('BENCH_THREADS', '1,2').map(Number)
const INFLIGHT = list('BENCH_INFLIGHT', '1,2,4,8,16,32').map(Number)
const OPS = list('BENCH_OPS', 'ce,ce-out,ce-out-shared,policy,policy-shared')
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 0.5)

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1]
const now = () => Number(process.hrtime.bigint()) / 1e9
const cpuNow = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6 }
// CPU clock ticks of each thread of this process (Linux; empty elsewhere)
function threadTicks() {
  const ticks = new Map()
  try {
    for (const tid of readdirSync('/proc/self/task')) {
      try {
        const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
        ticks.set(Number(tid), Number(f[11]) + Number(f[12]))  // utime, stime (fields 14 and 15)
      } catch {}
    }
  } catch {}
  return ticks
}
// Between two threadTicks(): the JS thread's CPU ms, and the other threads that each took ≥ 10 % of the
// other threads' CPU time (the threads that ran kernels)
function threadShares(before, after) {
  let js = 0, others = 0
  const deltas = []
  for (const [tid, t] of after) {
    const d = t - (before.get(tid) ?? 0)
    if (tid === process.pid) js += d
    else {
      others += d
      deltas.push(d)
    }
  }
  const tick = 1000 / 100  // ms per clock tick (USER_HZ is 100 on Linux)
  return { jsMs: after.size ? js * tick : NaN, busy: others > 0 ? deltas.filter((d) => d >= 0.1 * others).length : NaN }
}

// One thread count, in this process: the rows as JSON on the last line of stdout.
async function child() {
  const rk = await import('../dist/index.js')
  const { mulberry32 } = await import('../dist/internal.js')
  rk.setBackend('cpu')
  const u = mulberry32(13).uniform
  // a copy of `a` over a SharedArrayBuffer
  const shared = (a) => {
    const s = new a.constructor(new SharedArrayBuffer(a.byteLength))
    s.set(a)
    return s
  }
  const floats = (n, lo, hi) => Float32Array.from({ length: n }, () => lo + (hi - lo) * u())
  const ops = {
    ce: () => {
      const N = 64, V = 32000
      const args = { logits: rk.tensor(floats(N * V, -4, 4), [N, V]), targets: Int32Array.from({ length: N }, () => Math.floor(u() * V)), grad: true }
      return { op: `crossEntropy ${N}×${V} fwd+bwd`, elements: N * V, sync: () => rk.crossEntropy(args), async: () => rk.crossEntropyAsync(args), value: (r) => r.loss }
    },
    // the same into one set of caller-provided outputs (no fresh 8 MB gradient array per call)
    'ce-out': () => {
      const N = 64, V = 32000
      const out = { gradLogits: new Float32Array(N * V) }
      const args = { logits: rk.tensor(floats(N * V, -4, 4), [N, V]), targets: Int32Array.from({ length: N }, () => Math.floor(u() * V)), grad: true, out }
      return { op: `crossEntropy ${N}×${V} fwd+bwd, out`, elements: N * V, sync: () => rk.crossEntropy(args), async: () => rk.crossEntropyAsync(args), value: (r) => r.loss }
    },
    // the same with every array over a SharedArrayBuffer: an async call reads those in place (no copy)
    'ce-out-shared': () => {
      const N = 64, V = 32000
      const out = { gradLogits: shared(new Float32Array(N * V)) }
      const args = { logits: rk.tensor(shared(floats(N * V, -4, 4)), [N, V]), targets: shared(Int32Array.from({ length: N }, () => Math.floor(u() * V))), grad: true, out }
      return { op: `crossEntropy ${N}×${V} fwd+bwd, out, shared`, elements: N * V, sync: () => rk.crossEntropy(args), async: () => rk.crossEntropyAsync(args), value: (r) => r.loss }
    },
    policy: () => {
      const T = 1 << 16
      const logp = floats(T, -3, 0), shift = floats(T, -0.3, 0.3)
      const args = { logp, oldLogp: Float32Array.from(logp, (v, i) => v + shift[i]), advantages: floats(T, -1, 1), mask: Uint8Array.from({ length: T }, () => (u() < 0.9 ? 1 : 0)) }
      return { op: 'policyLoss 2^16 tokens', elements: T, sync: () => rk.policyLoss(args), async: () => rk.policyLossAsync(args), value: (r) => r.loss }
    },
    'policy-shared': () => {
      const T = 1 << 16
      const logp = floats(T, -3, 0), shift = floats(T, -0.3, 0.3)
      const args = { logp: shared(logp), oldLogp: shared(Float32Array.from(logp, (v, i) => v + shift[i])), advantages: shared(floats(T, -1, 1)), mask: shared(Uint8Array.from({ length: T }, () => (u() < 0.9 ? 1 : 0))) }
      return { op: 'policyLoss 2^16 tokens, shared', elements: T, sync: () => rk.policyLoss(args), async: () => rk.policyLossAsync(args), value: (r) => r.loss }
    },
  }
  const rows = []
  for (const key of OPS) {
    const o = ops[key]()
    const want = o.value(o.sync())
    // sync: calls one after another on this thread
    const syncRound = () => {
      let calls = 0
      const t0 = now(), c0 = cpuNow()
      while (now() - t0 < SECONDS || calls < 4) {
        o.sync()
        calls++
      }
      return { rate: calls / (now() - t0), cpuMs: ((cpuNow() - c0) * 1e3) / calls, jsMs: NaN, busy: NaN }
    }
    // k in flight, replaced as they settle
    const asyncRound = async (k) => {
      let started = 0, settled = 0, wrong = 0
      const t0 = now(), c0 = cpuNow(), k0 = threadTicks()
      await new Promise((resolve, reject) => {
        const start = () => {
          started++
          o.async().then((r) => {
            if (o.value(r) !== want) wrong++
            settled++
            if (now() - t0 < SECONDS || started < 2 * k) start()
            else if (settled === started) resolve()
          }, reject)
        }
        for (let i = 0; i < k; i++) start()
      })
      if (wrong) throw new Error(`${o.op}: ${wrong} async results differ from the sync one`)
      const shares = threadShares(k0, threadTicks())
      return { rate: settled / (now() - t0), cpuMs: ((cpuNow() - c0) * 1e3) / settled, jsMs: shares.jsMs / settled, busy: shares.busy }
    }
    syncRound()
    await asyncRound(Math.max(...INFLIGHT))  // warm-up: the copy pool's blocks for the most in flight, the threads
    const cells = [['sync', Array.from({ length: ROUNDS }, syncRound)]]
    for (const k of INFLIGHT) {
      const rounds = []
      for (let r = 0; r < ROUNDS; r++) rounds.push(await asyncRound(k))
      cells.push([`${k}`, rounds])
    }
    for (const [inFlight, rounds] of cells) {
      const rate = median(rounds.map((r) => r.rate))
      rows.push({ op: o.op, threads: rk.nativeStatus.info?.threads, inFlight, callsPerS: rate, elementsPerS: rate * o.elements, cpuMsPerCall: median(rounds.map((r) => r.cpuMs)), jsMsPerCall: median(rounds.map((r) => r.jsMs)), busyThreads: Math.max(...rounds.map((r) => r.busy)) })
    }
  }
  console.log(JSON.stringify(rows))
}

export async function asyncThroughputSuite() {
  const rows = []
  const load = [os.loadavg()[0]]
  const pin = process.env.BENCH_PIN === '1'
  for (const threads of THREADS) {
    const { RLHF_KERNELS_THREADS: _, ...env } = process.env
    const command = [process.execPath, fileURLToPath(import.meta.url), '--child']
    if (pin) command.unshift('taskset', '-c', `0-${threads - 1}`)
    const out = execFileSync(command[0], command.slice(1), {
      env: pin ? env : { ...env, RLHF_KERNELS_THREADS: String(threads) },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    rows.push(...JSON.parse(out.trim().split('\n').pop()))
    load.push(os.loadavg()[0])
  }
  const lines = [
    `| op | threads | in flight | calls/s | elements/s | CPU ms per call | JS thread ms per call | kernel threads |`,
    `|---|---|---|---|---|---|---|---|`,
    ...rows.map((r) => `| ${r.op} | ${r.threads} | ${r.inFlight} | ${r.callsPerS.toFixed(1)} | ${(r.elementsPerS / 1e6).toFixed(1)} M | ${r.cpuMsPerCall.toFixed(2)} | ${r.jsMsPerCall == null || Number.isNaN(r.jsMsPerCall) ? '' : r.jsMsPerCall.toFixed(2)} | ${r.busyThreads == null || Number.isNaN(r.busyThreads) ? '' : r.busyThreads} |`),
    '',
    `medians of ${ROUNDS} rounds of ≥ ${SECONDS} s (kernel threads: the most in a round)${pin ? '; each child on as many CPUs as threads (taskset)' : ''}; load average (1 min) ${load.map((l) => l.toFixed(1)).join(' → ')} on ${os.cpus().length} cores`,
  ]
  return { title: 'async throughput, cpu backend (issue 13)', text: lines.join('\n') }
}

if (process.argv.includes('--child')) await child()
else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await asyncThroughputSuite()
  console.log(`${r.title}\n${r.text}`)
}
