/**
 * Lifecycle and resource hardening of the KVM partition: large RAM, teardown from any thread,
 * handles after close, run() misuse. Repros whose failure was a process abort run in a child
 * process (helpers/child.ts).
 */
import { expect, it } from 'vitest';
import { describeKvm } from './helpers/harness.js';
import { describeChild, runChild } from './helpers/child.js';

const GiB = 2 ** 30;

describeKvm('KVM partition hardening', () => {
  it.each([
    ['split-3g-6g', [[0, 3 * GiB], [4 * GiB, 4 * GiB], [8 * GiB, 2 * GiB]]],
    ['just-over-4g', [[4 * GiB, 4 * GiB], [8 * GiB, 4096]]],
    ['sparse-8g', [[0, 16 << 20], [4 * GiB, 4 * GiB], [8 * GiB, 4 * GiB]]],
  ])('RAM regions over 4 GiB work (%s): served as 4 GiB buffers, written and read near the end and across the seam', (layout, regions) => {
    // memfd RAM is allocated when touched: these sizes cost a few pages.
    const r = runChild('large-ram.mjs', [layout]);
    expect(r.status, describeChild(r)).toBe(0);
    const out = r.json as { regions: number[][]; ramSize: number; tail: number; across: number[]; pastEnd: boolean };
    expect(out.regions).toEqual(regions);
    expect(out.ramSize).toBe(regions.reduce((n, [, size]) => n + size, 0));
    expect(out.tail).toBe(0xfeedf00d);
    expect(out.across).toEqual([1, 2, 3, 4]);
    expect(out.pastEnd).toBe(false);
  });

  // Item: a partition must be safe to tear down from any thread and at environment shutdown.
  const crashed = (r: ReturnType<typeof runChild>): boolean =>
    r.signal !== null || r.status === 134 || r.status === 139 || /terminate called|FATAL ERROR|double free|Segmentation/.test(r.stderr);

  it.each(['exits', 'blocked', 'doorbell', 'quiet'])(
    'a worker that owns a running partition (guest %s) can be terminated; the process and its other partitions go on',
    (kind) => {
      const r = runChild('teardown.mjs', ['terminate', kind]);
      expect(crashed(r), describeChild(r)).toBe(false);
      expect(r.status, describeChild(r)).toBe(0);
      expect(r.json).toEqual({ workerExit: 1, mainOutcomes: ['stop-requested'] });
    },
  );

  it.each(['exits', 'doorbell'])('a worker may process.exit() while its partition runs (guest %s)', (kind) => {
    const r = runChild('teardown.mjs', ['worker-exit', kind]);
    expect(r.status, describeChild(r)).toBe(0);
    expect(r.json).toEqual({ workerExit: 3, mainOutcomes: ['stop-requested'] });
  });

  it.each(['exits', 'blocked', 'doorbell'])('process.exit() while a partition runs exits with its code (guest %s)', (kind) => {
    const r = runChild('teardown.mjs', ['main-exit', kind]);
    expect(crashed(r), describeChild(r)).toBe(false);
    expect(r.status, describeChild(r)).toBe(7);
  });

  it('an uncaught exception while a partition runs ends the process as an uncaught exception, not an abort', () => {
    const r = runChild('teardown.mjs', ['main-throw', 'exits']);
    expect(crashed(r), describeChild(r)).toBe(false);
    expect(r.status, describeChild(r)).toBe(1);
    expect(r.stderr).toMatch(/uncaught while a partition runs/);
  });

  it('a program may end with a stopped, unclosed partition and doorbell watcher (environment cleanup)', () => {
    const r = runChild('teardown.mjs', ['main-end', 'doorbell']);
    expect(crashed(r), describeChild(r)).toBe(false);
    expect(r.status, describeChild(r)).toBe(0);
    expect(r.json).toEqual({ ended: true });
  });
});
