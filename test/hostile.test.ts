/**
 * The hostile-input suite (test/hostile/cases.ts): every case runs in a child process, one process per group,
 * so that a crash (a segfault, an abort, a hang) fails the case that caused it instead of the runner. The
 * child writes a line before and after each case; a case with no result is named with how its process ended.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { GROUPS } from './hostile/cases.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const available = new Set(rk.backends().filter((b) => b.available).map((b) => b.name))
/** The groups this machine can run: js always; cpu and the raw addon with the addon built. */
const groups = Object.keys(GROUPS).filter((g) => g === 'js' || available.has('cpu'))

interface GroupRun {
  names: string[]
  outcomes: Map<number, { pass: boolean; why?: string }>
  last: number
  ended: string
}

function runGroup(group: string): Promise<GroupRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', './test/hostile/register.mjs', 'test/hostile/child.ts', group], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 120_000,
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('close', (code, signal) => {
      const run: GroupRun = { names: [], outcomes: new Map(), last: -1, ended: signal ? `signal ${signal}` : `exit code ${code}` }
      for (const line of out.split('\n')) {
        const [word, rest] = [line.slice(0, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)]
        if (word === 'cases') run.names = JSON.parse(rest)
        else if (word === 'start') run.last = Number(rest)
        else if (word === 'done') run.outcomes.set(Number(rest.slice(0, rest.indexOf(' '))), JSON.parse(rest.slice(rest.indexOf(' ') + 1)))
      }
      if (code !== 0 || signal) run.ended += `; stderr: ${err.slice(-2000)}`
      resolve(run)
    })
  })
}

// the groups' processes run side by side
const runs = new Map<string, Promise<GroupRun>>()
const started = (group: string) => runs.get(group) ?? runs.set(group, runGroup(group)).get(group)!

describe.each(groups)('hostile input: %s', (group) => {
  let run: GroupRun
  beforeAll(async () => {
    groups.forEach(started)
    run = await started(group)
  }, 130_000)

  it('the child process lists its cases and exits normally', () => {
    expect(run.names.length, run.ended).toBeGreaterThan(0)
    expect(run.ended).toBe('exit code 0')
  })

  // the case list as the child reports it (the same list, built there)
  it.each(GROUPS[group]().map((c, i) => [c.name, i] as const))('%s', (_, i) => {
    const outcome = run.outcomes.get(i)
    if (outcome === undefined) {
      const where = i === run.last ? 'this case crashed its process' : `the process ended at case ${run.last} (${run.names[run.last]})`
      expect.fail(`no result: ${where}: ${run.ended}`)
    }
    expect(outcome!.pass, outcome!.why).toBe(true)
  })
})
