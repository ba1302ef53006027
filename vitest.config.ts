import { defineConfig } from 'vitest/config';

/**
 * Two groups, run one after the other: fast tests in parallel, then the tests that run real worker
 * processes, one file at a time. Those measure behaviour under real concurrency (crash recovery, a
 * global rate limit across replicas); on a 2-core machine, running two of them at once starves both
 * of CPU and turns "the limiter holds 200/s" into "the machine cannot keep up".
 */
const processFiles = [
  'test/worker-processes.test.ts',
  'test/worker-crash-window.test.ts',
  'test/campaign.test.ts',
  'test/metrics.test.ts',
  'test/cli*.test.ts',
  'test/demo.test.ts',
  'test/redis-data-loss.test.ts',
  'test/worker-shutdown.test.ts',
  'test/worker-logs.test.ts',
  'test/dashboard-browser.test.ts',
  // They fail masters of the shared local Redis Cluster over and kill them.
  'test/support/redis-cluster.test.ts',
  'test/cluster-failover.test.ts',
];

export default defineConfig({
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'] } },
  test: {
    setupFiles: ['test/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
          exclude: processFiles,
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'processes',
          include: processFiles,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
