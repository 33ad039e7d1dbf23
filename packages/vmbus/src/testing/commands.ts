/**
 * fast-check model-based commands for a ring: every command runs against the RingModel and a
 * RingSystem (ours, or a user's own ring implementation) and checks that they agree on what
 * was written, what was read, and every signal either end raised.
 */
import fc from 'fast-check';
import type { OutgoingPacket } from '../ring/writer.js';
import { RingModel, type ReceivedPacket } from './model.js';
import { createTestRing, guardsIntact, type RingGeometry } from './test-ring.js';
import { outgoingPacket } from './arbitraries.js';
import type { PacketView } from '../ring/reader.js';

/** The operations a ring implementation under test offers (both ends). */
export interface RingSystem {
  write(packet: OutgoingPacket): boolean;
  /** Writes in one batch (one publish, at most one signal); returns which were written. */
  writeBatch(packets: readonly OutgoingPacket[]): boolean[];
  /** Reads up to `max` packets and commits. */
  read(max: number): ReceivedPacket[];
  peek(): ReceivedPacket | null;
  mask(): void;
  unmask(): boolean;
  requestSpace(bytes: number): boolean;
  clearPendingSend(): void;
  readonly signalsToReader: number;
  readonly signalsToWriter: number;
  /** Optional extra invariant checked after every command (e.g. guard bytes intact). */
  checkInvariants?(): void;
}

export class RingMismatch extends Error {}

function fail(what: string, expected: unknown, actual: unknown): never {
  const show = (v: unknown): string =>
    JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x instanceof Uint8Array ? Array.from(x) : x));
  throw new RingMismatch(`${what}: expected ${show(expected)}, got ${show(actual)}`);
}

function samePacket(what: string, expected: ReceivedPacket | null, actual: ReceivedPacket | null): void {
  if (expected === null || actual === null) {
    if (expected !== actual) fail(what, expected, actual);
    return;
  }
  const eq = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);
  if (
    expected.type !== actual.type ||
    expected.flags !== actual.flags ||
    expected.transactionId !== actual.transactionId ||
    !eq(expected.header, actual.header) ||
    !eq(expected.payload, actual.payload)
  ) {
    fail(what, expected, actual);
  }
}

function checkSignals(model: RingModel, real: RingSystem): void {
  if (model.signalsToReader !== real.signalsToReader) fail('signals to reader', model.signalsToReader, real.signalsToReader);
  if (model.signalsToWriter !== real.signalsToWriter) fail('signals to writer', model.signalsToWriter, real.signalsToWriter);
  real.checkInvariants?.();
}

type RingCommand = fc.Command<RingModel, RingSystem>;

class WriteCommand implements RingCommand {
  constructor(readonly packet: OutgoingPacket) {}
  check(): boolean {
    return true;
  }
  run(model: RingModel, real: RingSystem): void {
    const expected = model.write(this.packet);
    const actual = real.write(this.packet);
    if (expected !== actual) fail('write accepted', expected, actual);
    checkSignals(model, real);
  }
  toString(): string {
    return `write(type=${this.packet.type}, ${describe(this.packet)})`;
  }
}

class BatchWriteCommand implements RingCommand {
  constructor(readonly packets: OutgoingPacket[]) {}
  check(): boolean {
    return true;
  }
  run(model: RingModel, real: RingSystem): void {
    model.beginBatch();
    const expected = this.packets.map((p) => model.write(p));
    model.endBatch();
    const actual = real.writeBatch(this.packets);
    if (expected.join() !== actual.join()) fail('batch accepted', expected, actual);
    checkSignals(model, real);
  }
  toString(): string {
    return `batch[${this.packets.map(describe).join(', ')}]`;
  }
}

class ReadCommand implements RingCommand {
  constructor(readonly max: number) {}
  check(): boolean {
    return true;
  }
  run(model: RingModel, real: RingSystem): void {
    const expected = model.read(this.max);
    const actual = real.read(this.max);
    if (expected.length !== actual.length) fail('packets read', expected.length, actual.length);
    expected.forEach((p, i) => samePacket(`packet ${i}`, p, actual[i]));
    checkSignals(model, real);
  }
  toString(): string {
    return `read(${this.max})`;
  }
}

class PeekCommand implements RingCommand {
  check(): boolean {
    return true;
  }
  run(model: RingModel, real: RingSystem): void {
    samePacket('peek', model.peek(), real.peek());
    samePacket('second peek', model.peek(), real.peek());
    checkSignals(model, real);
  }
  toString(): string {
    return 'peek';
  }
}

class MaskCommand implements RingCommand {
  check(): boolean {
    return true;
  }
  run(model: RingModel, real: RingSystem): void {
    model.mask();
    real.mask();
    checkSignals(model, real);
  }
  toString(): string {
    return 'mask';
  }
}

class UnmaskCommand implements RingCommand {
  check(): boolean {
    return true;
  }
  run(model: RingModel, real: RingSystem): void {
    const expected = model.unmask();
    const actual = real.unmask();
    if (expected !== actual) fail('unmask sees data', expected, actual);
    checkSignals(model, real);
  }
  toString(): string {
    return 'unmask';
  }
}

class RequestSpaceCommand implements RingCommand {
  constructor(readonly bytes: number) {}
  check(model: Readonly<RingModel>): boolean {
    return this.bytes < model.dataSize;
  }
  run(model: RingModel, real: RingSystem): void {
    const expected = model.requestSpace(this.bytes);
    const actual = real.requestSpace(this.bytes);
    if (expected !== actual) fail(`requestSpace(${this.bytes})`, expected, actual);
    checkSignals(model, real);
  }
  toString(): string {
    return `requestSpace(${this.bytes})`;
  }
}

class ClearPendingCommand implements RingCommand {
  check(): boolean {
    return true;
  }
  run(model: RingModel, real: RingSystem): void {
    model.clearPendingSend();
    real.clearPendingSend();
    checkSignals(model, real);
  }
  toString(): string {
    return 'clearPendingSend';
  }
}

function describe(p: OutgoingPacket): string {
  const payload = p.payload;
  const n = payload === undefined ? 0 : payload instanceof Uint8Array ? payload.length : payload.reduce((a, b) => a + b.length, 0);
  return `${n}B+${p.header?.length ?? 0}h`;
}

/** The command arbitrary for a ring of `dataSize` bytes. */
export function ringCommands(dataSize: number, options: { maxCommands?: number } = {}): fc.Arbitrary<Iterable<RingCommand>> {
  // Payloads up to about a third of the ring: some fit, some do not, rings fill and wrap.
  const maxPayload = Math.max(8, Math.floor(dataSize / 3));
  // Packets that can never fit throw (a host error, tested on its own); keep them out here.
  const packet = outgoingPacket({ maxPayload, maxSpace: dataSize - 8 });
  const write = packet.map((p) => new WriteCommand(p));
  const readFew = fc.integer({ min: 1, max: 3 }).map((n) => new ReadCommand(n));
  // pending_send_sz values around packet sizes make "free space crosses pending" common.
  const requestSpace = fc.integer({ min: 1, max: Math.max(1, Math.floor(dataSize / 2)) }).map((n) => new RequestSpaceCommand(n));
  return fc.commands(
    [
      write,
      write,
      write,
      fc.array(packet, { minLength: 1, maxLength: 6 }).map((ps) => new BatchWriteCommand(ps)),
      readFew,
      readFew,
      fc.integer({ min: 1, max: 8 }).map((n) => new ReadCommand(n)),
      fc.constant(new ReadCommand(Number.MAX_SAFE_INTEGER)),
      fc.constant(new PeekCommand()),
      fc.constant(new MaskCommand()),
      fc.constant(new UnmaskCommand()),
      requestSpace,
      requestSpace,
      fc.integer({ min: 1, max: dataSize - 1 }).map((n) => new RequestSpaceCommand(n)),
      fc.constant(new ClearPendingCommand()),
    ],
    { maxCommands: options.maxCommands ?? 60 },
  );
}

/** Copies what a reader sees into a ReceivedPacket. */
export function receivedFromView(v: PacketView): ReceivedPacket {
  return {
    type: v.type,
    flags: v.flags,
    transactionId: v.transactionId,
    header: v.header(),
    payload: new Uint8Array(v.payload()),
  };
}

/** hvemu's own RingWriter/RingReader over a test ring, as a RingSystem. */
export function hvemuRingSystem(geometry: Partial<RingGeometry>): RingSystem {
  const t = createTestRing(geometry);
  return {
    write: (p) => t.writer.write(p),
    writeBatch: (ps) => t.writer.batch((w) => ps.map((p) => w.write(p))),
    read: (max) => {
      const out: ReceivedPacket[] = [];
      t.reader.readBatch((v) => void out.push(receivedFromView(v)), max);
      return out;
    },
    peek: () => {
      const v = t.reader.peek();
      return v ? receivedFromView(v) : null;
    },
    mask: () => t.reader.mask(),
    unmask: () => t.reader.unmask(),
    requestSpace: (n) => t.writer.requestSpace(n),
    clearPendingSend: () => t.writer.clearPendingSend(),
    get signalsToReader() {
      return t.signalsToReader;
    },
    get signalsToWriter() {
      return t.signalsToWriter;
    },
    checkInvariants: () => {
      if (!guardsIntact(t, geometry)) throw new RingMismatch('a byte outside the ring changed');
    },
  };
}

/**
 * The whole model-based property for one geometry: random command sequences, run against the
 * model and `makeSystem(geometry)`.
 */
export function ringModelProperty(
  geometry: fc.Arbitrary<RingGeometry>,
  makeSystem: (g: RingGeometry) => RingSystem = hvemuRingSystem,
): fc.IPropertyWithHooks<[{ g: RingGeometry; cmds: Iterable<RingCommand> }]> {
  const scenario = geometry.chain((g) => ringCommands(g.dataSize).map((cmds) => ({ g, cmds })));
  return fc.property(scenario, ({ g, cmds }) => {
    fc.modelRun(() => ({ model: new RingModel(g.dataSize, g.pendingSendFeature), real: makeSystem(g) }), cmds);
  });
}
