/**
 * The reference model of SynIC message-slot semantics for one VP, and fast-check commands
 * that run it against a SynicSystem (hvemu's VpSynic, or a user's own SynIC) with a compliant
 * guest on the other side. The model holds, per SINT:
 * - messages are delivered in post order, none lost, none duplicated;
 * - a message enters the slot only when the slot is free, the SINT unmasked and the SynIC
 *   and SIMP enabled; each entry raises one interrupt unless the SINT polls;
 * - while the SINT is unmasked, the slot's msg_pending flag is set exactly when messages are
 *   waiting (so a compliant guest's EOM is what moves the queue); when masked, it is never
 *   set without a waiting message.
 */
import fc from 'fast-check';

export interface SlotContent {
  type: number;
  payload: Uint8Array;
  pending: boolean;
}

/** The operations a SynIC under test offers for one VP (host side and guest side). */
export interface SynicSystem {
  /** Host: post a message. */
  post(sint: number, type: number, payload: Uint8Array): void;
  /** Guest: read the slot (null when message_type is HVMSG_NONE). */
  readSlot(sint: number): SlotContent | null;
  /** Guest: free the slot (store HVMSG_NONE), then write EOM if msg_pending was set. Returns whether it wrote EOM. */
  consumeSlot(sint: number): boolean;
  setMasked(sint: number, masked: boolean): void;
  setPolling(sint: number, polling: boolean): void;
  setSimpEnabled(enabled: boolean): void;
  /** Guest: an EOM with nothing pending (harmless). */
  spuriousEom(): void;
  /** Interrupts raised so far for `sint`. */
  interrupts(sint: number): number;
}

interface ModelMessage {
  type: number;
  payload: Uint8Array;
}

export class SynicSlotModel {
  readonly waiting: ModelMessage[][];
  readonly slot: (ModelMessage | null)[];
  readonly masked: boolean[];
  readonly polling: boolean[];
  readonly interrupts: number[];
  simpEnabled = true;

  constructor(readonly sintCount: number) {
    this.waiting = Array.from({ length: sintCount }, () => []);
    this.slot = new Array(sintCount).fill(null);
    this.masked = new Array(sintCount).fill(false);
    this.polling = new Array(sintCount).fill(false);
    this.interrupts = new Array(sintCount).fill(0);
  }

  private settle(sint: number): void {
    if (this.slot[sint] !== null || this.masked[sint] || !this.simpEnabled) return;
    const next = this.waiting[sint].shift();
    if (!next) return;
    this.slot[sint] = next;
    if (!this.polling[sint]) this.interrupts[sint]++;
  }

  private settleAll(): void {
    for (let s = 0; s < this.sintCount; s++) this.settle(s);
  }

  post(sint: number, message: ModelMessage): void {
    this.waiting[sint].push(message);
    this.settle(sint);
  }

  consume(sint: number): ModelMessage | null {
    const m = this.slot[sint];
    this.slot[sint] = null;
    // A compliant guest's EOM (or any later retry) refills every free slot.
    this.settleAll();
    return m;
  }

  setMasked(sint: number, masked: boolean): void {
    this.masked[sint] = masked;
    if (!masked) this.settle(sint);
  }

  setPolling(sint: number, polling: boolean): void {
    this.polling[sint] = polling;
  }

  setSimpEnabled(enabled: boolean): void {
    this.simpEnabled = enabled;
    if (enabled) this.settleAll();
  }
}

class SynicMismatch extends Error {}

function check(cond: boolean, what: string): void {
  if (!cond) throw new SynicMismatch(what);
}

function sameMessage(slot: SlotContent | null, m: ModelMessage | null, what: string): void {
  if (m === null) {
    check(slot === null, `${what}: expected an empty slot, found type ${slot?.type}`);
    return;
  }
  check(slot !== null, `${what}: expected type ${m.type}, found an empty slot`);
  check(slot!.type === m.type, `${what}: type ${slot!.type} != ${m.type}`);
  const got = slot!.payload.subarray(0, m.payload.length);
  check(slot!.payload.length === m.payload.length && got.every((b, i) => b === m.payload[i]), `${what}: payload differs`);
}

/** Checks every SINT's slot, pending flag and interrupt count against the model. */
function checkAll(model: SynicSlotModel, real: SynicSystem): void {
  for (let s = 0; s < model.sintCount; s++) {
    const slot = model.simpEnabled ? real.readSlot(s) : null;
    if (model.simpEnabled) {
      sameMessage(slot, model.slot[s], `SINT ${s}`);
      if (slot) {
        const waiting = model.waiting[s].length > 0;
        if (!model.masked[s])
          check(slot.pending === waiting, `SINT ${s}: msg_pending ${slot.pending} with ${model.waiting[s].length} waiting`);
        else check(!slot.pending || waiting, `SINT ${s}: msg_pending set with nothing waiting`);
      }
    }
    check(real.interrupts(s) === model.interrupts[s], `SINT ${s}: ${real.interrupts(s)} interrupts, model ${model.interrupts[s]}`);
  }
}

type Cmd = fc.Command<SynicSlotModel, SynicSystem>;

const command = (
  name: string,
  run: (m: SynicSlotModel, r: SynicSystem) => void,
  when: (m: Readonly<SynicSlotModel>) => boolean = () => true,
): Cmd => ({
  check: when,
  run(m, r) {
    run(m, r);
    checkAll(m, r);
  },
  toString: () => name,
});

/** Message-slot commands over `sintCount` SINTs (SINT numbers 0..sintCount-1). */
export function synicSlotCommands(sintCount = 4, options: { maxCommands?: number } = {}): fc.Arbitrary<Iterable<Cmd>> {
  const sint = fc.integer({ min: 0, max: sintCount - 1 });
  const message = fc.record({
    type: fc.integer({ min: 1, max: 0x7fffffff }),
    payload: fc.uint8Array({ maxLength: 240 }),
  });
  return fc.commands(
    [
      fc.tuple(sint, message).map(([s, msg]) =>
        command(`post(${s}, type ${msg.type}, ${msg.payload.length}B)`, (m, r) => {
          m.post(s, msg);
          r.post(s, msg.type, msg.payload);
        }),
      ),
      fc.tuple(sint, message).map(([s, msg]) =>
        command(`post(${s}) x2`, (m, r) => {
          m.post(s, msg);
          r.post(s, msg.type, msg.payload);
          m.post(s, msg);
          r.post(s, msg.type, msg.payload);
        }),
      ),
      sint.map((s) =>
        command(
          `consume(${s})`,
          (m, r) => {
            sameMessage(r.readSlot(s), m.slot[s], `consume(${s})`);
            m.consume(s);
            r.consumeSlot(s);
          },
          (m) => m.simpEnabled,
        ),
      ),
      fc.tuple(sint, fc.boolean()).map(([s, masked]) =>
        command(`${masked ? 'mask' : 'unmask'}(${s})`, (m, r) => {
          m.setMasked(s, masked);
          r.setMasked(s, masked);
        }),
      ),
      fc.tuple(sint, fc.boolean()).map(([s, polling]) =>
        command(`polling(${s}, ${polling})`, (m, r) => {
          m.setPolling(s, polling);
          r.setPolling(s, polling);
        }),
      ),
      fc.boolean().map((on) =>
        command(`simp(${on})`, (m, r) => {
          m.setSimpEnabled(on);
          r.setSimpEnabled(on);
        }),
      ),
      fc.constant(command('spurious EOM', (_m, r) => r.spuriousEom())),
    ],
    { maxCommands: options.maxCommands ?? 80 },
  );
}

/** The property: any command sequence keeps `makeSystem()` in agreement with the model. */
export function synicSlotProperty(makeSystem: () => SynicSystem, sintCount = 4): fc.IPropertyWithHooks<[Iterable<Cmd>]> {
  return fc.property(synicSlotCommands(sintCount), (cmds) => {
    fc.modelRun(() => ({ model: new SynicSlotModel(sintCount), real: makeSystem() }), cmds);
  });
}
