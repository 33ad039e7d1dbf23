/**
 * Host-side devices of the test-guest platform: a serial port at 0x3f8 (output only, always
 * ready), a debug-exit port carrying the guest's exit code (0xf4, the kvm-unit-tests port),
 * and an assertion port through which the guest reports file:line:expression.
 */
import { GuestMemoryError, type GuestMemory } from '@hvemu/memory';
import { AccelUsageError, type AccelPartition, type IoDevice } from '@hvemu/accel';

/** A partition-shaped argument (memory, vCPUs, addIoDevice), or AccelUsageError naming the call. */
export function checkPartitionLike(partition: unknown, what: string): void {
  const p = partition as Partial<AccelPartition> | null | undefined;
  if (p === null || typeof p !== 'object' || typeof p.addIoDevice !== 'function' || !p.memory || !Array.isArray(p.vcpus)) {
    throw new AccelUsageError(`${what}: partition must be a partition (memory, vcpus, addIoDevice), not ${p === null ? 'null' : typeof p}`);
  }
}

export const SERIAL_PORT = 0x3f8;
export const DEBUG_EXIT_PORT = 0xf4;
export const ASSERT_PORT = 0xf6;

const UART_THR = 0;
const UART_LSR = 5;
const LSR_THR_EMPTY = 0x20;
const LSR_TX_IDLE = 0x40;
const MAX_SERIAL_BYTES = 1 << 20;
const MAX_ASSERT_STRING = 256;

/** A 16550-shaped serial port that only transmits. */
export class SerialPort implements IoDevice {
  readonly port = SERIAL_PORT;
  readonly count = 8;
  private readonly chunks: number[] = [];

  read(port: number): number {
    return port - SERIAL_PORT === UART_LSR ? LSR_THR_EMPTY | LSR_TX_IDLE : 0;
  }
  write(port: number, _size: 1 | 2 | 4, value: number): void {
    // Bounded: a guest that prints forever must not grow host memory forever.
    if (port - SERIAL_PORT === UART_THR && this.chunks.length < MAX_SERIAL_BYTES) this.chunks.push(value & 0xff);
  }
  /** Everything transmitted so far. */
  text(): string {
    return new TextDecoder().decode(new Uint8Array(this.chunks));
  }
}

/** Port 0xf4: a write ends the writing vCPU with the written value as its exit code. */
export class DebugExitPort implements IoDevice {
  readonly port = DEBUG_EXIT_PORT;
  readonly count = 1;
  readonly codes = new Map<number, number>();

  write(_port: number, _size: 1 | 2 | 4, value: number, vp: number): { stop: boolean } {
    this.codes.set(vp, value >>> 0);
    return { stop: true };
  }
}

export interface GuestAssertion {
  readonly vp: number;
  readonly file: string;
  readonly line: number;
  readonly expression: string;
}

/**
 * Port 0xf6: a 32-bit write of the guest-physical address of { u64 file; u64 expr; u32 line }
 * (pointers to NUL-terminated strings; the test loader identity-maps, so pointers are GPAs).
 * Everything is read through the bounds-checked GuestMemory; a bad pointer gives "<bad pointer>".
 */
export class AssertPort implements IoDevice {
  readonly port = ASSERT_PORT;
  readonly count = 1;
  readonly failures: GuestAssertion[] = [];

  constructor(private readonly memory: GuestMemory) {}

  write(_port: number, _size: 1 | 2 | 4, value: number, vp: number): { stop: boolean } {
    const gpa = value >>> 0;
    let file = '<bad pointer>';
    let expression = '<bad pointer>';
    let line = 0;
    try {
      file = readCString(this.memory, Number(this.memory.readU64(gpa)));
      expression = readCString(this.memory, Number(this.memory.readU64(gpa + 8)));
      line = this.memory.readU32(gpa + 16);
    } catch (e) {
      if (!(e instanceof GuestMemoryError)) throw e;
    }
    this.failures.push({ vp, file, line, expression });
    return { stop: true };
  }
}

function readCString(memory: GuestMemory, gpa: number): string {
  const out: number[] = [];
  for (let i = 0; i < MAX_ASSERT_STRING; i++) {
    const b = memory.readU8(gpa + i);
    if (b === 0) break;
    out.push(b);
  }
  return new TextDecoder().decode(new Uint8Array(out));
}

/** The three test devices, attached to a partition. */
export class TestPlatform {
  readonly serial = new SerialPort();
  readonly debugExit = new DebugExitPort();
  readonly asserts: AssertPort;

  constructor(partition: Pick<AccelPartition, 'memory' | 'addIoDevice'>) {
    checkPartitionLike(partition, 'new TestPlatform');
    this.asserts = new AssertPort(partition.memory);
    partition.addIoDevice(this.serial);
    partition.addIoDevice(this.debugExit);
    partition.addIoDevice(this.asserts);
  }

  /** A one-line summary of guest assertion failures ('' when none). */
  assertionSummary(): string {
    return this.asserts.failures.map((f) => `vCPU ${f.vp}: ${f.file}:${f.line}: assertion failed: ${f.expression}`).join('\n');
  }
}
