/**
 * The one exit model. Every backend (KVM now; MSHV, WHPX and the simulated partition later)
 * turns its exits into these objects, and every handler answers with an ExitResponse.
 * Backend differences (who advances RIP, who decodes MMIO) stay below this line.
 */
import type { Registers } from './registers.js';

interface ExitBase {
  /** Index of the vCPU that exited. */
  readonly vp: number;
}

/** Port I/O. `count` > 1 for string I/O (rep ins/outs); then `bytes` holds the OUT data. */
export interface IoExit extends ExitBase {
  readonly kind: 'io';
  readonly port: number;
  readonly size: 1 | 2 | 4;
  readonly isWrite: boolean;
  /** The value written (OUT, first element for string I/O); 0 for IN. */
  readonly data: number;
  readonly count: number;
  /** String OUT data (count * size bytes); empty otherwise. */
  readonly bytes: Uint8Array;
}

/** A guest access to guest-physical space that is not RAM. */
export interface MmioExit extends ExitBase {
  readonly kind: 'mmio';
  readonly gpa: number;
  readonly size: number;
  readonly isWrite: boolean;
  /** The value written (write); 0n for reads. */
  readonly data: bigint;
}

export interface MsrReadExit extends ExitBase {
  readonly kind: 'msr-read';
  readonly msr: number;
}

export interface MsrWriteExit extends ExitBase {
  readonly kind: 'msr-write';
  readonly msr: number;
  readonly value: bigint;
}

/** CPUID (only backends that intercept CPUID produce it; KVM answers CPUID in the kernel). */
export interface CpuidExit extends ExitBase {
  readonly kind: 'cpuid';
  readonly leaf: number;
  readonly subleaf: number;
}

/** A Hyper-V hypercall (via the hypercall page): RCX control, RDX input, R8 output; answer RAX. */
export interface HypercallExit extends ExitBase {
  readonly kind: 'hypercall';
  readonly control: bigint;
  readonly input: bigint;
  readonly output: bigint;
  /** XMM0-5 (6 x 16 bytes) for a fast call (control bit 16), for XMM fast input; else undefined. */
  readonly xmm: Uint8Array | undefined;
}

export interface HaltExit extends ExitBase {
  readonly kind: 'halt';
}

/** The guest shut down its processor (on x86: a triple fault). */
export interface ShutdownExit extends ExitBase {
  readonly kind: 'shutdown';
  readonly reason: 'triple-fault' | 'system-event';
  /** Backend exit code and detail, for logs. */
  readonly backendCode: number;
  readonly detail: bigint;
  readonly registers: Registers | undefined;
}

/** Something the hypervisor could not continue: emulation failure, failed entry, bad exit. */
export interface UnrecoverableExit extends ExitBase {
  readonly kind: 'unrecoverable';
  readonly reason: 'emulation-failure' | 'internal-error' | 'entry-failure' | 'bad-io' | 'unknown';
  readonly backendCode: number;
  readonly detail: bigint;
  readonly registers: Registers | undefined;
  /** The bytes at RIP, when the backend could fetch them. */
  readonly instructionBytes: Uint8Array | undefined;
}

export type Exit = IoExit | MmioExit | MsrReadExit | MsrWriteExit | CpuidExit | HypercallExit | HaltExit | ShutdownExit | UnrecoverableExit;

export type ExitKind = Exit['kind'];

/**
 * How a handler answers an exit (the only way). Omitted fields mean "continue with 0".
 * - `value`: IN data, MMIO read data, RDMSR value, hypercall RAX.
 * - `bytes`: string IN data (count * size bytes).
 * - `cpuid`: [eax, ebx, ecx, edx] for a cpuid exit.
 * - `gp`: inject #GP (MSR accesses).
 * - `stop`: stop this vCPU after the exit (e.g. a debug-exit port, or a fatal exit).
 */
export interface ExitResponse {
  value?: number | bigint;
  bytes?: Uint8Array;
  cpuid?: readonly [number, number, number, number];
  gp?: boolean;
  stop?: boolean;
}

/** A handler may answer synchronously or later; the vCPU waits, other vCPUs do not. */
export type ExitHandler<E extends Exit = Exit> = (exit: E) => ExitResponse | void | Promise<ExitResponse | void>;
