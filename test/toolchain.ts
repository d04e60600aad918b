/**
 * PATHs with parts of the build toolchain missing, for the install tests: a directory of links to the
 * programs of this machine's PATH, less the ones a test takes away.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, realpathSync, symlinkSync } from 'node:fs'
import { delimiter, join } from 'node:path'

/** What each build tool is called; a test removes tools by these names. */
export const TOOLS = {
  cmake: /^cmake$/,
  compiler: /^(c\+\+|cc|g\+\+|gcc|clang\+?\+?)(-[\d.]+)?$|^x86_64-linux-gnu-(g\+\+|gcc)(-[\d.]+)?$/,
  python: /^python[\d.]*$/,
  make: /^g?make$/,
} as const

export type Tool = keyof typeof TOOLS

/** A PATH (one directory) with every program of `PATH` except the tools named in `without`. */
export function pathWithout(dir: string, without: readonly Tool[]): string {
  mkdirSync(dir, { recursive: true })
  for (const source of (process.env.PATH ?? '').split(delimiter)) {
    if (!source || !existsSync(source)) continue
    for (const name of readdirSync(source)) {
      if (without.some((t) => TOOLS[t].test(name)) || existsSync(join(dir, name))) continue
      symlinkSync(join(source, name), join(dir, name))
    }
  }
  return dir
}

/** A PATH (one directory) holding only node and sh: what a slim image without a toolchain has. */
export function bareNodePath(dir: string): string {
  mkdirSync(dir, { recursive: true })
  symlinkSync(process.execPath, join(dir, 'node'))
  symlinkSync('/bin/sh', join(dir, 'sh'))
  return dir
}

/** npm's CLI script, run as `node npm-cli.js` so that PATH need not hold npm. */
export function npmCli(): string {
  const fromEnv = process.env.npm_execpath
  if (fromEnv && /npm-cli\.js$/.test(fromEnv)) return fromEnv
  const which = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim()
  return realpathSync(which)
}

/** node-gyp as npm ships it (npm passes it to install scripts as npm_config_node_gyp). */
export function npmNodeGyp(): string {
  return join(npmCli(), '..', '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')
}
