/**
 * Hypercall dispatch. One handler per hypercall, declared in HYPERCALLS; the dispatch table
 * is built from that list, so adding a hypercall touches one place. Every input from the guest
 * (control value, GPAs, fields) is validated and answered with an HV_STATUS; nothing a guest
 * passes can throw out of `dispatch`.
 */
import { silentLogger, type Logger } from '@hvemu/common';
import { PAGE_SIZE, type GuestMemory } from '@hvemu/memory';
import {
  HV_MESSAGE_PAYLOAD_BYTE_COUNT,
  HV_MESSAGE_TYPE_HYPERVISOR_MASK,
  HV_STATUS_INVALID_ALIGNMENT,
  HV_STATUS_INVALID_CONNECTION_ID,
  HV_STATUS_INVALID_HYPERCALL_CODE,
  HV_STATUS_INVALID_HYPERCALL_INPUT,
  HV_STATUS_INVALID_PARAMETER,
  HV_STATUS_SUCCESS,
  HV_CONNECTION_ID_MASK,
  decodeControl,
  encodeResult,
  HVCALL_NOTIFY_LONG_SPIN_WAIT,
  HVCALL_POST_MESSAGE,
  HVCALL_SIGNAL_EVENT,
  hv_input_post_message,
  hv_input_signal_event,
  type HypercallControl,
} from '@hvemu/hvdef';
import { ConnectionRegistry } from './connections.js';

/** The registers a hypercall exit carries (x64 calling convention). */
export interface HypercallRegisters {
  /** Input control value. */
  rcx: bigint;
  /** Input GPA, or the first fast parameter. */
  rdx: bigint;
  /** Output GPA, or the second fast parameter. */
  r8: bigint;
  /** XMM0-XMM5 (16 bytes each) for XMM fast input, when the backend provides them. */
  xmm?: Uint8Array;
}

export interface HypercallContext {
  vp: number;
  control: HypercallControl;
  regs: HypercallRegisters;
  memory: GuestMemory;
  connections: ConnectionRegistry;
  logger: Logger;
}

/** A hypercall's declaration: its code, name, whether it may be fast / rep, and its handler returning an HV_STATUS. */
export interface HypercallDefinition {
  code: number;
  name: string;
  allowFast: boolean;
  allowSlow: boolean;
  handler(ctx: HypercallContext): number;
}

/** Reads `length` bytes of input: from the input GPA (slow) or RDX, R8, XMM0-5 (fast). Null: unreadable. */
function readInput(ctx: HypercallContext, length: number): Uint8Array | { status: number } {
  if (ctx.control.fast) {
    const regs = new Uint8Array(16 + (ctx.regs.xmm?.length ?? 0));
    const dv = new DataView(regs.buffer);
    dv.setBigUint64(0, BigInt.asUintN(64, ctx.regs.rdx), true);
    dv.setBigUint64(8, BigInt.asUintN(64, ctx.regs.r8), true);
    if (ctx.regs.xmm) regs.set(ctx.regs.xmm, 16);
    if (length > regs.length) return { status: HV_STATUS_INVALID_HYPERCALL_INPUT };
    return regs.subarray(0, length);
  }
  const gpa = ctx.regs.rdx;
  // Input blocks are 8-byte aligned and may not cross a page (TLFS).
  if (gpa % 8n !== 0n || (gpa % BigInt(PAGE_SIZE)) + BigInt(length) > BigInt(PAGE_SIZE)) {
    return { status: HV_STATUS_INVALID_ALIGNMENT };
  }
  if (gpa > BigInt(Number.MAX_SAFE_INTEGER) || !ctx.memory.contains(Number(gpa), length)) {
    ctx.logger.warn(`vp ${ctx.vp}: hypercall input at GPA 0x${gpa.toString(16)} is not guest RAM`);
    return { status: HV_STATUS_INVALID_HYPERCALL_INPUT };
  }
  const out = new Uint8Array(length);
  ctx.memory.read(Number(gpa), out);
  return out;
}

/** HvPostMessage: hv_input_post_message at the GPA in RDX (never fast). */
function postMessage(ctx: HypercallContext): number {
  const input = readInput(ctx, hv_input_post_message.size);
  if (!(input instanceof Uint8Array)) return input.status;
  const m = hv_input_post_message.decode(input);
  if (m.connectionid > HV_CONNECTION_ID_MASK || m.reserved !== 0) return HV_STATUS_INVALID_PARAMETER;
  if (m.message_type === 0 || (m.message_type & HV_MESSAGE_TYPE_HYPERVISOR_MASK) !== 0) return HV_STATUS_INVALID_PARAMETER;
  if (m.payload_size > HV_MESSAGE_PAYLOAD_BYTE_COUNT) return HV_STATUS_INVALID_PARAMETER;
  const handler = ctx.connections.message(m.connectionid);
  if (!handler) return HV_STATUS_INVALID_CONNECTION_ID;
  return handler.onMessage(ctx.vp, m.message_type, m.payload.slice(0, m.payload_size));
}

/** HvSignalEvent: hv_input_signal_event, in memory or (fast) in RDX. */
function signalEvent(ctx: HypercallContext): number {
  const input = readInput(ctx, hv_input_signal_event.size);
  if (!(input instanceof Uint8Array)) return input.status;
  const e = hv_input_signal_event.decode(input);
  if (e.connectionid > HV_CONNECTION_ID_MASK || e.rsvd_z !== 0) return HV_STATUS_INVALID_PARAMETER;
  const handler = ctx.connections.event(e.connectionid);
  if (!handler) return HV_STATUS_INVALID_CONNECTION_ID;
  return handler.onSignal(ctx.vp, e.flag_number);
}

/** Every hypercall hvemu implements. Anything else is HV_STATUS_INVALID_HYPERCALL_CODE. */
export const HYPERCALLS: readonly HypercallDefinition[] = [
  { code: HVCALL_NOTIFY_LONG_SPIN_WAIT, name: 'HvNotifyLongSpinWait', allowFast: true, allowSlow: true, handler: () => HV_STATUS_SUCCESS },
  { code: HVCALL_POST_MESSAGE, name: 'HvPostMessage', allowFast: false, allowSlow: true, handler: postMessage },
  { code: HVCALL_SIGNAL_EVENT, name: 'HvSignalEvent', allowFast: true, allowSlow: true, handler: signalEvent },
];

/** One hypercall as it was made (for traces and diagnostics). */
export interface HypercallRecord {
  vp: number;
  regs: HypercallRegisters;
  control: HypercallControl;
}

export interface DispatcherOptions {
  memory: GuestMemory;
  /** Called as each hypercall comes in, before it is handled (so traces keep cause before effect). */
  onCall?(record: HypercallRecord): void;
  /** Called after each hypercall with the status that went back. */
  onResult?(record: HypercallRecord, status: number): void;
  connections?: ConnectionRegistry;
  logger?: Logger;
  /** Extra or replacement hypercalls (by code). */
  hypercalls?: readonly HypercallDefinition[];
}

export interface HypercallStats {
  calls: number;
  byStatus: Map<number, number>;
}

export class HypercallDispatcher {
  readonly connections: ConnectionRegistry;
  private readonly table = new Map<number, HypercallDefinition>();
  private readonly logger: Logger;
  readonly stats: HypercallStats = { calls: 0, byStatus: new Map() };

  constructor(private readonly options: DispatcherOptions) {
    this.connections = options.connections ?? new ConnectionRegistry();
    this.logger = options.logger ?? silentLogger;
    for (const def of [...HYPERCALLS, ...(options.hypercalls ?? [])]) this.table.set(def.code, def);
  }

  /** Handles one hypercall exit; returns the value for RAX. */
  dispatch(vp: number, regs: HypercallRegisters): bigint {
    const record = this.options.onCall || this.options.onResult ? { vp, regs, control: decodeControl(regs.rcx) } : null;
    if (record) this.options.onCall?.(record);
    const status = this.statusFor(vp, regs);
    if (record) this.options.onResult?.(record, status);
    this.stats.calls++;
    this.stats.byStatus.set(status, (this.stats.byStatus.get(status) ?? 0) + 1);
    return encodeResult(status);
  }

  private statusFor(vp: number, regs: HypercallRegisters): number {
    const control = decodeControl(regs.rcx);
    const def = this.table.get(control.code);
    if (!def) return HV_STATUS_INVALID_HYPERCALL_CODE;
    // None of the implemented calls is a rep call or has a variable header.
    if (control.reservedBitsSet || control.repCount !== 0 || control.repStart !== 0 || control.variableHeaderSize !== 0) {
      return HV_STATUS_INVALID_HYPERCALL_INPUT;
    }
    if (control.fast ? !def.allowFast : !def.allowSlow) return HV_STATUS_INVALID_HYPERCALL_INPUT;
    try {
      return def.handler({ vp, control, regs, memory: this.options.memory, connections: this.connections, logger: this.logger });
    } catch (error) {
      // A handler bug must not take the VMM down; the guest sees a failed call.
      this.logger.error(`vp ${vp}: ${def.name} handler threw`, { error: String(error) });
      return HV_STATUS_INVALID_PARAMETER;
    }
  }
}
