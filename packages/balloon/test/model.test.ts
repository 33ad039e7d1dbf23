/**
 * Model-based: any sequence of inflate and deflate toward targets, guest allocations, status
 * reports (with and without a policy) and hot adds, with Linux's 2 MiB allocation unit or single
 * pages and with a floor; after every step the host's balloon is exactly the guest's, no page
 * was given back that the guest had not given, none the guest owns was released (its stamp is
 * intact), and the pool is conserved.
 */
import { describe, it } from 'vitest';
import fc from 'fast-check';
import { followCommitted } from '@hvemu/balloon';
import { balloonCommands, createBalloonSim } from '@hvemu/balloon/testing';
import { fuzzRuns } from '../../../test/helpers.js';

describe('balloon model', () => {
  it('no page is lost, given twice, or released while the guest owns it', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ allocUnit: fc.constantFrom(1, 8, 512), floor: fc.constantFrom(0, 256), policy: fc.boolean() }),
        balloonCommands(),
        async (cfg, cmds) => {
          const sim = createBalloonSim({
            ramBytes: 32 << 20,
            client: { allocUnit: cfg.allocUnit, floor: cfg.floor, hotAddAlignmentLog2: 0 },
            device: cfg.policy ? { policy: followCommitted({ headroomBytes: 18 << 20 }) } : {},
          });
          await sim.connect();
          try {
            await fc.asyncModelRun(() => ({ model: { poolPages: sim.model.poolPages }, real: sim }), cmds);
          } finally {
            await sim.client.close();
          }
        },
      ),
      { numRuns: fuzzRuns(60) },
    );
  });
});
