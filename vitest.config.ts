import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // native addons are not safe under worker_threads pools; forks is also vitest's default
    pool: 'forks',
    testTimeout: 60_000,
  },
})
