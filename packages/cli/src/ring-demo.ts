/**
 * The ring demo: a simulated guest and the host exchange packets over a channel's ring pair
 * in simulated guest memory, exactly as a guest driver and a VSP would (the guest lays out
 * the ring GPADL, both ends attach, requests flow guest->host with completion requested,
 * completions flow back, a burst fills the ring and the writer waits on pending_send_sz).
 * Prints a timeline. It is the main job until the VMBus channel layer and a KVM guest exist.
 */
import { HostUsageError } from '@hvemu/common';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import {
  openRingEndpoint,
  ringPairFromPages,
  RingWriter,
  VM_PKT_COMP,
  VM_PKT_DATA_INBAND,
  VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
  type PacketView,
  type RingEndpoint,
} from '@hvemu/vmbus';

export interface DemoOptions {
  print: (line: string) => void;
  requests?: number;
}

interface Side {
  name: string;
  endpoint: RingEndpoint;
  interrupts: number;
}

const TYPE_NAMES: Record<number, string> = { [VM_PKT_DATA_INBAND]: 'VM_PKT_DATA_INBAND', [VM_PKT_COMP]: 'VM_PKT_COMP' };

export function runRingDemo(options: DemoOptions): { requests: number; completions: number } {
  if (typeof options !== 'object' || options === null) throw new HostUsageError('runRingDemo: options must be an object with print');
  if (typeof options.print !== 'function') throw new HostUsageError('runRingDemo: options.print must be a function');
  const requests = options.requests ?? 6;
  if (!Number.isInteger(requests) || requests < 1 || requests > 1000)
    throw new HostUsageError(`runRingDemo: options.requests must be an integer 1..1000, got ${String(requests)}`);
  const print = options.print;
  const memory = GuestMemory.createShared(64 * PAGE_SIZE);
  // The guest's ring GPADL: 4 pages (control + 3 data) each way, scattered in guest RAM.
  const pfns = [17, 5, 9, 30, 12, 40, 41, 42];
  for (const pfn of pfns) memory.bytes(pfn * PAGE_SIZE, PAGE_SIZE).fill(0);
  const layout = ringPairFromPages(memory, pfns, 4);
  layout.guestToHost.initialize();
  layout.hostToGuest.initialize();
  print(`guest RAM ${memory.ramSize / 1024} KiB; ring GPADL pages [${pfns.join(', ')}], host->guest ring at page 4`);
  print(`  guest->host data area: ${layout.guestToHost.dataSize} bytes (${layout.guestToHost.data.flat ? 'flat' : 'scattered pages'})`);
  print(`  host->guest data area: ${layout.hostToGuest.dataSize} bytes (${layout.hostToGuest.data.flat ? 'flat' : 'scattered pages'})`);

  const sides: { guest?: Side; host?: Side } = {};
  const interrupt = (target: () => Side | undefined) => () => {
    const side = target();
    if (side) side.interrupts++;
  };
  sides.guest = {
    name: 'guest',
    endpoint: openRingEndpoint(
      layout,
      'guest',
      interrupt(() => sides.host),
    ),
    interrupts: 0,
  };
  sides.host = {
    name: 'host',
    endpoint: openRingEndpoint(
      layout,
      'host',
      interrupt(() => sides.guest),
    ),
    interrupts: 0,
  };
  const guest = sides.guest;
  const host = sides.host;

  const describe = (p: PacketView): string =>
    `${TYPE_NAMES[p.type] ?? p.type} trans_id=${p.transactionId} len=${p.length}` +
    (p.completionRequested ? ' completion-requested' : '') +
    ` payload="${new TextDecoder().decode(p.payload()).replace(/\0+$/, '')}"`;

  // 1. The guest sends requests in one batch: one signal to the host.
  const encoder = new TextEncoder();
  guest.endpoint.outbound.batch((w) => {
    for (let i = 1; i <= requests; i++) {
      w.write({
        type: VM_PKT_DATA_INBAND,
        flags: VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
        transactionId: i,
        payload: encoder.encode(`request ${i}`),
      });
    }
  });
  print(`guest: wrote ${requests} requests in one batch; host interrupts: ${host.interrupts}`);

  // 2. The host drains with interrupt_mask set and completes each request in one batch.
  let completions = 0;
  host.endpoint.outbound.batch((w) => {
    host.endpoint.inbound.drain((p) => {
      print(`host:  <- ${describe(p)}`);
      if (p.completionRequested) {
        w.write({ type: VM_PKT_COMP, transactionId: p.transactionId, payload: encoder.encode(`done ${p.transactionIdNumber}`) });
        completions++;
      }
    });
  });
  print(`host:  completed ${completions}; guest interrupts: ${guest.interrupts}`);
  guest.endpoint.inbound.drain((p) => print(`guest: <- ${describe(p)}`));

  // 3. Backpressure: the host fills the guest's ring, asks for space, the guest drains and signals.
  const big = new Uint8Array(1000).fill(0x41);
  let sent = 0;
  while (host.endpoint.outbound.write({ type: VM_PKT_DATA_INBAND, transactionId: 0, payload: big })) sent++;
  const need = RingWriter.ringSpace(0, big.length);
  const already = host.endpoint.outbound.requestSpace(need);
  print(`host:  ring full after ${sent} x 1000-byte packets; pending_send_sz=${need} (space already there: ${already})`);
  const before = host.interrupts;
  const got = guest.endpoint.inbound.drain(() => {});
  print(`guest: drained ${got} packets; host interrupts for space: ${host.interrupts - before}`);
  host.endpoint.outbound.clearPendingSend();
  print(`host:  resumes: ${host.endpoint.outbound.write({ type: VM_PKT_DATA_INBAND, payload: big }) ? 'wrote' : 'still full'}`);
  return { requests, completions };
}
