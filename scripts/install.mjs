#!/usr/bin/env node
// The install step of rlhf-kernels: use the prebuilt binary when one matches this machine, else build the
// native addon if this machine can; never fail the install.
//
// 1. RLHF_KERNELS_SKIP_BUILD=1 → nothing is done; the package runs on its pure-TypeScript backend.
// 2. prebuilds/<platform>-<arch>/rlhf_kernels.node (made by `npm pack`, scripts/prebuild.mjs) is loaded in a
//    child process; if it loads, it is used and nothing is compiled. RLHF_KERNELS_BUILD_FROM_SOURCE=1 skips it.
// 3. Otherwise cmake-js (CMakeLists.txt) with CUDA when nvcc is found (RLHF_KERNELS_CUDA=0|1 forces it off or
//    on; RLHF_KERNELS_CUDA_ARCH picks the targets, e.g. "90"); if the CUDA build fails, once more CPU-only.
//    cmake-js and node-addon-api are optional peer dependencies: a consumer who builds from source installs them.
// 4. Without cmake, node-gyp (binding.gyp, CPU-only).
// 5. A built binary is loaded in a child process before it is trusted; one that fails is renamed *.broken.
// 6. build/Release/build-info.json records what is used, with what, and why anything was not.
// No network access. Exit code 0 on every path, whatever throws (RLHF_KERNELS_STRICT_INSTALL=1 makes a
// failed build exit 1). Nothing here may throw past main(): a file that cannot be written is noted and skipped.
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { delimiter, dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(join(root, 'package.json'))
const releaseDir = join(root, 'build', 'Release')
const addonPath = join(releaseDir, 'rlhf_kernels.node')
/** where the loader (src/native.ts) looks for a prebuilt binary; scripts/prebuild.mjs writes it */
export const prebuildDir = join(root, 'prebuilds', `${process.platform}-${process.arch}`)
const prebuildPath = join(prebuildDir, 'rlhf_kernels.node')
const logPath = join(root, 'build', 'install.log')
const env = process.env
const say = (msg) => console.log(`rlhf-kernels: ${msg}`)
/** file-system problems met on the way (unwritable or missing directories, a full disk): noted, never thrown */
const fsProblems = []

/** Runs a file-system write; a failure is noted and the install goes on. */
function tryFs(what, fn) {
  try {
    fn()
    return true
  } catch (error) {
    fsProblems.push(`${what}: ${error.code ?? error.message}`)
    return false
  }
}

const log = (text) => tryFs('install.log', () => {
  mkdirSync(dirname(logPath), { recursive: true })  // node-gyp rebuild deletes build/ on its way
  appendFileSync(logPath, text)
})

function run(cmd, args, timeoutMs = 20 * 60 * 1000) {
  log(`\n$ ${cmd} ${args.join(' ')}\n`)
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', timeout: timeoutMs, env, maxBuffer: 64 * 1024 * 1024 })
  log(`${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? `\n${r.error.message}\n` : ''}`)
  return { ok: r.status === 0 && !r.error, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error?.message ?? ''}`, error: r.error }
}

function tail(text, lines = 15) {
  return text.trim().split('\n').slice(-lines).join('\n')
}

function version(cmd, args = ['--version']) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env })
  return r.status === 0 ? r.stdout.trim().split('\n')[0] : null
}

/** nvcc from CUDACXX, PATH, CUDA_HOME / CUDA_PATH, or /usr/local/cuda/bin; null when none runs. */
export function findNvcc() {
  const candidates = [
    env.CUDACXX,
    ...(env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, 'nvcc')),
    env.CUDA_HOME && join(env.CUDA_HOME, 'bin', 'nvcc'),
    env.CUDA_PATH && join(env.CUDA_PATH, 'bin', 'nvcc'),
    '/usr/local/cuda/bin/nvcc',
  ].filter(Boolean)
  for (const path of candidates) {
    if (existsSync(path) && version(path)) return path
  }
  return null
}

/** Loads a binary in a child process: a crash there cannot take the install down. */
export function smokeLoad(path) {
  const r = spawnSync(process.execPath, ['-e', `const a = require(${JSON.stringify(path)}); console.log(JSON.stringify(a.info()))`],
    { encoding: 'utf8', timeout: 120_000 })
  if (r.status === 0) {
    try {
      return { ok: true, info: JSON.parse(r.stdout.trim().split('\n').pop()) }
    } catch {}
  }
  return { ok: false, reason: tail(`${r.stdout ?? ''}${r.stderr ?? ''}${r.error?.message ?? ''}`, 5) || `exit ${r.status} signal ${r.signal}` }
}

/** A digest of what a build compiles (native/, CMakeLists.txt, binding.gyp): a prebuild reuses a build only of the same sources. */
export function sourceHash() {
  const h = createHash('sha256')
  const files = ['CMakeLists.txt', 'binding.gyp', ...readdirSync(join(root, 'native'), { recursive: true }).map((f) => join('native', f))]
  for (const f of files.sort()) {
    const path = join(root, f)
    try {
      h.update(`${f}\0`).update(readFileSync(path)).update('\0')
    } catch (error) {
      if (error.code !== 'EISDIR') throw error
    }
  }
  return h.digest('hex')
}

/** The path of a build dependency, or null when it is not installed. */
function resolveOptional(request) {
  try {
    return require.resolve(request)
  } catch {
    return null
  }
}

const PEERS_HINT = 'building from source needs the optional peer dependencies: npm install cmake-js node-addon-api'

function cmakeBuild(cuda, nvcc) {
  const cmakeJs = resolveOptional('cmake-js/bin/cmake-js')
  if (!cmakeJs) return { ok: false, out: `cmake-js is not installed; ${PEERS_HINT}` }
  // a cache from an earlier build keeps its options (CUDA on or off): configure afresh every time
  tryFs('CMakeCache.txt', () => rmSync(join(root, 'build', 'CMakeCache.txt'), { force: true }))
  const args = [cmakeJs, 'compile', '--out', 'build', `--CDRLHF_KERNELS_CUDA=${cuda ? 'ON' : 'OFF'}`]
  if (cuda && nvcc) args.push(`--CDCMAKE_CUDA_COMPILER=${nvcc}`)
  if (cuda && env.RLHF_KERNELS_CUDA_ARCH) args.push(`--CDCMAKE_CUDA_ARCHITECTURES=${env.RLHF_KERNELS_CUDA_ARCH}`)
  return run(process.execPath, args)
}

function gypBuild() {
  const gyp = env.npm_config_node_gyp
  if (!gyp || !existsSync(gyp)) return { ok: false, out: 'node-gyp not found (it comes with npm: run this from an npm script)' }
  const args = [gyp, 'rebuild']
  if (env.npm_config_nodedir) args.push(`--nodedir=${env.npm_config_nodedir}`)
  return run(process.execPath, args)
}

/** Compiles the addon into build/Release; returns the failures met (empty when a binary was built). */
function compile(info) {
  const failures = []
  if (!resolveOptional('node-addon-api/package.json')) return [`node-addon-api is not installed; ${PEERS_HINT}`]
  const cmake = version('cmake')
  const wantCuda = env.RLHF_KERNELS_CUDA ?? 'auto'
  const nvcc = wantCuda === '0' ? null : findNvcc()
  if (wantCuda === '1' && !nvcc) say('RLHF_KERNELS_CUDA=1 but no nvcc was found (CUDACXX, PATH, CUDA_HOME, /usr/local/cuda/bin); building CPU-only')
  Object.assign(info, { cmake, compiler: version(env.CXX || 'c++'), nvcc })
  if (nvcc) info.nvccVersion = (spawnSync(nvcc, ['--version'], { encoding: 'utf8' }).stdout?.match(/release ([\d.]+)/) ?? [])[1] ?? null

  if (cmake) {
    if (nvcc) {
      say(`building the native addon with CUDA (${nvcc}); this takes a few minutes`)
      const r = cmakeBuild(true, nvcc)
      if (r.ok) {
        Object.assign(info, { builder: 'cmake-js', cudaArchitectures: env.RLHF_KERNELS_CUDA_ARCH ?? '75;80;86;89;90 + PTX' })
        return failures
      }
      failures.push(`the CUDA build failed:\n${tail(r.out)}`)
      say('the CUDA build failed; retrying CPU-only')
    } else say('building the native addon (CPU-only); this takes a minute or two')
    const r = cmakeBuild(false, null)
    if (r.ok) {
      info.builder = 'cmake-js'
      return failures
    }
    failures.push(`the CPU build with cmake failed:\n${tail(r.out)}`)
  } else {
    failures.push('cmake not found')
  }
  say('trying node-gyp (CPU-only)')
  const r = gypBuild()
  if (r.ok) {
    info.builder = 'node-gyp'
    return failures
  }
  failures.push(`node-gyp failed:\n${tail(r.out)}`)
  return failures
}

/** Uses the binary at `path` if it loads in a child process; returns why not otherwise. */
function trust(info, path, source) {
  const smoke = smokeLoad(path)
  if (!smoke.ok) return smoke.reason
  Object.assign(info, { ok: true, source, path, info: smoke.info, cuda: smoke.info?.cuda?.compiled === true })
  return null
}

/** The sources digest recorded next to the prebuilt binary (null when unreadable). */
function prebuildHash() {
  try {
    return JSON.parse(readFileSync(join(prebuildDir, 'build-info.json'), 'utf8')).sourceHash ?? null
  } catch {
    return null
  }
}

/** `npm run build:native` (--from-source) and RLHF_KERNELS_BUILD_FROM_SOURCE=1 compile even when a prebuild matches */
const fromSource = env.RLHF_KERNELS_BUILD_FROM_SOURCE === '1' || process.argv.includes('--from-source')

function main() {
  const info = { date: new Date().toISOString(), node: process.version, platform: `${process.platform}-${process.arch}`, ok: false, cuda: false }
  const finish = (reason) => {
    if (reason) info.reason = reason
    if (fsProblems.length) info.fsProblems = fsProblems
    tryFs('build-info.json', () => {
      mkdirSync(releaseDir, { recursive: true })
      writeFileSync(join(releaseDir, 'build-info.json'), `${JSON.stringify(info, null, 2)}\n`)
    })
    if (info.ok) {
      const what = info.source === 'prebuild' ? `using the prebuilt binary for ${info.platform}` : `built ${info.cuda ? 'with CUDA' : 'CPU-only'} (${info.builder})`
      say(`${what}; backends: cpu${info.cuda ? ', cuda when a GPU is present' : ''}, js`)
    } else {
      say(`no native addon: ${reason}. The package works on its pure-TypeScript backend ('js'); see build/install.log`)
    }
    if (fsProblems.length) say(`could not write: ${fsProblems.join('; ')}`)
    process.exit(info.ok || env.RLHF_KERNELS_STRICT_INSTALL !== '1' ? 0 : 1)
  }

  if (env.RLHF_KERNELS_SKIP_BUILD === '1') return finish('RLHF_KERNELS_SKIP_BUILD=1')
  tryFs('install.log', () => {
    mkdirSync(dirname(logPath), { recursive: true })
    writeFileSync(logPath, `rlhf-kernels install, ${info.date}\n`)
  })

  const failures = []
  if (fromSource) say('building from source, as asked (RLHF_KERNELS_BUILD_FROM_SOURCE=1 or --from-source)')
  else if (!existsSync(prebuildPath)) failures.push(`no prebuilt binary for ${info.platform}`)
  else if (prebuildHash() !== sourceHash()) failures.push(`the prebuilt binary for ${info.platform} was built from other sources than native/`)
  else {
    const why = trust(info, prebuildPath, 'prebuild')
    if (why === null) {
      // a binary of an earlier from-source build would be loaded before the prebuild: it goes
      tryFs('the earlier build', () => rmSync(addonPath, { force: true }))
      return finish(null)
    }
    failures.push(`the prebuilt binary for ${info.platform} failed to load: ${why}`)
    say(`the prebuilt binary failed to load; building from source`)
  }

  tryFs('the earlier build', () => rmSync(addonPath, { force: true }))
  info.sourceHash = sourceHash()
  failures.push(...compile(info))
  if (failures.length) info.failures = failures
  const built = info.builder !== undefined && existsSync(addonPath)
  if (!built) return finish(failures.map((f) => f.split('\n')[0].replace(/:$/, '')).join('; ') || 'no binary was produced')

  const why = trust(info, addonPath, 'build')
  if (why !== null) {
    tryFs('rlhf_kernels.node.broken', () => renameSync(addonPath, `${addonPath}.broken`))
    return finish(`the built addon failed to load (renamed to rlhf_kernels.node.broken): ${why}`)
  }
  finish(null)
}

/** Run as a script (not imported by scripts/prebuild.mjs); realpaths, as a package path may hold a link */
const isMain = (() => {
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
})()
if (isMain) {
  try {
    main()
  } catch (error) {
    // a bug here must not fail anyone's npm install
    console.log(`rlhf-kernels: the install step failed unexpectedly (${error?.stack ?? error}); the package works on its pure-TypeScript backend ('js')`)
    process.exit(env.RLHF_KERNELS_STRICT_INSTALL === '1' ? 1 : 0)
  }
}
