/**
 * Runs one group of hostile cases (cases.ts) in this process: `node --import ./test/hostile/register.mjs
 * test/hostile/child.ts <group> [first case]`. Before each case it writes `start <i>`, after it `done <i> <json>`, each line
 * written synchronously, so that when a case crashes the process the parent knows which case it was.
 */
import { writeSync } from 'node:fs'
import { GROUPS } from './cases.js'

export interface Outcome {
  pass: boolean
  why?: string
}

const say = (line: string) => writeSync(1, line + '\n')

async function main(group: string, from: number) {
  const cases = GROUPS[group]()
  say(`cases ${JSON.stringify(cases.map((c) => c.name))}`)
  for (let i = from; i < cases.length; i++) {
    const c = cases[i]
    say(`start ${i}`)
    let outcome: Outcome
    try {
      const value = await c.run()
      if ('check' in c.expect) {
        c.expect.check(value)
        outcome = { pass: true }
      } else {
        outcome = { pass: false, why: `expected ${c.expect.error.name}, got a value` }
      }
    } catch (error) {
      const e = error as Error & { code?: string }
      if ('check' in c.expect) {
        outcome = { pass: false, why: `threw ${e?.name}: ${e?.message}` }
      } else {
        const want = c.expect
        const problems = [
          !(error instanceof want.error) && `expected ${want.error.name}, got ${e?.constructor?.name}: ${e?.message}`,
          want.message && !want.message.test(String(e?.message)) && `message ${JSON.stringify(e?.message)} does not match ${want.message}`,
          want.code !== undefined && e?.code !== want.code && `code ${e?.code}, expected ${want.code}`,
        ].filter(Boolean)
        outcome = problems.length === 0 ? { pass: true } : { pass: false, why: problems.join('; ') }
      }
    }
    say(`done ${i} ${JSON.stringify(outcome)}`)
  }
}

await main(process.argv[2], Number(process.argv[3] ?? 0))
