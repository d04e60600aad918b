/**
 * mulberry32: the small seeded generator of the demo, the benchmarks and the tests, so every run can be
 * replayed from its seed. Not for cryptography.
 */
export function mulberry32(seed: number) {
  let a = seed >>> 0
  /** uniform in [0, 1) */
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = Math.imul(a ^ (a >>> 15), a | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  /** standard normal (Box–Muller) */
  const normal = () => Math.sqrt(-2 * Math.log(Math.max(uniform(), 1e-300))) * Math.cos(2 * Math.PI * uniform())
  return { uniform, normal }
}

/** mulberry32 with the array helpers the tests, the benchmarks and the GPU check build their inputs with. */
export function rng(seed: number) {
  const { uniform, normal } = mulberry32(seed)
  return {
    uniform,
    normal,
    int: (n: number) => Math.floor(uniform() * n),
    f64: (n: number, scale = 1) => Float64Array.from({ length: n }, () => normal() * scale),
    f32: (n: number, scale = 1) => Float32Array.from({ length: n }, () => normal() * scale),
    ints: (n: number, hi: number) => Int32Array.from({ length: n }, () => Math.floor(uniform() * hi)),
    mask: (n: number, p = 0.75) => Uint8Array.from({ length: n }, () => (uniform() < p ? 1 : 0)),
  }
}
