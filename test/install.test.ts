/**
 * The install step never fails the install: with the build skipped, or with a toolchain that cannot build,
 * it exits 0, records why in build-info.json, and the package then runs on `js`. Runs on a copy of the
 * package so this checkout's build is untouched.
 */
import { spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'

const root = new URL('..', import.meta.url).pathname
const copy = mkdtempSync(join(tmpdir(), 'rlhf-kernels-install-'))
for (const f of ['package.json', 'CMakeLists.txt', 'binding.gyp', 'scripts', 'native']) cpSync(join(root, f), join(copy, f), { recursive: true })
symlinkSync(join(root, 'node_modules'), join(copy, 'node_modules'))
afterAll(() => rmSync(copy, { recursive: true, force: true }))

function install(env: Record<string, string>) {
  const r = spawnSync(process.execPath, ['scripts/install.mjs'], { cwd: copy, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 300_000 })
  const info = JSON.parse(readFileSync(join(copy, 'build', 'Release', 'build-info.json'), 'utf8'))
  return { status: r.status, out: r.stdout + r.stderr, info }
}

describe('the install step', () => {
  it('RLHF_KERNELS_SKIP_BUILD=1: exits 0 and records the reason', () => {
    const r = install({ RLHF_KERNELS_SKIP_BUILD: '1' })
    expect(r.status).toBe(0)
    expect(r.info).toMatchObject({ ok: false, reason: 'RLHF_KERNELS_SKIP_BUILD=1' })
    expect(r.out).toMatch(/pure-TypeScript backend/)
  })

  it('a compiler that fails everything: cmake, the CPU-only retry and node-gyp fail, the install still exits 0', () => {
    const r = install({ CXX: '/bin/false', CC: '/bin/false', RLHF_KERNELS_CUDA: '0' })
    expect(r.status).toBe(0)
    expect(r.info.ok).toBe(false)
    expect(r.info.reason).toMatch(/failed|not found/)
    expect(r.out).toMatch(/native build skipped/)
  })

  it('RLHF_KERNELS_STRICT_INSTALL=1 turns a failed build into exit 1', () => {
    const r = install({ CXX: '/bin/false', CC: '/bin/false', RLHF_KERNELS_CUDA: '0', RLHF_KERNELS_STRICT_INSTALL: '1' })
    expect(r.status).toBe(1)
  })
})
