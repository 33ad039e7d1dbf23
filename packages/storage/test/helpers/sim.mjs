/**
 * A simulated partition with a storvsp controller on its VMBus: guest RAM (optionally with a
 * region above 4 GiB), @hvemu/synic's HyperV, the hypercall dispatcher, a VmbusHost, the
 * TypeScript VMBus client through real HvPostMessage/SIMP slots, and a StorvscClient.
 */
import { MemoryLogger } from '@hvemu/common';
import { PAGE_SIZE } from '@hvemu/memory';
import { attachDevice, BumpPageAllocator } from '@hvemu/vmbus';
import { createSimulatedVmbus } from '@hvemu/vmbus/testing';
import { MemoryBackend, ScsiController, ScsiDisk, StorvspDevice } from '@hvemu/storage';
import { StorvscClient } from '@hvemu/storage/testing';

export const HIGH_GPA = 2 ** 32;
export const RAM_BYTES = 24 << 20;

/**
 * @param {{ disks?: { backend: import('@hvemu/storage').DiskBackend; sectorSize?: 512 | 4096; readOnly?: boolean; target?: number; lun?: number }[];
 *   device?: Partial<import('@hvemu/storage').StorvspOptions>; client?: Partial<import('@hvemu/storage/testing').StorvscClientOptions>;
 *   highMemory?: boolean; vpCount?: number }} options disks default to one 1 MiB memory disk at target 0 LUN 0; highMemory puts data pages above 4 GiB
 */

export function storageSim(options = {}) {
  const layout = [{ gpa: 0, size: RAM_BYTES }, ...(options.highMemory ? [{ gpa: HIGH_GPA, size: 4 << 20 }] : [])];
  const vpCount = options.vpCount ?? 1;
  const { memory, hyperv: hv, host, client: vmbus, logger } = createSimulatedVmbus({ ram: layout, vpCount, logger: new MemoryLogger() });
  const controller = new ScsiController();
  const disks = options.disks ?? [{ backend: new MemoryBackend(1 << 20) }];
  disks.forEach((d, i) => {
    const disk = new ScsiDisk(d.backend, { sectorSize: d.sectorSize, readOnly: d.readOnly, serial: `disk-${i}`, logger });
    controller.attach({ target: d.target ?? 0, lun: d.lun ?? i }, disk);
  });
  const device = new StorvspDevice({ controller, logger, ...options.device });
  const attached = attachDevice(host, device, { logger });
  // Data pages: high memory when asked, else a block of low RAM after the rings.
  const dataPages = options.highMemory ? new BumpPageAllocator(HIGH_GPA / PAGE_SIZE, 1024) : new BumpPageAllocator(0x900, 4096);
  const pages = dataPages;
  const makeClient = (extra = {}) =>
    new StorvscClient({ vmbus, memory, pages, relid: attached.channel.relid, ...options.client, ...extra });
  /** Connects VMBus and the storvsc client (the init sequence). */
  const connect = async (extra = {}) => {
    await vmbus.connect();
    await vmbus.requestOffers();
    const client = makeClient(extra);
    const init = await client.connect();
    return { client, init };
  };
  return { memory, hv, host, vmbus, controller, device, attached, logger, connect, makeClient };
}

export const settle = async (n = 20) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};
