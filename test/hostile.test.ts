/**
 * The hostile-input suite (test/hostile/cases.ts): every case runs in a child process, one process per group,
 * so that a crash (a segfault, an abort, a hang) fails the case that caused it instead of the runner. The
 * child writes a line before and after each case; when a case ends its process (or prints nothing for 30 s),
 * it fails with how the process ended, and a new process carries on from the next case.
 */
import { spawn, spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { GROUPS, OOM_ELEMENTS } from './hostile/cases.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const available = new Set(rk.backends().filter((b) => b.available).map((b) => b.name))
/**
 * The address-space limit (KiB) of the `oom` group's process: what a Node process maps at start, plus room
 * for the input (OOM_ELEMENTS floats) and half of it again, so the input fits and its copy does not.
 */
function oomLimit(): number | null {
  if (process.platform !== 'linux') return null
  const probe = spawnSync(process.execPath, ['-e', "console.log(/VmSize:\\s*(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1])"], { encoding: 'utf8' })
  const base = Number(probe.stdout.trim())
  return Number.isFinite(base) && base > 0 ? Math.round(base + (OOM_ELEMENTS * 4 * 1.5) / 1024 + 512 * 1024) : null
}
const limit = available.has('cpu') ? oomLimit() : null

/** The groups this machine can run: js always; cpu and the raw addon with the addon built; oom on Linux. */
const groups = Object.keys(GROUPS).filter((g) => g === 'js' || (g === 'oom' ? limit !== null : available.has('cpu')))

interface GroupRun {
  names: string[]
  outcomes: Map<number, { pass: boolean; why?: string }>
  /** how each process that ended abnormally ended, by the case it was running */
  crashes: Map<number, string>
  ended: string[]
}

/** A case that prints nothing for this long is taken to hang: its process is killed. */
const HANG_MS = 30_000
/** Before its first line a child loads the TypeScript sources through the test hooks, which takes 15–30 s on
 * two cores under load: the first line gets this long instead. */
const START_MS = 120_000

/** One child process running the group's cases from `from` on; resolves with how it ended. */
function runChild(group: string, from: number, run: GroupRun): Promise<{ last: number; ended: string; normal: boolean }> {
  return new Promise((resolve) => {
    const argv = [process.execPath, '--expose-gc', '--import', './test/hostile/register.mjs', 'test/hostile/child.ts', group, String(from)]
    // the oom group's process starts under `ulimit -v` (the shell applies it, then becomes node)
    const [cmd, ...args] = group === 'oom' ? ['/bin/sh', '-c', `ulimit -v ${limit} && exec "$0" "$@"`, ...argv] : argv
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    let last = -1, pending = '', err = '', hung = false, silence = START_MS
    let timer = setTimeout(() => { hung = true; child.kill('SIGKILL') }, START_MS)
    child.stdout.on('data', (d) => {
      clearTimeout(timer)
      silence = HANG_MS
      timer = setTimeout(() => { hung = true; child.kill('SIGKILL') }, HANG_MS)
      const lines = (pending + d).split('\n')
      pending = lines.pop()!
      for (const line of lines) {
        const [word, rest] = [line.slice(0, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)]
        if (word === 'cases') run.names = JSON.parse(rest)
        else if (word === 'start') last = Number(rest)
        else if (word === 'done') run.outcomes.set(Number(rest.slice(0, rest.indexOf(' '))), JSON.parse(rest.slice(rest.indexOf(' ') + 1)))
      }
    })
    child.stderr.on('data', (d) => (err = (err + d).slice(-2000)))
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const how = hung ? `no output for ${silence / 1000} s (a hang)` : signal ? `signal ${signal}` : `exit code ${code}`
      resolve({ last, ended: `${how}${code === 0 ? '' : `; stderr: ${err}`}`, normal: code === 0 && !hung })
    })
  })
}

/** Runs a group; after a process dies in a case, a new one carries on from the next case. */
async function runGroup(group: string): Promise<GroupRun> {
  const run: GroupRun = { names: [], outcomes: new Map(), crashes: new Map(), ended: [] }
  for (let from = 0; ;) {
    const { last, ended, normal } = await runChild(group, from, run)
    run.ended.push(ended)
    if (normal || last < from || run.outcomes.has(last)) return run
    run.crashes.set(last, ended)
    from = last + 1
  }
}

// the groups' processes run side by side
const runs = new Map<string, Promise<GroupRun>>()
const started = (group: string) => runs.get(group) ?? runs.set(group, runGroup(group)).get(group)!

describe.each(groups)('hostile input: %s', (group) => {
  let run: GroupRun
  beforeAll(async () => {
    groups.forEach(started)
    run = await started(group)
  }, 300_000)

  it('the child processes list the cases and finish them', () => {
    expect(run.names.length, run.ended.join(' | ')).toBeGreaterThan(0)
    expect(run.outcomes.size + run.crashes.size, run.ended.join(' | ')).toBe(run.names.length)
  })

  // the case list as the child reports it (the same list, built there)
  it.each(GROUPS[group]().map((c, i) => [c.name, i] as const))('%s', (_, i) => {
    const crash = run.crashes.get(i)
    if (crash !== undefined) expect.fail(`this case ended its process: ${crash}`)
    const outcome = run.outcomes.get(i)
    if (outcome === undefined) expect.fail(`no result: ${run.ended.join(' | ')}`)
    expect(outcome!.pass, outcome!.why).toBe(true)
  })
})
