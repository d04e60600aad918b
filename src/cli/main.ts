#!/usr/bin/env node
/**
 * The `rlhf-kernels` command: demo (an end-to-end RLHF run), parity FILE (ops on saved tensors vs the
 * float64 reference and the file's expected values), bench, check --gpu (the GPU proof), info. Bad use prints one line on stderr and
 * exits 2; a parity failure exits 1.
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import * as rk from '../index.js'
import { DEMO_DEFAULTS, runDemo } from './demo.js'
import { preferenceDemoCommand } from './demo-preference.js'
import { EXPECTED_TOLERANCE } from '../internal.js'
import { runParity } from './parity.js'
import { formatTable } from './table.js'
import { TensorFileError } from './tensorfile.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

const USAGE = `usage: rlhf-kernels <command> [options]

commands:
  demo              train a reward model from preferences, then a policy with PPO against it
      --seed N          random seed (default ${DEMO_DEFAULTS.seed})
      --steps N         PPO iterations (default ${DEMO_DEFAULTS.steps})
      --rm-steps N      reward-model optimiser steps (default ${DEMO_DEFAULTS.rmSteps})
      --soft            train the reward model on the humans' choice distributions, not their choices
      --preset NAME     PPO with a trainer's defaults: a GAE preset (verl-ppo, trl-ppo, openrlhf-ppo) keeps
                        GAE and the value head; a group preset (verl-grpo, dapo, dr-grpo, ...) samples groups
                        and uses groupAdvantages, without a value head
      --out DIR         where curves.json and curves.svg go (default ${DEMO_DEFAULTS.out})
      --quiet           no progress bars
      --preference      train the policy on the same comparisons with preferenceLoss (no reward model), and
                        plot it beside reward model + PPO (default --out rlhf-demo-preference)
  parity FILE       run the ops FILE's tensors describe on every backend; compare with the float64
                    reference and with the expected values in FILE (.safetensors, .npz, .npy, or a
                    directory of .npy files)
      --atol X --rtol Y tolerance against the file's expected values (default ${EXPECTED_TOLERANCE.atol}, ${EXPECTED_TOLERANCE.rtol})
      --preset NAME     apply a preset (${rk.PRESETS.join(', ')}) to the file's ops that take it
                    options: every option of an op, by its name (camelCase or snake_case), as an array in
                    FILE, a metadata entry, or in options.json (inside the .npz, in the .npy directory, or
                    beside the file; safetensors: the metadata entry 'options'); { "policyLoss": {...} }
                    holds one op's own
  bench             run the benchmark suites
      --gpu             also the GPU suite (N = 8192, V = 32000 and 128256; needs the cuda backend)
  check --gpu       the GPU proof: every op and kernel path on cuda against cpu (outputs poisoned first),
                    determinism and batch invariance, bad device indices, async, workers, memory,
                    out of memory, then the GPU benchmark; a verdict per section and a summary table;
                    exit 1 when any section fails or the cuda backend is not usable
      --log FILE        the full log (default: $OUT/check-gpu.log when OUT is a folder, else the temp folder)
      --seed N          seed of the random inputs (default: from the clock, printed)
  info              backends, build information and GPUs
  --version         the package's version

options for every command:
  --backend js|cpu|cuda   run the ops on this backend (default: the fastest available)
  --help`

class UsageError extends Error {}

interface Parsed {
  command: string
  positional: string[]
  flags: Map<string, string | true>
}

const FLAGS: Record<string, { value: boolean; commands: string[] }> = {
  backend: { value: true, commands: ['demo', 'parity', 'bench', 'info'] },
  seed: { value: true, commands: ['demo', 'check'] },
  steps: { value: true, commands: ['demo'] },
  'rm-steps': { value: true, commands: ['demo'] },
  soft: { value: false, commands: ['demo'] },
  out: { value: true, commands: ['demo'] },
  quiet: { value: false, commands: ['demo'] },
  preference: { value: false, commands: ['demo'] },
  gpu: { value: false, commands: ['bench', 'check'] },
  log: { value: true, commands: ['check'] },
  atol: { value: true, commands: ['parity'] },
  preset: { value: true, commands: ['parity', 'demo'] },
  rtol: { value: true, commands: ['parity'] },
  help: { value: false, commands: ['demo', 'parity', 'bench', 'check', 'info'] },
}

function parse(argv: string[]): Parsed {
  const [command, ...rest] = argv
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') return { command: 'help', positional: [], flags: new Map() }
  if (command === '--version' || command === '-v' || command === 'version') return { command: 'version', positional: [], flags: new Map() }
  if (!['demo', 'parity', 'bench', 'check', 'info'].includes(command)) throw new UsageError(`unknown command '${command}' (commands: demo, parity, bench, check, info; see --help)`)
  const flags = new Map<string, string | true>()
  const positional: string[] = []
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]
    if (!a.startsWith('--')) {
      positional.push(a)
      continue
    }
    const [name, inline] = a.slice(2).split(/=(.*)/s, 2)
    const spec = FLAGS[name]
    if (!spec || !spec.commands.includes(command)) throw new UsageError(`unknown option --${name} for '${command}' (see --help)`)
    if (!spec.value) flags.set(name, true)
    else {
      const v = inline ?? rest[++i]
      if (v === undefined || v.startsWith('--')) throw new UsageError(`--${name} needs a value`)
      flags.set(name, v)
    }
  }
  return { command, positional, flags }
}

function intFlag(p: Parsed, name: string, fallback: number, min: number): number {
  const v = p.flags.get(name)
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer ≥ ${min}, got '${v}'`)
  return n
}

function numFlag(p: Parsed, name: string, fallback: number): number {
  const v = p.flags.get(name)
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a number ≥ 0, got '${v}'`)
  return n
}

/** --preset NAME, checked against the list of presets. */
function presetFlag(p: Parsed): rk.PresetName | undefined {
  const v = p.flags.get('preset') as string | undefined
  if (v !== undefined && !(rk.PRESETS as readonly string[]).includes(v)) throw new UsageError(`--preset must be one of ${rk.PRESETS.join(', ')}, got '${v}'`)
  return v as rk.PresetName | undefined
}

function demo(p: Parsed) {
  if (p.positional.length) throw new UsageError(`demo takes no arguments, got '${p.positional[0]}'`)
  const out = (p.flags.get('out') as string | undefined) ?? (DEMO_DEFAULTS.out as string)
  if (p.flags.has('preference')) {
    return preferenceDemoCommand({
      seed: intFlag(p, 'seed', DEMO_DEFAULTS.seed, 0), steps: intFlag(p, 'steps', DEMO_DEFAULTS.steps, 1),
      rmSteps: intFlag(p, 'rm-steps', DEMO_DEFAULTS.rmSteps, 1), quiet: p.flags.has('quiet'), out,
    })
  }
  const s = runDemo({
    seed: intFlag(p, 'seed', DEMO_DEFAULTS.seed, 0),
    steps: intFlag(p, 'steps', DEMO_DEFAULTS.steps, 1),
    rmSteps: intFlag(p, 'rm-steps', DEMO_DEFAULTS.rmSteps, 1),
    soft: p.flags.has('soft'),
    quiet: p.flags.has('quiet'),
    preset: presetFlag(p),
    out,
  })
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`
  console.log(`\nRLHF demo on the ${s.backend} backend${p.flags.has('preset') ? ` with preset ${p.flags.get('preset')}` : ''}, ${s.seconds.toFixed(1)} s`)
  console.log(formatTable(['', 'value'], [
    ['reward model: held-out pairwise accuracy vs the hidden truth', pct(s.rmHeldOutAccuracy)],
    ['reward model: held-out agreement with the human choice', pct(s.rmHumanAccuracy)],
    ['true (hidden) reward before PPO', s.trueRewardBefore.toFixed(3)],
    ['true (hidden) reward after PPO', s.trueRewardAfter.toFixed(3)],
    ['final KL to the reference policy', s.finalKl.toFixed(4)],
    ['final clip fraction', s.finalClipFraction.toFixed(3)],
  ]))
  console.log(`curves: ${join(out, 'curves.svg')}, ${join(out, 'curves.json')}`)
}

function parity(p: Parsed): number {
  if (p.positional.length !== 1) throw new UsageError(`parity needs exactly one FILE, got ${p.positional.length}`)
  const tol = { atol: numFlag(p, 'atol', EXPECTED_TOLERANCE.atol), rtol: numFlag(p, 'rtol', EXPECTED_TOLERANCE.rtol) }
  const { rows, pass, notes } = runParity(p.positional[0], tol, presetFlag(p))
  for (const note of notes) console.log(note)
  console.log(formatTable(
    ['op', 'output', 'backend', 'vs float64 reference (max abs / rel)', 'vs expected in file (max abs / rel)', 'result'],
    rows.map((r) => [r.op, r.output, r.backend, r.vsReference, r.vsExpected, r.pass ? 'pass' : 'FAIL']),
  ))
  console.log(pass ? `\nall ${rows.length} checks passed` : `\n${rows.filter((r) => !r.pass).length} of ${rows.length} checks FAILED`)
  return pass ? 0 : 1
}

/** The version in the package's package.json. */
function packageVersion(): string {
  return JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version
}

function info() {
  console.log(`rlhf-kernels ${packageVersion()}, node ${process.version}, ${process.platform}-${process.arch}`)
  console.log(`\nbackends (host data runs on: ${rk.currentBackend()})`)
  console.log(formatTable(['backend', 'available', 'why not'], rk.backends().map((b) => [b.name, b.available ? 'yes' : 'no', b.reason ?? ''])))
  const s = rk.nativeStatus
  console.log(`\nnative addon: ${s.loaded ? s.path : 'not loaded'}`)
  for (const e of s.errors) console.log(`  ${e}`)
  if (s.build) {
    const { info: _, failures, ...build } = s.build as Record<string, unknown>
    console.log(`build: ${JSON.stringify(build)}`)
    if (Array.isArray(failures)) for (const f of failures) console.log(`  ${String(f).split('\n')[0]}`)
  }
  if (s.info) {
    const c = s.info.cuda
    console.log(`cpu threads: ${s.info.threads}, row kernels: ${s.info.isa}`)
    console.log(`CUDA: ${c.compiled ? `compiled in (runtime ${c.runtimeVersion}, driver ${c.driverVersion}), cudaGetDeviceCount: ${c.errorName || 'cudaSuccess'}` : 'not compiled in'}`)
    console.log(`GPUs: ${c.devices.length ? c.devices.map((d) => `${d.name} (sm ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB)`).join(', ') : 'none'}`)
  }
  const m = rk.memory()
  console.log(`GPU memory of this process: ${m.tensors} tensors, ${m.tensorBytes} B in tensors, ${m.deviceBytes} B in use, ${m.cachedBytes} B cached, ${m.pinnedBytes} B pinned`)
}

async function bench(gpu: boolean) {
  const suite = join(root, 'bench', 'cross-entropy.js')
  const { crossEntropySuite } = await import(pathToFileURL(suite).href).catch((error: NodeJS.ErrnoException) => {
    // `benchmark` is a devDependency: an installed package has it only when the user adds it
    if (error.code === 'ERR_MODULE_NOT_FOUND' && /'benchmark'/.test(error.message)) {
      throw new UsageError("bench needs the 'benchmark' package: npm install --no-save benchmark")
    }
    throw error
  })
  const { title, rows } = await crossEntropySuite()
  console.log(title)
  console.log(formatTable(['name', 'ms', '±%', 'GB/s', 'check'], rows.map((r: Record<string, unknown>) =>
    [String(r.name), String(r.ms ?? ''), String(r['±%'] ?? ''), String(r['GB/s'] ?? ''), String(r.check ?? r.note ?? '')])))
  if (!gpu) return
  const { gpuSuite } = await import(pathToFileURL(join(root, 'bench', 'gpu.js')).href)
  const result = await gpuSuite()
  if (result.skipped) {
    console.log(`\n${result.skipped}`)
    return
  }
  console.log(`\n${result.title}`)
  // a row that failed has an error in place of its figures: the columns come from one that did not
  const columns = [...new Set(result.rows.flatMap((r: Record<string, unknown>) => Object.keys(r)))] as string[]
  console.log(formatTable(columns, result.rows.map((r: Record<string, unknown>) => columns.map((c) => String(r[c] ?? '')))))
}

async function check(p: Parsed): Promise<number> {
  if (!p.flags.has('gpu')) throw new UsageError('check needs --gpu (the GPU proof is the only check so far)')
  if (p.positional.length) throw new UsageError(`check takes no arguments, got '${p.positional[0]}'`)
  const { checkGpu } = await import('./check-gpu.js')
  const log = p.flags.get('log')
  const { ok } = await checkGpu({ log: typeof log === 'string' ? log : undefined, seed: p.flags.has('seed') ? intFlag(p, 'seed', 0, 0) : undefined })
  return ok ? 0 : 1
}

async function main(argv: string[]): Promise<number> {
  const p = parse(argv)
  if (p.command === 'version') {
    console.log(packageVersion())
    return 0
  }
  if (p.command === 'help' || p.flags.has('help')) {
    console.log(USAGE)
    return 0
  }
  const backend = p.flags.get('backend')
  if (backend !== undefined) {
    if (!['js', 'cpu', 'cuda'].includes(backend as string)) throw new UsageError(`--backend must be js, cpu or cuda, got '${backend}'`)
    const status = rk.backends().find((b) => b.name === backend)!
    if (!status.available) throw new UsageError(`the ${backend} backend is not available: ${status.reason}`)
    rk.setBackend(backend as rk.BackendName)
  }
  switch (p.command) {
    case 'demo': demo(p); return 0
    case 'parity': return parity(p)
    case 'bench': await bench(p.flags.has('gpu')); return 0
    case 'check': return check(p)
    default: info(); return 0
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code },
  (error: unknown) => {
    // bad use, bad files and bad tensors: one line, exit 2; anything else is a bug and keeps its stack
    if (error instanceof UsageError || error instanceof TensorFileError || error instanceof TypeError || error instanceof RangeError) {
      process.stderr.write(`rlhf-kernels: ${(error as Error).message.split('\n')[0]}\n`)
      process.exitCode = 2
    } else {
      throw error
    }
  },
)
