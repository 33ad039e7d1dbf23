/**
 * VMBus channel setup and IC round trips in simulation (the simulated partition: real SynIC
 * slots, real hypercall dispatch, real rings; a TypeScript guest client): offer-to-open
 * latency per channel and channels opened per second, the IC heartbeat round trip, and the
 * cost of one monitor-page (MNF) scan.
 */
import { createSimulatedBus, SimulatedVm } from '@hvemu/vm';

const CHANNELS = 64;

function simulatedBus() {
  return createSimulatedBus({ ramBytes: 64 << 20, client: { monitorPages: [0x4000, 0x5000] } });
}

async function channelSetup(): Promise<{ openUs: number; perSecond: number }> {
  const bus = simulatedBus();
  for (let i = 0; i < CHANNELS; i++) {
    const instance = `00000000-0000-0000-0000-${(i + 1).toString(16).padStart(12, '0')}`;
    bus.host.offerChannel({ interfaceType: 'f8615163-df3e-46c5-913f-f2d2f965ed0e', interfaceInstance: instance }, { onOpen: () => {} });
  }
  await bus.client.connect();
  const offers = await bus.client.requestOffers();
  const t0 = performance.now();
  // Linux's default ring for most devices: 16 pages each way -> a GPADL header and a body.
  for (const o of offers) await bus.client.openChannel(o.child_relid, { sendPages: 16, recvPages: 16 });
  const ms = performance.now() - t0;
  return { openUs: (ms * 1000) / offers.length, perSecond: (offers.length * 1000) / ms };
}

async function heartbeatRoundTrip(n: number): Promise<number> {
  const vm = new SimulatedVm();
  await vm.guest.boot();
  await vm.settle();
  const hb = vm.ics.heartbeat.service;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    hb.beat();
    // The guest answers from a microtask (its interrupt); wait for the answer to come back.
    while (hb.status.lastSequence !== BigInt(2 * i + 1)) await Promise.resolve();
  }
  return ((performance.now() - t0) * 1000) / n;
}

export async function benchVmbus(log: (line: string) => void = console.log): Promise<Record<string, number>> {
  log(`VMBus in simulation (SynIC slots, hypercall dispatch, rings; TypeScript guest client), ${CHANNELS} channels`);
  const runs = [];
  for (let r = 0; r < 3; r++) runs.push(await channelSetup());
  runs.sort((a, b) => a.openUs - b.openUs);
  const setup = runs[1];
  log(
    `  offer-to-open per channel (GPADL of 32 pages + OPENCHANNEL), median of 3: ${setup.openUs.toFixed(1)} us; ${Math.round(setup.perSecond)} channels/s`,
  );
  await heartbeatRoundTrip(200);
  const hbUs = await heartbeatRoundTrip(2000);
  log(`  heartbeat IC round trip (host request -> guest answer -> host), 2000 beats: ${hbUs.toFixed(2)} us`);
  const scanNs = await measureMnfScan(200_000);
  log(`  MNF monitor-page scan with nothing pending: ${scanNs.toFixed(0)} ns`);
  return {
    vmbus_sim_open_us: round(setup.openUs),
    vmbus_sim_channels_per_s: Math.round(setup.perSecond),
    vmbus_sim_heartbeat_rtt_us: round(hbUs),
    vmbus_mnf_scan_ns: Math.round(scanNs),
  };
}

async function measureMnfScan(n: number): Promise<number> {
  const bus = simulatedBus();
  bus.host.offerChannel(
    {
      interfaceType: 'f8615163-df3e-46c5-913f-f2d2f965ed0e',
      interfaceInstance: '00000000-0000-0000-0000-00000000abcd',
      monitorAllocated: true,
      monitorId: 3,
    },
    { onOpen: () => {} },
  );
  await bus.client.connect();
  for (let i = 0; i < 1000; i++) bus.host.scanMonitorPage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) bus.host.scanMonitorPage();
  return Number(process.hrtime.bigint() - t0) / n;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

/**
 * The same on KVM with the C guest (packages/vm/guests/vmbus): offer-to-open latency per
 * channel (host OFFERCHANNEL sent -> OPENCHANNEL_RESULT sent, from the host timeline), channels
 * opened per second, and the heartbeat IC round trip (beat() -> the answer arriving at the
 * host, on the VM's clock).
 */
export async function benchVmbusKvm(log: (line: string) => void = console.log): Promise<Record<string, number | string>> {
  const { KvmVm, buildVmbusDemoGuest } = await import('@hvemu/vm');
  const probe = KvmVm.probe();
  if (!probe.ok) {
    log(`VMBus on KVM: skipped (${probe.reason})`);
    return { vmbus_kvm_skipped: probe.reason };
  }
  const beats = 20;
  const events: { time: bigint; what: string }[] = [];
  const vm = new KvmVm({
    image: buildVmbusDemoGuest({ minHeartbeats: beats }),
    onEvent: (e) => events.push({ time: e.time, what: e.what }),
  });
  try {
    const run = vm.run();
    await vm.whenReady(['heartbeat', 'shutdown'], 60_000);
    const hb = vm.ics.heartbeat.service;
    const rtts: number[] = [];
    for (let i = 0; i < beats; i++) {
      const sent = vm.clock.now();
      const before = hb.status.lastSequence;
      hb.beat();
      while (hb.status.lastSequence === before) await new Promise((r) => setImmediate(r));
      rtts.push(Number(hb.status.lastAnswer! - sent) / 10); // 100 ns -> us
    }
    await vm.ics.shutdown.host.shutdown({ kind: 'poweroff' });
    await run;
    const at = (pattern: RegExp): bigint[] => events.filter((e) => pattern.test(e.what)).map((e) => e.time);
    const offered = at(/sends OFFERCHANNEL/);
    const opened = at(/sends OPENCHANNEL_RESULT/);
    const openUs = opened.map((t, i) => Number(t - offered[i]) / 10);
    const firstOffer = offered[0];
    const lastOpen = opened[opened.length - 1];
    const perSecond = (opened.length * 1e7) / Number(lastOpen - firstOffer);
    rtts.sort((a, b) => a - b);
    const median = rtts[rtts.length >> 1];
    log(`VMBus on KVM (C guest, ~1M guest instructions/s): ${opened.length} channels opened`);
    log(
      `  offer-to-open per channel: ${openUs.map((u) => `${(u / 1000).toFixed(1)} ms`).join(', ')}; ${perSecond.toFixed(1)} channels/s from the first offer`,
    );
    log(
      `  heartbeat IC round trip, ${beats} beats: median ${median.toFixed(0)} us (min ${rtts[0].toFixed(0)}, max ${rtts[rtts.length - 1].toFixed(0)})`,
    );
    return {
      vmbus_kvm_open_ms: round(Math.max(...openUs) / 1000),
      vmbus_kvm_channels_per_s: round(perSecond),
      vmbus_kvm_heartbeat_rtt_us: Math.round(median),
    };
  } finally {
    vm.close();
  }
}
