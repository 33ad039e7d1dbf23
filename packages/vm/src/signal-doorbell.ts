/**
 * Fast HvSignalEvent without a user-space exit (the host half of the doorbell the hypercall
 * page writes; packages/hypercalls/src/page.ts has the guest half).
 *
 * - Each registered event connection gets a PIO ioeventfd on the doorbell port with datamatch
 *   = its connection id: the guest's 32-bit OUT only bumps an eventfd counter in the kernel.
 * - The accel layer's native eventfd watcher (an epoll thread) wakes the JS thread when a
 *   counter moves; the connection's onSignal runs once per wake-up that saw writes (event
 *   flags coalesce anyway). No timer: an idle guest costs nothing. `drain()` does the same
 *   on demand (a guest that signals and stops at once).
 *   Which vCPU rang is not known on this path: onSignal gets vp 0. Connections that need the
 *   sender name it by connection id, as VMBus channels do.
 * - Any OUT the kernel did not match (unknown connection, a removed one, a hostile write)
 *   exits as port I/O: the call runs through the dispatcher, so the status is the one the
 *   exit path would give, and RAX = status | DOORBELL_HOST_STATUS tells the page so.
 */
import { HVCALL_SIGNAL_EVENT, HV_HYPERCALL_FAST_BIT } from '@hvemu/hvdef';
import { AccelUsageError, type AccelPartition, type Doorbell } from '@hvemu/accel';
import { DOORBELL_HOST_STATUS, type HypercallDispatcher } from '@hvemu/hypercalls';
import type { Logger } from '@hvemu/common';

export const SIGNAL_DOORBELL_PORT = 0x98;

export interface DoorbellStats {
  /** Signals taken from eventfds (each drain of a non-zero counter counts its writes). */
  doorbellWrites: bigint;
  /** Doorbell OUTs that exited to user space and went through the dispatcher. */
  fallbacks: number;
}

export class SignalDoorbell {
  readonly stats: DoorbellStats = { doorbellWrites: 0n, fallbacks: 0 };
  private readonly fds = new Map<number, Doorbell>();
  private readonly unwatch: () => void;

  constructor(
    private readonly partition: AccelPartition,
    private readonly hypercalls: HypercallDispatcher,
    private readonly port: number,
    private readonly logger: Logger,
    /**
     * Wraps each doorbell delivery (traces record it as a fast HvSignalEvent: the call before
     * `deliver` runs, the status after, as the exit path records it).
     */
    private readonly traceSignal?: (connectionId: number, deliver: () => void) => void,
  ) {
    const doorbells = partition.doorbells;
    if (!doorbells) throw new AccelUsageError(`SignalDoorbell: the ${partition.backend} partition has no doorbells (partition.doorbells)`);
    partition.addIoDevice({ port, count: 1, write: (_p, size, data, vp) => this.fallback(vp, size, data) });
    this.unwatch = hypercalls.connections.watchEvents({
      added: (id) => {
        const fd = doorbells.create({ space: 'pio', address: port, length: 4, datamatch: BigInt(id) });
        this.fds.set(id, fd);
        fd.watch((writes) => this.deliver(id, writes));
      },
      removed: (id) => {
        this.drainOne(id); // writes made while it was registered still count
        this.fds.get(id)?.remove();
        this.fds.delete(id);
      },
    });
  }

  /** Delivers every doorbell write so far to its connection. */
  drain(): void {
    for (const id of this.fds.keys()) this.drainOne(id);
  }

  private drainOne(id: number): void {
    const writes = this.fds.get(id)?.take() ?? 0n;
    if (writes > 0n) this.deliver(id, writes);
  }

  private deliver(id: number, writes: bigint): void {
    this.stats.doorbellWrites += writes;
    const deliver = (): void => {
      const handler = this.hypercalls.connections.event(id);
      try {
        handler?.onSignal(0, 0);
      } catch (error) {
        this.logger.error(`doorbell: connection ${id} onSignal threw`, { error: String(error) });
      }
    };
    if (this.traceSignal) this.traceSignal(id, deliver);
    else deliver();
  }

  /** An unmatched doorbell OUT: the exit path's answer, flagged for the page code. */
  private fallback(vp: number, size: number, data: number): void {
    if (size !== 4) return; // not the page's OUT: a guest poking the port; nothing to answer
    this.stats.fallbacks++;
    const rcx = BigInt(HVCALL_SIGNAL_EVENT) | HV_HYPERCALL_FAST_BIT;
    const result = this.hypercalls.dispatch(vp, { rcx, rdx: BigInt(data >>> 0), r8: 0n });
    const vcpu = this.partition.vcpus[vp];
    vcpu.setRegisters({ ...vcpu.getRegisters(), rax: result | DOORBELL_HOST_STATUS });
  }

  dispose(): void {
    this.unwatch();
    this.drain();
  }
}
