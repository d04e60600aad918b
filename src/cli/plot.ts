/** Line charts as a standalone SVG: one panel per chart, stacked, each with its own axes and legend. */

export interface Chart {
  title: string
  xlabel: string
  series: { name: string; points: [number, number][] }[]
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e']
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;')
const num = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toFixed(3))

export function lineChart(charts: Chart[], width = 720, panelHeight = 300): string {
  const m = { left: 60, right: 170, top: 36, bottom: 44 }
  const parts: string[] = []
  charts.forEach((chart, k) => {
    const y0 = k * panelHeight
    const pts = chart.series.flatMap((s) => s.points)
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]).filter(Number.isFinite)
    const [xmin, xmax] = [Math.min(...xs), Math.max(...xs)]
    let [ymin, ymax] = [Math.min(...ys), Math.max(...ys)]
    if (ymin === ymax) { ymin -= 1; ymax += 1 }
    const pad = (ymax - ymin) * 0.05
    ymin -= pad
    ymax += pad
    const w = width - m.left - m.right, h = panelHeight - m.top - m.bottom
    const sx = (x: number) => m.left + ((x - xmin) / (xmax - xmin || 1)) * w
    const sy = (y: number) => y0 + m.top + (1 - (y - ymin) / (ymax - ymin)) * h
    parts.push(`<text x="${m.left}" y="${y0 + 22}" font-size="15" font-weight="bold">${esc(chart.title)}</text>`)
    parts.push(`<rect x="${m.left}" y="${y0 + m.top}" width="${w}" height="${h}" fill="none" stroke="#888"/>`)
    for (let i = 0; i <= 4; i++) {
      const yv = ymin + ((ymax - ymin) * i) / 4
      parts.push(`<line x1="${m.left}" x2="${m.left + w}" y1="${sy(yv)}" y2="${sy(yv)}" stroke="#eee"/>`)
      parts.push(`<text x="${m.left - 6}" y="${sy(yv) + 4}" font-size="11" text-anchor="end">${num(yv)}</text>`)
      const xv = xmin + ((xmax - xmin) * i) / 4
      parts.push(`<text x="${sx(xv)}" y="${y0 + m.top + h + 16}" font-size="11" text-anchor="middle">${xmax - xmin >= 8 ? Math.round(xv) : num(xv)}</text>`)
    }
    parts.push(`<text x="${m.left + w / 2}" y="${y0 + panelHeight - 8}" font-size="12" text-anchor="middle">${esc(chart.xlabel)}</text>`)
    chart.series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length]
      const d = s.points.filter((p) => Number.isFinite(p[1])).map((p, j) => `${j ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join('')
      parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.8"/>`)
      const ly = y0 + m.top + 14 + i * 18
      parts.push(`<line x1="${m.left + w + 12}" x2="${m.left + w + 30}" y1="${ly - 4}" y2="${ly - 4}" stroke="${color}" stroke-width="2"/>`)
      parts.push(`<text x="${m.left + w + 36}" y="${ly}" font-size="12">${esc(s.name)}</text>`)
    })
  })
  const height = charts.length * panelHeight
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${parts.join('\n')}\n</svg>\n`
}
