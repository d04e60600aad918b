/** A one-line progress bar on stderr (redrawn in place on a terminal, a line every 10 % otherwise). */
export class Progress {
  private lastTenth = -1
  constructor(private label: string, private total: number, private quiet = false) {}

  update(done: number, note = '') {
    if (this.quiet) return
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1
    const width = 28
    const filled = Math.round(frac * width)
    const bar = `${this.label} [${'█'.repeat(filled)}${'·'.repeat(width - filled)}] ${String(Math.round(frac * 100)).padStart(3)}% ${note}`
    if (process.stderr.isTTY) {
      process.stderr.write(`\r${bar.padEnd(100).slice(0, 100)}${done >= this.total ? '\n' : ''}`)
    } else {
      const tenth = Math.floor(frac * 10)
      if (tenth !== this.lastTenth) {
        this.lastTenth = tenth
        process.stderr.write(`${bar}\n`)
      }
    }
  }
}
