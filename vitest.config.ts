import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // native addons are not safe under worker_threads pools; forks is also vitest's default
    pool: 'forks',
    // one file at a time: the event-loop-delay test measures scheduling, which other files' native
    // threads on a 2-core machine would disturb
    fileParallelism: false,
    testTimeout: 60_000,
  },
})
