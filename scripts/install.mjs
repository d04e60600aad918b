#!/usr/bin/env node
// The install step of rlhf-kernels: build the native addon if this machine can, and never fail the install.
//
// 1. RLHF_KERNELS_SKIP_BUILD=1 → nothing is built; the package runs on its pure-TypeScript backend.
// 2. cmake-js (CMakeLists.txt) with CUDA when nvcc is found (RLHF_KERNELS_CUDA=0|1 forces it off or on;
//    RLHF_KERNELS_CUDA_ARCH picks the targets, e.g. "90"); if the CUDA build fails, once more CPU-only.
// 3. Without cmake, node-gyp (binding.gyp, CPU-only).
// 4. The result is loaded in a child process before it is trusted; a binary that fails is renamed *.broken.
// 5. build/Release/build-info.json records what was built, with what, and why anything was not.
// No network access. Exit code 0 always (RLHF_KERNELS_STRICT_INSTALL=1 makes a failed build exit 1).
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync, appendFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { delimiter, dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const releaseDir = join(root, 'build', 'Release')
const addonPath = join(releaseDir, 'rlhf_kernels.node')
const logPath = join(root, 'build', 'install.log')
const env = process.env
const say = (msg) => console.log(`rlhf-kernels: ${msg}`)

function run(cmd, args, timeoutMs = 20 * 60 * 1000) {
  appendFileSync(logPath, `\n$ ${cmd} ${args.join(' ')}\n`)
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', timeout: timeoutMs, env, maxBuffer: 64 * 1024 * 1024 })
  appendFileSync(logPath, `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? `\n${r.error.message}\n` : ''}`)
  return { ok: r.status === 0 && !r.error, out: `${r.stdout ?? ''}${r.stderr ?? ''}`, error: r.error }
}

function tail(text, lines = 15) {
  return text.trim().split('\n').slice(-lines).join('\n')
}

function version(cmd, args = ['--version']) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env })
  return r.status === 0 ? r.stdout.trim().split('\n')[0] : null
}

/** nvcc from CUDACXX, PATH, CUDA_HOME / CUDA_PATH, or /usr/local/cuda/bin; null when none runs. */
function findNvcc() {
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

/** Loads the built addon in a child process: a crash there cannot take the install down. */
function smokeLoad() {
  const r = spawnSync(process.execPath, ['-e', `const a = require(${JSON.stringify(addonPath)}); console.log(JSON.stringify(a.info()))`],
    { encoding: 'utf8', timeout: 120_000 })
  if (r.status === 0) {
    try {
      return { ok: true, info: JSON.parse(r.stdout.trim().split('\n').pop()) }
    } catch {}
  }
  return { ok: false, reason: tail(`${r.stdout}${r.stderr}${r.error?.message ?? ''}`, 5) || `exit ${r.status} signal ${r.signal}` }
}

function cmakeBuild(cuda, nvcc) {
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js')
  // a cache from an earlier build keeps its options (CUDA on or off): configure afresh every time
  rmSync(join(root, 'build', 'CMakeCache.txt'), { force: true })
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

function main() {
  const info = { date: new Date().toISOString(), node: process.version, platform: `${process.platform}-${process.arch}`, ok: false, cuda: false }
  const finish = (reason) => {
    if (reason) info.reason = reason
    mkdirSync(releaseDir, { recursive: true })
    writeFileSync(join(releaseDir, 'build-info.json'), `${JSON.stringify(info, null, 2)}\n`)
    if (info.ok) say(`built ${info.cuda ? 'with CUDA' : 'CPU-only'} (${info.builder}); backends: cpu${info.cuda ? ', cuda when a GPU is present' : ''}, js`)
    else say(`native build skipped: ${reason}. The package works on its pure-TypeScript backend ('js'); see build/install.log`)
    process.exit(info.ok || env.RLHF_KERNELS_STRICT_INSTALL !== '1' ? 0 : 1)
  }

  if (env.RLHF_KERNELS_SKIP_BUILD === '1') return finish('RLHF_KERNELS_SKIP_BUILD=1')
  mkdirSync(join(root, 'build'), { recursive: true })
  writeFileSync(logPath, `rlhf-kernels native build, ${info.date}\n`)
  if (existsSync(addonPath)) rmSync(addonPath)

  const cmake = version('cmake')
  const wantCuda = env.RLHF_KERNELS_CUDA ?? 'auto'
  const nvcc = wantCuda === '0' ? null : findNvcc()
  if (wantCuda === '1' && !nvcc) say('RLHF_KERNELS_CUDA=1 but no nvcc was found (CUDACXX, PATH, CUDA_HOME, /usr/local/cuda/bin); building CPU-only')
  Object.assign(info, { cmake, compiler: version(env.CXX || 'c++'), nvcc })
  if (nvcc) info.nvccVersion = (spawnSync(nvcc, ['--version'], { encoding: 'utf8' }).stdout.match(/release ([\d.]+)/) ?? [])[1] ?? null

  let built = false
  const failures = []
  if (cmake) {
    if (nvcc) {
      say(`building the native addon with CUDA (${nvcc}); this takes a minute or two`)
      const r = cmakeBuild(true, nvcc)
      if (r.ok) {
        built = true
        Object.assign(info, { cuda: true, builder: 'cmake-js', cudaArchitectures: env.RLHF_KERNELS_CUDA_ARCH ?? '75;80;86;89;90 + PTX' })
      } else {
        failures.push(`the CUDA build failed:\n${tail(r.out)}`)
        say('the CUDA build failed; retrying CPU-only')
      }
    }
    if (!built) {
      if (!nvcc) say('building the native addon (CPU-only)')
      const r = cmakeBuild(false, null)
      if (r.ok) {
        built = true
        Object.assign(info, { cuda: false, builder: 'cmake-js' })
      } else failures.push(`the CPU build with cmake failed:\n${tail(r.out)}`)
    }
  } else {
    failures.push('cmake not found')
  }
  if (!built) {
    say('trying node-gyp (CPU-only)')
    const r = gypBuild()
    if (r.ok) {
      built = true
      Object.assign(info, { cuda: false, builder: 'node-gyp' })
    } else failures.push(`node-gyp failed:\n${tail(r.out)}`)
  }
  if (failures.length) info.failures = failures
  if (!built || !existsSync(addonPath)) return finish(failures.map((f) => f.split('\n')[0]).join('; ') || 'no binary was produced')

  const smoke = smokeLoad()
  if (!smoke.ok) {
    renameSync(addonPath, `${addonPath}.broken`)
    return finish(`the built addon failed to load (renamed to rlhf_kernels.node.broken): ${smoke.reason}`)
  }
  info.ok = true
  info.info = smoke.info
  info.cuda = smoke.info?.cuda?.compiled === true  // what the binary says, not what was asked for
  finish(null)
}

main()
