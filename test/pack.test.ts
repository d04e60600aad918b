/**
 * The package as a consumer gets it: `npm pack` (its prepack puts this checkout's build into
 * prebuilds/<platform>-<arch>, reusing the build `npm ci` made instead of compiling again), then `npm install`
 * of the tarball into a fresh project whose PATH holds only node and sh: no compiler, cmake or python.
 * The prebuilt binary gives `cpu` (and CUDA compiled in when the build had it), with the install script
 * and without it (--ignore-scripts). Then the same tarball built from source with every tool present
 * (RLHF_KERNELS_BUILD_FROM_SOURCE=1, CPU-only to keep it to a minute or two).
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bareNodePath, npmCli } from './toolchain.js'

const root = new URL('..', import.meta.url).pathname
const work = mkdtempSync(join(tmpdir(), 'rlhf-kernels-pack-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const buildInfoPath = join(root, 'build', 'Release', 'build-info.json')
const built = existsSync(buildInfoPath) ? JSON.parse(readFileSync(buildInfoPath, 'utf8')) : null
/** the prepack can reuse this checkout's build (what `npm ci` made) */
const reusable = built?.ok === true && built.source === 'build'
const bare = bareNodePath(join(work, 'bare-bin'))
let tarball = ''

function npm(cwd: string, args: string[], env: Record<string, string | undefined>, timeout = 120_000) {
  const t0 = performance.now()
  const r = spawnSync(process.execPath, [npmCli(), ...args, '--no-audit', '--no-fund', '--foreground-scripts'], { cwd, encoding: 'utf8', env, timeout })
  return { status: r.status, out: `${r.stdout}${r.stderr}`, seconds: (performance.now() - t0) / 1000 }
}

/** A fresh consumer project that allows the package's install script (npm 11's allowScripts). */
function project(name: string) {
  const dir = join(work, name)
  mkdirSync(dir)
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, private: true, type: 'module', allowScripts: { 'rlhf-kernels': true } }))
  return dir
}

/** Runs ESM code in the project with `rk` imported from the installed package. */
function use(dir: string, code: string, env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `import * as rk from 'rlhf-kernels'\n${code}`],
    { cwd: dir, encoding: 'utf8', env: { PATH: bare, HOME: process.env.HOME, ...env } })
  return { status: r.status, out: r.stdout, err: r.stderr }
}

/**
 * This process's environment without what `npm test` exports to its scripts: an inner npm given
 * npm_config_local_prefix would install into this checkout.
 */
const outerEnv = () => ({
  ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && k !== 'INIT_CWD')),
  npm_config_cache: process.env.npm_config_cache,
})

const BACKENDS = 'console.log(JSON.stringify({ backends: rk.backends(), path: rk.nativeStatus.path, cuda: rk.nativeStatus.info?.cuda.compiled ?? null }))'
const consumerEnv = () => ({ PATH: bare, HOME: process.env.HOME, npm_config_cache: process.env.npm_config_cache })

describe.runIf(reusable)('the packed package', () => {
  beforeAll(() => {
    // the prebuild holds what the checkout's build holds: CUDA when it was compiled in, else CPU-only
    const r = npm(root, ['pack', '--pack-destination', work], { ...outerEnv(), RLHF_KERNELS_CUDA: built.cuda ? '1' : '0' }, 300_000)
    expect(r.status, r.out).toBe(0)
    expect(r.out).toMatch(/reusing build\/Release/)
    tarball = join(work, readdirSync(work).find((f) => f.endsWith('.tgz'))!)
  }, 300_000)

  it('holds the prebuild, LICENSE and no source maps', () => {
    const files = spawnSync('tar', ['tzf', tarball], { encoding: 'utf8' }).stdout.split('\n')
    expect(files).toContain(`package/prebuilds/${process.platform}-${process.arch}/rlhf_kernels.node`)
    expect(files).toContain('package/LICENSE')
    expect(files).toContain('package/dist/index.js')
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([])
    // README's relative links point at files that ship
    const readme = readFileSync(join(root, 'README.md'), 'utf8')
    for (const [, link] of readme.matchAll(/\]\((?!https?:|#)([^)\s]+)\)/g)) expect(files).toContain(`package/${link.split('#')[0]}`)
  })

  it('installs with no compiler, cmake or python in under 30 s and gives cpu (and CUDA compiled in when the build has it)', () => {
    const dir = project('consumer')
    const r = npm(dir, ['install', tarball], consumerEnv())
    expect(r.status, r.out).toBe(0)
    expect(r.out).toMatch(/using the prebuilt binary/)
    expect(r.seconds).toBeLessThan(30)
    const record = JSON.parse(readFileSync(join(dir, 'node_modules', 'rlhf-kernels', 'build', 'Release', 'build-info.json'), 'utf8'))
    expect(record).toMatchObject({ ok: true, source: 'prebuild', cuda: built.cuda })
    const u = use(dir, BACKENDS)
    expect(u.status, u.err).toBe(0)
    const s = JSON.parse(u.out)
    expect(s.backends.find((b: { name: string }) => b.name === 'cpu').available).toBe(true)
    expect(s.path).toMatch(/prebuilds\/linux-x64\/rlhf_kernels\.node$/)
    expect(s.cuda).toBe(built.cuda)
    const v = spawnSync(process.execPath, [join(dir, 'node_modules', '.bin', 'rlhf-kernels'), '--version'], { encoding: 'utf8' })
    expect(v.stdout.trim()).toBe(pkg.version)
    // `benchmark` is not a dependency: the bench says how to get it
    const b = spawnSync(process.execPath, [join(dir, 'node_modules', '.bin', 'rlhf-kernels'), 'bench'], { encoding: 'utf8' })
    expect(b.status).toBe(2)
    expect(b.stderr.trim()).toBe("rlhf-kernels: bench needs the 'benchmark' package: npm install --no-save benchmark")
  })

  it('--ignore-scripts: the loader still finds the prebuild; without any binary, js runs after one warning', () => {
    const dir = project('no-scripts')
    const r = npm(dir, ['install', '--ignore-scripts', tarball], consumerEnv())
    expect(r.status, r.out).toBe(0)
    expect(JSON.parse(use(dir, BACKENDS).out).backends.find((b: { name: string }) => b.name === 'cpu').available).toBe(true)

    rmSync(join(dir, 'node_modules', 'rlhf-kernels', 'prebuilds'), { recursive: true })
    // two copies of the loader in one process (a second import URL), and ops run: one warning
    const code = `await import(import.meta.resolve('rlhf-kernels').replace(/index\\.js$/, 'native.js?again'))
      const r = rk.logProbs({ logits: rk.tensor(new Float32Array([0, Math.log(3)]), [1, 2]), targets: new Int32Array([1]) })
      console.log(rk.currentBackend(), r.logp[0])`
    const warned = use(dir, code)
    expect(warned.status, warned.err).toBe(0)
    const [backend, logp] = warned.out.trim().split(' ')
    expect(backend).toBe('js')
    expect(Number(logp)).toBeCloseTo(Math.log(0.75), 6)  // log softmax([0, log 3])[1]
    expect(warned.err.match(/rlhf-kernels: the native addon is not loaded/g)).toHaveLength(1)
    expect(warned.err).toMatch(/no prebuilt binary for linux-x64/)
    expect(use(dir, code, { RLHF_KERNELS_QUIET: '1' }).err).toBe('')
    expect(use(dir, code, { RLHF_KERNELS_BACKEND: 'js' }).err).toBe('')
  })

  it('RLHF_KERNELS_BUILD_FROM_SOURCE=1 with every tool present compiles it (CPU-only) and uses that build', () => {
    const dir = project('from-source')
    // the build tools are optional peers: a consumer who builds adds them (here from npm's cache)
    const peers = ['cmake-js', 'node-addon-api'].map((p) => `${p}@${pkg.devDependencies[p]}`)
    const r = npm(dir, ['install', '--prefer-offline', tarball, ...peers],
      { ...outerEnv(), RLHF_KERNELS_BUILD_FROM_SOURCE: '1', RLHF_KERNELS_CUDA: '0' }, 600_000)
    expect(r.status, r.out).toBe(0)
    expect(r.out).toMatch(/built CPU-only \(cmake-js\)/)
    const u = use(dir, BACKENDS)
    const s = JSON.parse(u.out)
    expect(s.path).toMatch(/build\/Release\/rlhf_kernels\.node$/)
    expect(s.backends.find((b: { name: string }) => b.name === 'cpu').available).toBe(true)
  }, 600_000)
})
