// `npm run bench`: the host benchmark suites, a table each. DESIGN §3 has the targets.
import os from 'node:os'
import { crossEntropySuite } from './cross-entropy.js'
import * as rk from '../dist/index.js'

console.log(`node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, backends: ${rk.backends().map((b) => `${b.name}${b.available ? '' : ' (absent)'}`).join(', ')}`)
for (const suite of [crossEntropySuite]) {
  const { title, rows } = await suite()
  console.log(`\n${title}`)
  console.table(rows)
}
