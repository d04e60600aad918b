/**
 * The install step never fails the install: on every path (build skipped, no cmake, no compiler, no python,
 * no build tools at all, no cmake-js, an unwritable build directory, a full disk, a prebuilt binary that does
 * not load) it exits 0 and records why in build-info.json, and the package then runs on `js`. A prebuilt
 * binary that loads is used without compiling anything. Each case runs the real script on a fresh copy of
 * the package, so this checkout's build is untouched.
 */
import { spawnSync } from 'node:child_process'
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { type Tool, bareNodePath, npmNodeGyp, pathWithout } from './toolchain.js'

const root = new URL('..', import.meta.url).pathname
const work = mkdtempSync(join(tmpdir(), 'rlhf-kernels-install-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))
const builtAddon = join(root, 'build', 'Release', 'rlhf_kernels.node')
const prebuildKey = `${process.platform}-${process.arch}`
let copies = 0

/** A copy of the package as npm unpacks it; `nodeModules: false` leaves out the build tools (cmake-js, node-addon-api). */
function freshCopy({ nodeModules = true } = {}) {
  const copy = join(work, `copy${copies++}`)
  for (const f of ['package.json', 'CMakeLists.txt', 'binding.gyp', 'scripts', 'native']) cpSync(join(root, f), join(copy, f), { recursive: true })
  if (nodeModules) symlinkSync(join(root, 'node_modules'), join(copy, 'node_modules'))
  return copy
}

/** Puts a prebuilt binary in a copy: this checkout's build ('loads'), junk bytes ('junk'), or this build recorded as made from other sources ('stale'). */
function addPrebuild(copy: string, kind: 'loads' | 'junk' | 'stale') {
  const dir = join(copy, 'prebuilds', prebuildKey)
  mkdirSync(dir, { recursive: true })
  if (kind === 'junk') writeFileSync(join(dir, 'rlhf_kernels.node'), 'not an ELF file')
  else copyFileSync(builtAddon, join(dir, 'rlhf_kernels.node'))
  const hash = spawnSync(process.execPath, ['--input-type=module', '-e', "import('./scripts/install.mjs').then((m) => console.log(m.sourceHash()))"], { cwd: copy, encoding: 'utf8' }).stdout.trim()
  expect(hash).toMatch(/^[0-9a-f]{64}$/)
  writeFileSync(join(dir, 'build-info.json'), JSON.stringify({ sourceHash: kind === 'stale' ? '0'.repeat(64) : hash }))
}

/** A PATH for the case: 'bare' holds only node and sh; otherwise this machine's PATH less the tools named. */
function pathFor(without: readonly Tool[] | 'bare') {
  const dir = join(work, `path${copies++}`)
  return without === 'bare' ? bareNodePath(dir) : pathWithout(dir, without)
}

function install(copy: string, env: Record<string, string | undefined> = {}) {
  const t0 = performance.now()
  // node-gyp as npm hands it to install scripts; its `rebuild` deletes build/ before it fails
  const r = spawnSync(process.execPath, ['scripts/install.mjs'], {
    cwd: copy, encoding: 'utf8', timeout: 300_000,
    env: { ...process.env, npm_config_node_gyp: npmNodeGyp(), RLHF_KERNELS_CUDA: '0', ...env },
  })
  const seconds = (performance.now() - t0) / 1000
  const infoPath = join(copy, 'build', 'Release', 'build-info.json')
  const info = existsSync(infoPath) ? JSON.parse(readFileSync(infoPath, 'utf8')) : null
  return { status: r.status, out: r.stdout + r.stderr, info, seconds }
}

/** The backends the copy offers to a program importing it (the loader reads the copy's build and prebuilds). */
function backendsOf(copy: string) {
  const dist = join(copy, 'dist')
  if (!existsSync(dist)) cpSync(join(root, 'dist'), dist, { recursive: true })
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', "const rk = await import('./dist/index.js'); console.log(JSON.stringify(rk.backends()))"],
    { cwd: copy, encoding: 'utf8', env: { ...process.env, RLHF_KERNELS_QUIET: '1' } })
  expect(r.status, r.stderr).toBe(0)
  return Object.fromEntries((JSON.parse(r.stdout) as { name: string; available: boolean; reason?: string }[]).map((b) => [b.name, b]))
}

const failed = (r: ReturnType<typeof install>) => {
  expect(r.status).toBe(0)
  expect(r.info?.ok).toBe(false)
  expect(r.out).toMatch(/pure-TypeScript backend/)
}

describe('the install step exits 0 on every path', () => {
  it('RLHF_KERNELS_SKIP_BUILD=1: records the reason', () => {
    const r = install(freshCopy(), { RLHF_KERNELS_SKIP_BUILD: '1' })
    failed(r)
    expect(r.info.reason).toBe('RLHF_KERNELS_SKIP_BUILD=1')
  })

  it('run through a path that holds a link (pnpm stores, macOS /tmp): the script still runs', () => {
    const copy = freshCopy()
    const link = join(work, `link${copies++}`)
    symlinkSync(copy, link)
    const r = spawnSync(process.execPath, [join(link, 'scripts', 'install.mjs')], { cwd: link, encoding: 'utf8', env: { ...process.env, RLHF_KERNELS_SKIP_BUILD: '1' } })
    expect(r.status).toBe(0)
    expect(JSON.parse(readFileSync(join(copy, 'build', 'Release', 'build-info.json'), 'utf8')).reason).toBe('RLHF_KERNELS_SKIP_BUILD=1')
  })

  it('no build tool at all (PATH holds node and sh): cmake is missing, node-gyp deletes build/ and fails; the record is still written and js runs', () => {
    const copy = freshCopy()
    const r = install(copy, { PATH: pathFor('bare') })
    failed(r)
    expect(r.info.reason).toMatch(/^no prebuilt binary for .*; cmake not found; node-gyp failed$/)
    expect(existsSync(join(copy, 'build', 'install.log'))).toBe(true)
    const b = backendsOf(copy)
    expect(b.js.available).toBe(true)
    expect(b.cpu.available).toBe(false)
    expect(b.cpu.reason).toMatch(/cmake not found/)
  })

  it('no cmake and no python: node-gyp says Python is missing', () => {
    const r = install(freshCopy(), { PATH: pathFor(['cmake', 'python']) })
    failed(r)
    expect(r.info.failures.join('\n')).toMatch(/cmake not found[\s\S]*node-gyp failed:[\s\S]*Python/)
  })

  it('no make and no cmake: node-gyp fails', () => {
    const r = install(freshCopy(), { PATH: pathFor(['cmake', 'make']) })
    failed(r)
    expect(r.info.reason).toMatch(/cmake not found; node-gyp failed/)
  })

  it('a compiler that fails everything: cmake, then node-gyp fail', () => {
    const r = install(freshCopy(), { CXX: '/bin/false', CC: '/bin/false' })
    failed(r)
    expect(r.info.reason).toMatch(/the CPU build with cmake failed; node-gyp failed/)
  })

  it('no cmake-js and node-addon-api (a consumer without the optional peers): says what to install', () => {
    const copy = freshCopy({ nodeModules: false })
    const r = install(copy, { NODE_PATH: '' })
    failed(r)
    expect(r.info.reason).toMatch(/npm install cmake-js node-addon-api/)
    expect(backendsOf(copy).cpu.reason).toMatch(/npm install cmake-js node-addon-api/)
  })

  it('build/ cannot be written (a file stands there): nothing is written, the install says so and exits 0', () => {
    const copy = freshCopy()
    writeFileSync(join(copy, 'build'), '')
    // without node-gyp, whose `rebuild` would delete the file and make build/ writable again
    const r = install(copy, { PATH: pathFor('bare'), npm_config_node_gyp: '' })
    expect(r.status).toBe(0)
    expect(r.info).toBeNull()
    expect(r.out).toMatch(/could not write: install\.log: (ENOTDIR|EEXIST)/)
    expect(backendsOf(copy).js.available).toBe(true)
  })

  it('a full disk (the log and the record on /dev/full): exits 0 and says ENOSPC', () => {
    const copy = freshCopy()
    mkdirSync(join(copy, 'build', 'Release'), { recursive: true })
    symlinkSync('/dev/full', join(copy, 'build', 'install.log'))
    symlinkSync('/dev/full', join(copy, 'build', 'Release', 'build-info.json'))
    const r = install(copy, { RLHF_KERNELS_SKIP_BUILD: undefined, PATH: pathFor('bare') })
    expect(r.status).toBe(0)
    expect(r.out).toMatch(/could not write: .*ENOSPC/)
  })

  it('RLHF_KERNELS_STRICT_INSTALL=1 turns a failed build into exit 1', () => {
    const r = install(freshCopy(), { PATH: pathFor('bare'), RLHF_KERNELS_STRICT_INSTALL: '1' })
    expect(r.status).toBe(1)
  })
})

describe.runIf(existsSync(builtAddon))('a prebuilt binary', () => {
  it('that loads is used with no toolchain, in seconds, and nothing is compiled', () => {
    const copy = freshCopy()
    addPrebuild(copy, 'loads')
    const r = install(copy, { PATH: pathFor('bare') })
    expect(r.status).toBe(0)
    expect(r.info).toMatchObject({ ok: true, source: 'prebuild' })
    expect(r.seconds).toBeLessThan(30)
    expect(existsSync(join(copy, 'build', 'Release', 'rlhf_kernels.node'))).toBe(false)
    expect(backendsOf(copy).cpu.available).toBe(true)
  })

  it('that does not load is recorded, then the build from source runs (and here fails): exit 0', () => {
    const copy = freshCopy()
    addPrebuild(copy, 'junk')
    const r = install(copy, { PATH: pathFor('bare') })
    failed(r)
    expect(r.info.reason).toMatch(/the prebuilt binary for .* failed to load: .*; cmake not found/)
  })

  it('of other sources than native/ is not used', () => {
    const copy = freshCopy()
    addPrebuild(copy, 'stale')
    const r = install(copy, { PATH: pathFor('bare') })
    failed(r)
    expect(r.info.reason).toMatch(/built from other sources/)
  })

  it('RLHF_KERNELS_BUILD_FROM_SOURCE=1 skips it', () => {
    const copy = freshCopy()
    addPrebuild(copy, 'loads')
    const r = install(copy, { PATH: pathFor('bare'), RLHF_KERNELS_BUILD_FROM_SOURCE: '1' })
    failed(r)
    expect(r.out).toMatch(/building from source, as asked/)
    expect(r.info.reason).toMatch(/^cmake not found/)
  })
})
