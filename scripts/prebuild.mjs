#!/usr/bin/env node
// The release step (`npm pack` / `npm publish` run it as `prepack`): puts the addon for the platform it runs
// on into prebuilds/<platform>-<arch>/, with a build-info.json saying what it holds.
//
// The build of `npm install` / `npm ci` (build/Release) is reused when it was compiled from the same sources
// with what a release needs: CUDA for all targets (sm_75–90 + PTX, static cudart) when nvcc is found, unless
// RLHF_KERNELS_CUDA=0 asks for a CPU-only prebuild. Otherwise the addon is compiled here, and a failed compile
// fails the release (a package must not ship without the binary it promises).
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { findNvcc, prebuildDir, smokeLoad, sourceHash } from './install.mjs'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const releaseDir = join(root, 'build', 'Release')
const say = (msg) => console.log(`rlhf-kernels prebuild: ${msg}`)

function readInfo() {
  try {
    return JSON.parse(readFileSync(join(releaseDir, 'build-info.json'), 'utf8'))
  } catch {
    return null
  }
}

const wantCuda = process.env.RLHF_KERNELS_CUDA !== '0' && findNvcc() !== null
/** why the existing build cannot be shipped, or '' when it can */
function unusable(info) {
  if (info === null || !info.ok || info.source !== 'build') return 'no build from source in build/Release'
  if (info.sourceHash !== sourceHash()) return 'build/Release was compiled from other sources'
  if (info.cuda !== wantCuda) return `build/Release was built ${info.cuda ? 'with' : 'without'} CUDA; a release ${wantCuda ? 'needs' : 'leaves out'} it`
  if (info.cuda && process.env.RLHF_KERNELS_CUDA_ARCH === undefined && info.cudaArchitectures !== '75;80;86;89;90 + PTX') {
    return `build/Release holds only the CUDA targets ${info.cudaArchitectures}`
  }
  return ''
}

let info = readInfo()
const why = unusable(info)
if (why) {
  say(`${why}: compiling`)
  const env = { ...process.env, RLHF_KERNELS_BUILD_FROM_SOURCE: '1', RLHF_KERNELS_STRICT_INSTALL: '1' }
  delete env.RLHF_KERNELS_SKIP_BUILD
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'install.mjs')], { cwd: root, env, stdio: 'inherit' })
  info = readInfo()
  const still = r.status === 0 ? unusable(info) : `the build failed (exit ${r.status}; see build/install.log)`
  if (still) {
    console.error(`rlhf-kernels prebuild: ${still}`)
    process.exit(1)
  }
} else say('reusing build/Release (same sources, same CUDA choice)')

const target = join(prebuildDir, 'rlhf_kernels.node')
rmSync(prebuildDir, { recursive: true, force: true })
mkdirSync(prebuildDir, { recursive: true })
copyFileSync(join(releaseDir, 'rlhf_kernels.node'), target)
// debug symbols are not shipped; a machine without strip ships the binary as built
spawnSync('strip', ['--strip-unneeded', target])
const smoke = smokeLoad(target)
if (!smoke.ok) {
  console.error(`rlhf-kernels prebuild: the prebuilt binary failed to load: ${smoke.reason}`)
  process.exit(1)
}
const builtOnGlibc = process.report?.getReport?.().header?.glibcVersionRuntime ?? null
const { date, node, platform, cuda, cudaArchitectures, nvccVersion, compiler, builder, sourceHash: hash } = info
writeFileSync(join(prebuildDir, 'build-info.json'), `${JSON.stringify({ date, node, platform, builtOnGlibc, cuda, cudaArchitectures, nvccVersion, compiler, builder, sourceHash: hash, bytes: statSync(target).size }, null, 2)}\n`)
say(`prebuilds/${platform}/rlhf_kernels.node: ${(statSync(target).size / 2 ** 20).toFixed(1)} MiB, ${cuda ? `CUDA ${nvccVersion} (${cudaArchitectures}) and ` : ''}CPU kernels`)
