/**
 * Reading traces as streams: the reader checks the magic before anything else, holds one
 * chunk or one record in its buffer whatever the trace's size, says when a trace is
 * truncated, and checks the footer's totals.
 */
import { closeSync, mkdtempSync, openSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HostUsageError, ManualClock } from '@hvemu/common';
import {
  decodeHostCallArgs,
  decodeRecords,
  encodeRecord,
  firstDivergence,
  MemoryOutput,
  parseTrace,
  TRACE_MAGIC,
  TraceInputError,
  TraceOutputError,
  TraceReader,
  TraceRecorder,
  type RecordOutput,
  type TraceEventBody,
} from '@hvemu/trace';

const header = {
  vmbusVersion: 0,
  devices: [{ name: 'heartbeat', classId: '57164f39-9115-4e78-ab55-382f3bd5422d', instanceId: 'a', relid: 1 }],
  producer: 'test',
};
const dir = mkdtempSync(join(tmpdir(), 'hvemu-stream-'));

/** A RecordOutput that writes synchronously (nothing is ever pending, nothing dropped), in 1 MiB batches. */
class SyncFileOutput implements RecordOutput {
  readonly pending = 0;
  private readonly fd: number;
  private parts: Uint8Array[] = [];
  private bytes = 0;
  constructor(path: string) {
    this.fd = openSync(path, 'w');
  }
  write(bytes: Uint8Array): void {
    this.parts.push(bytes);
    this.bytes += bytes.length;
    if (this.bytes >= 1 << 20) this.flush();
  }
  private flush(): void {
    writeSync(this.fd, Buffer.concat(this.parts));
    this.parts = [];
    this.bytes = 0;
  }
  async close(): Promise<void> {
    this.flush();
    closeSync(this.fd);
  }
}

function packet(i: number, size: number): TraceEventBody {
  const bytes = new Uint8Array(size);
  new DataView(bytes.buffer).setUint32(0, i, true);
  return { kind: 'ringPacket', ringPacket: { relid: 1, direction: i % 2 ? 'GUEST_TO_HOST' : 'HOST_TO_GUEST', packet: bytes, ranges: [] } };
}

function trace(name: string, bodies: TraceEventBody[], close = true): Uint8Array {
  const out = new MemoryOutput();
  const rec = new TraceRecorder(out, header, { clock: new ManualClock() });
  for (const b of bodies) rec.record(0, b);
  if (close) void rec.close();
  const bytes = out.bytes();
  writeFileSync(join(dir, name), bytes);
  return bytes;
}

describe('streaming trace reader', () => {
  it('holds one chunk or one record in its buffer, never the trace: 300,000 events, 40 MB', async () => {
    const path = join(dir, 'big.hvtrace');
    const rec = new TraceRecorder(new SyncFileOutput(path), header, { clock: new ManualClock() });
    const N = 300_000;
    const LARGE = 1 << 20;
    for (let i = 0; i < N; i++) rec.record(0, packet(i, i === 1000 ? LARGE : 120));
    rec.noteVmbusVersion(0x50003);
    await rec.close();
    const size = statSync(path).size;
    expect(size).toBeGreaterThan(40e6);

    const reader = TraceReader.open(path);
    let count = 0;
    let sizes = 0;
    const pass = reader.events();
    let r = pass.next();
    for (; !r.done; r = pass.next()) {
      const e = r.value;
      if (
        e.kind !== 'ringPacket' ||
        new DataView(e.ringPacket.packet.buffer, e.ringPacket.packet.byteOffset).getUint32(0, true) !== count
      ) {
        throw new Error(`event ${count} is not the one recorded`);
      }
      sizes += e.ringPacket.packet.length;
      count++;
    }
    const stats = reader.stats;
    reader.close();
    expect(count).toBe(N);
    expect(sizes).toBe((N - 1) * 120 + LARGE);
    expect(r.value).toMatchObject({ events: N, droppedEvents: 0n, truncated: false, vmbusVersion: 0x50003 });
    expect(stats.records).toBe(N + 2);
    // The buffer grew for the one 1 MiB record alone, and went back to one chunk after it.
    expect(stats.largestRecordBytes).toBeGreaterThan(LARGE);
    expect(stats.peakBufferBytes).toBeLessThanOrEqual(stats.largestRecordBytes + 8);
    expect(stats.peakBufferBytes).toBeLessThan(size / 30);
    expect(stats.bufferBytes).toBe(64 << 10);
  });

  it('reads the magic before anything else: /dev/zero and a directory fail at once', () => {
    const started = performance.now();
    expect(() => TraceReader.open('/dev/zero')).toThrow(/trace corrupt at byte 0: not an hvemu trace \(bad magic\)/);
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(() => TraceReader.open(dir)).toThrow(TraceInputError);
    expect(() => TraceReader.open(join(dir, 'missing.hvtrace'))).toThrow(/cannot read trace .*missing\.hvtrace: ENOENT/);
    // Valid magic, then zeros: a record of unknown kind right there, not a read to the end.
    const zeros = join(dir, 'magic-then-zeros');
    writeFileSync(zeros, Buffer.concat([TRACE_MAGIC, new Uint8Array(1 << 20)]));
    expect(() => TraceReader.open(zeros)).toThrow(/at byte 8: record of unknown kind/);
  });

  it('says a trace is truncated: cut after the header, or without its footer', () => {
    const eom: TraceEventBody = { kind: 'eom', eom: {} };
    const full = trace('full.hvtrace', [eom, eom, eom]);
    const unclosed = trace('unclosed.hvtrace', [eom, eom], false);
    const headerOnly = trace('header-only.hvtrace', [], false);
    for (const [bytes, events] of [
      [unclosed, 2],
      [headerOnly, 0],
    ] as const) {
      const reader = TraceReader.fromBytes(bytes);
      expect([...reader.events()].length).toBe(events);
      expect(reader.lastPass).toMatchObject({ events, truncated: true, footer: null });
    }
    const reader = TraceReader.fromBytes(full);
    expect(reader.lastPass).toBeNull(); // before a pass has ended
    expect([...reader.events()].length).toBe(3);
    expect(reader.lastPass).toMatchObject({ events: 3, truncated: false, footer: { events: 3n, dropped: 0n, vmbusVersion: 0 } });
    // A second pass reads it again from the first event.
    expect([...reader.events()].length).toBe(3);
    // Cut inside a record: the events before it, then the offset and the word "truncated".
    const cut = TraceReader.fromBytes(full.subarray(0, full.length - 3));
    const got: unknown[] = [];
    expect(() => {
      for (const e of cut.events()) got.push(e);
    }).toThrow(/trace corrupt at byte \d+: record of \d+ bytes cut after \d+ \(the trace is truncated\)/);
    expect(got.length).toBe(3);
    expect(() => TraceReader.fromBytes(full.subarray(0, TRACE_MAGIC.length))).toThrow(/no header \(the trace is truncated\)/);
  });

  it('checks the footer against what the trace holds', () => {
    const out = new MemoryOutput();
    out.write(TRACE_MAGIC);
    out.write(encodeRecord({ kind: 'header', header: { ...header, schemaVersion: 2, createdUnixMs: 0n } }));
    out.write(encodeRecord({ kind: 'event', event: { seq: 0n, time: 0n, vp: 0, kind: 'eom', eom: {} } }));
    out.write(encodeRecord({ kind: 'footer', footer: { events: 5n, dropped: 0n, vmbusVersion: 0 } }));
    expect(() => parseTrace(out.bytes())).toThrow(/the footer counts 5 events and 0 dropped; the trace holds 1 and 0/);
  });

  it('records the negotiated VMBus version in the footer; old footers read as 0', () => {
    const out = new MemoryOutput();
    const rec = new TraceRecorder(out, header, { clock: new ManualClock() });
    rec.record(0, { kind: 'eom', eom: {} });
    rec.noteVmbusVersion(0x50003);
    void rec.close();
    const reader = TraceReader.fromBytes(out.bytes());
    expect(reader.header.vmbusVersion).toBe(0);
    expect(reader.readAll().footer).toEqual({ events: 1n, dropped: 0n, vmbusVersion: 0x50003 });
    expect(reader.lastPass?.vmbusVersion).toBe(0x50003);
    expect(() => rec.noteVmbusVersion(-1)).toThrow(HostUsageError);
  });

  it('refuses wrong-typed arguments with a HostUsageError naming them', () => {
    const clock = new ManualClock();
    const bad: [() => unknown, RegExp][] = [
      [() => parseTrace('HVTRACE1' as never), /TraceReader\.fromBytes: bytes must be a Uint8Array, got 'HVTRACE1'/],
      [() => TraceReader.open(42 as never), /path must be a non-empty string, got 42/],
      [() => new TraceRecorder({} as never, header, { clock }), /output must be a RecordOutput/],
      [
        () => new TraceRecorder(new MemoryOutput(), { ...header, vmbusVersion: -1 }, { clock }),
        /header\.vmbusVersion must be a 32-bit unsigned integer, got -1/,
      ],
      [() => new TraceRecorder(new MemoryOutput(), { ...header, devices: [{ name: 'x' }] } as never, { clock }), /header\.devices\[0\]/],
      [() => new TraceRecorder(new MemoryOutput(), header, {} as never), /options\.clock must be a Clock/],
      [
        () => new TraceRecorder(new MemoryOutput(), header, { clock, maxBufferedBytes: -5 }),
        /options\.maxBufferedBytes must be a non-negative integer, got -5/,
      ],
      [
        () => new TraceRecorder(new MemoryOutput(), header, { clock }).record(-1, { kind: 'eom', eom: {} }),
        /record: vp must be a 32-bit unsigned integer, got -1/,
      ],
      [
        () => new TraceRecorder(new MemoryOutput(), header, { clock }).record(0, { kind: 'frob' } as never),
        /record: body: unknown kind 'frob' \(known: postMessage/,
      ],
      [() => TraceRecorder.toFile('', header, { clock }), /path must be a non-empty string/],
      [() => firstDivergence('a' as never, []), /firstDivergence: expected must be an array of events, got 'a'/],
      [() => firstDivergence([], [], { context: -1 }), /options\.context must be a non-negative integer/],
      [
        () => encodeRecord({ kind: 'event', event: { seq: 0n, time: 0n, vp: 0, kind: 'eom' } } as never),
        /encodeRecord: record\.event: eom must be an object, got undefined/,
      ],
      [() => encodeRecord({ kind: 'trailer' } as never), /record\.kind must be header, event, dropped or footer, got 'trailer'/],
      [
        () => encodeRecord({ kind: 'footer', footer: { events: 'many' } } as never),
        /encodeRecord: record\.footer: footer\.events must be u64, got 'many'/,
      ],
      [() => [...decodeRecords('HVTRACE1' as never)], /decodeRecords: bytes must be a Uint8Array/],
      [() => decodeHostCallArgs(5 as never), /decodeHostCallArgs: json must be a string, got 5/],
    ];
    for (const [call, message] of bad) {
      expect(call, String(message)).toThrow(HostUsageError);
      expect(call).toThrow(message);
    }
    // A refused record does not use up a sequence number: the footer still adds up.
    const out = new MemoryOutput();
    const rec = new TraceRecorder(out, header, { clock });
    expect(() =>
      rec.record(0, { kind: 'postMessage', postMessage: { connectionId: 'x', messageType: 1, payload: new Uint8Array(1) } } as never),
    ).toThrow(/record: body: postMessage\.connectionId must be u32, got 'x'/);
    expect(() =>
      rec.record(0, { kind: 'ringPacket', ringPacket: { relid: 1, direction: 'GUEST_TO_HOST', packet: 'ab', ranges: [] } } as never),
    ).toThrow(/ringPacket\.packet must be bytes/);
    rec.record(0, { kind: 'eom', eom: {} });
    void rec.close();
    expect(parseTrace(out.bytes()).events.map((e) => e.seq)).toEqual([0n]);
  });

  it('a write that fails later (disk full) ends the trace and close() reports it, instead of an unhandled error event', async () => {
    const rec = TraceRecorder.toFile('/dev/full', header, { clock: new ManualClock() });
    for (let i = 0; i < 2000; i++) rec.record(0, packet(i, 100));
    await new Promise((resolve) => setTimeout(resolve, 20));
    rec.record(0, packet(0, 100)); // after the failure: ignored, not thrown
    await expect(rec.close()).rejects.toThrow(/cannot write trace \/dev\/full: ENOSPC/);
  });

  it('an unwritable trace path fails when the recorder is made, naming the path', () => {
    expect(() => TraceRecorder.toFile(join(dir, 'no-such-dir', 't.hvtrace'), header, { clock: new ManualClock() })).toThrow(
      TraceOutputError,
    );
    expect(() => TraceRecorder.toFile(join(dir, 'no-such-dir', 't.hvtrace'), header, { clock: new ManualClock() })).toThrow(
      /cannot write trace .*no-such-dir\/t\.hvtrace: ENOENT/,
    );
  });
});
