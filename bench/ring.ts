/**
 * Ring throughput: write+read through one ring on one core, hvemu's RingWriter/RingReader
 * against a C baseline built now with the system compiler, doing the same protocol steps on
 * the same ring layout (batches of 16 packets published once, descriptors validated, the
 * signal decisions made) and moving the payload with memcpy in and memcpy out.
 *
 * hvemu is measured two ways: "copy" copies each payload out of the ring like the C reader;
 * "view" is hvemu's own read path, a zero-copy view of the payload in the ring (the consumer
 * reads its first and last byte). Guest RAM is a plain ArrayBuffer here, as the native
 * backends' memfd mappings are; a SharedArrayBuffer (the simulated partition) copies with
 * V8's relaxed-atomic memcpy, about half as fast on large payloads.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GuestMemory, PAGE_SIZE } from '@hvemu/memory';
import { RingBuffer, RingReader, RingWriter, VM_PKT_DATA_INBAND, type OutgoingPacket, type PacketView } from '@hvemu/vmbus';

const DATA_SIZE = 1 << 20;
const BATCH = 16;

export interface RingCase {
  payload: number;
  packets: number;
}

/** Issue #2's targets: hvemu throughput as a fraction of the C baseline's, per payload size. */
const TARGETS: Record<number, number> = { 64: 0.25, 1500: 0.5, 65536: 0.8 };

export const RING_CASES: RingCase[] = [
  { payload: 64, packets: 3_000_000 },
  { payload: 1500, packets: 1_000_000 },
  { payload: 65536, packets: 30_000 },
];

interface Run {
  seconds: number;
  checksum: number;
}

function makeRing(): { writer: RingWriter; reader: RingReader } {
  const size = PAGE_SIZE + DATA_SIZE;
  const memory = new GuestMemory([{ gpa: 0, size, buffer: new ArrayBuffer(size) }]);
  const ring = new RingBuffer(memory.u32Array(0, PAGE_SIZE / 4), memory.range(PAGE_SIZE, DATA_SIZE));
  ring.initialize();
  const noop = (): void => {};
  return { writer: new RingWriter(ring, { signal: noop }), reader: new RingReader(ring, { signal: noop }) };
}

function runJs(c: RingCase, mode: 'copy' | 'view'): Run {
  const { writer, reader } = makeRing();
  const src = new Uint8Array(c.payload).map((_, i) => i);
  const dst = new Uint8Array(c.payload + 8);
  const packet: OutgoingPacket = { type: VM_PKT_DATA_INBAND, transactionId: 0, payload: src };
  let checksum = 0;
  const copy = (p: PacketView): void => {
    p.copyPayload(dst);
  };
  const view = (p: PacketView): void => {
    const v = p.payload();
    checksum += v[0] + v[c.payload - 1];
  };
  const consume = mode === 'copy' ? copy : view;
  const t0 = process.hrtime.bigint();
  let done = 0;
  let wrote = 0;
  const writeBatch = (): void => {
    while (wrote < BATCH && done + wrote < c.packets) {
      packet.transactionId = done + wrote;
      if (!writer.write(packet)) break;
      wrote++;
    }
  };
  while (done < c.packets) {
    wrote = 0;
    writer.batch(writeBatch);
    const n = reader.readBatch(consume);
    if (n !== wrote) throw new Error(`read ${n} of ${wrote}`);
    if (mode === 'copy') checksum += dst[c.payload - 1];
    done += n;
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { seconds, checksum };
}

function buildBaseline(): string {
  const source = fileURLToPath(new URL('../c/ring_baseline.c', import.meta.url));
  const out = join(mkdtempSync(join(tmpdir(), 'hvemu-bench-')), 'ring_baseline');
  execFileSync('gcc', ['-O2', '-o', out, source]);
  return out;
}

function runC(binary: string, c: RingCase): Run {
  const json = execFileSync(binary, [String(c.payload), String(c.packets), String(BATCH), String(DATA_SIZE)], { encoding: 'utf8' });
  const r = JSON.parse(json) as { seconds: number; checksum: number };
  return r;
}

export interface RingFigures {
  [key: string]: number;
}

/** Runs every case (JS copy, JS view, C) interleaved, best of `rounds`; returns flat figures. */
export function benchRing(rounds = 3, log: (line: string) => void = console.log): RingFigures {
  const binary = buildBaseline();
  const figures: RingFigures = {};
  log(`ring throughput: ${DATA_SIZE / 1024} KiB data area, batches of ${BATCH}, best of ${rounds} rounds`);
  log('payload    hvemu copy (pkt/s, GB/s)    hvemu view (pkt/s)    C memcpy (pkt/s, GB/s)    copy/C   view/C  target');
  for (const c of RING_CASES) {
    runJs({ ...c, packets: Math.ceil(c.packets / 10) }, 'copy'); // warm up the JIT
    runJs({ ...c, packets: Math.ceil(c.packets / 10) }, 'view');
    let js = Infinity;
    let jsView = Infinity;
    let cs = Infinity;
    for (let r = 0; r < rounds; r++) {
      js = Math.min(js, runJs(c, 'copy').seconds);
      jsView = Math.min(jsView, runJs(c, 'view').seconds);
      cs = Math.min(cs, runC(binary, c).seconds);
    }
    const pps = (s: number): number => c.packets / s;
    const gbps = (s: number): number => (c.packets * c.payload) / s / 1e9;
    const ratio = cs / js;
    const ratioView = cs / jsView;
    const name = `ring_${c.payload}B`;
    figures[`${name}_js_pps`] = Math.round(pps(js));
    figures[`${name}_js_gbps`] = round(gbps(js));
    figures[`${name}_js_view_pps`] = Math.round(pps(jsView));
    figures[`${name}_c_pps`] = Math.round(pps(cs));
    figures[`${name}_c_gbps`] = round(gbps(cs));
    figures[`${name}_ratio_copy`] = round(ratio);
    figures[`${name}_ratio_view`] = round(ratioView);
    figures[`${name}_target`] = TARGETS[c.payload];
    log(
      `${String(c.payload).padEnd(10)} ${fmt(pps(js))} ${round(gbps(js)).toFixed(3).padStart(8)}      ${fmt(pps(jsView))}          ${fmt(pps(cs))} ${round(gbps(cs)).toFixed(3).padStart(8)}    ${ratio.toFixed(3)}    ${ratioView.toFixed(3)}   >=${TARGETS[c.payload]}`,
    );
  }
  return figures;
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function fmt(x: number): string {
  return Math.round(x).toLocaleString('en-US').padStart(12);
}
