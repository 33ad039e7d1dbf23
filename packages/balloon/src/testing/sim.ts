/**
 * A simulated partition with the balloon on its VMBus (createSimulatedVmbus): guest RAM, the
 * BalloonDevice over that RAM (released pages are zero-filled, hot add makes new regions), and
 * a BalloonClient whose page pool is RAM above the VMBus client's pages.
 */
import { MemoryLogger } from '@hvemu/common';
import { attachDevice, type AttachedDevice } from '@hvemu/vmbus';
import { createSimulatedVmbus, type SimulatedVmbus } from '@hvemu/vmbus/testing';
import { BalloonDevice, type BalloonOptions } from '../device.js';
import { balloonMemory, type BalloonMemory } from '../memory.js';
import { BalloonClient, type BalloonClientOptions } from './client.js';
import { GuestPageModel } from './model.js';

export interface BalloonSimOptions {
  /** Guest RAM bytes from GPA 0 (default 32 MiB). */
  ramBytes?: number;
  /** First PFN of the guest's balloonable pool (default 0x1000: 16 MiB, above the simulated VMBus pages). */
  poolFirstPfn?: number;
  device?: Partial<BalloonOptions>;
  client?: Partial<BalloonClientOptions>;
  /** Wraps the memory port (e.g. to count releases). */
  wrapMemory?: (m: BalloonMemory) => BalloonMemory;
}

export interface BalloonSim {
  readonly sim: SimulatedVmbus;
  readonly device: BalloonDevice;
  readonly attached: AttachedDevice;
  readonly model: GuestPageModel;
  readonly client: BalloonClient;
  readonly logger: MemoryLogger;
  /** Connects VMBus and runs the balloon probe (versions, capabilities). */
  connect(): Promise<void>;
}

export function createBalloonSim(options: BalloonSimOptions = {}): BalloonSim {
  const ramBytes = options.ramBytes ?? 32 << 20;
  const logger = new MemoryLogger();
  const sim = createSimulatedVmbus({ ram: ramBytes, logger });
  const base = balloonMemory(sim.memory);
  const memory = options.wrapMemory ? options.wrapMemory(base) : base;
  const device = new BalloonDevice({ memory, logger, ...options.device });
  const attached = attachDevice(sim.host, device, { logger });
  const first = options.poolFirstPfn ?? 0x1000;
  const model = new GuestPageModel(sim.memory, first, ramBytes / 4096 - first);
  const client = new BalloonClient({ vmbus: sim.client, memory: sim.memory, relid: attached.channel.relid, model, ...options.client });
  return {
    sim,
    device,
    attached,
    model,
    client,
    logger,
    async connect() {
      await sim.client.connect();
      await sim.client.requestOffers();
      await client.connect();
    },
  };
}

/** Event-loop turns until `cond` holds (or `max` turns pass). */
export async function turnsUntil(cond: () => boolean, max = 10_000): Promise<boolean> {
  for (let i = 0; i < max; i++) {
    if (cond()) return true;
    await new Promise((r) => setImmediate(r));
  }
  return cond();
}
