import { describe, expect, it } from 'vitest';
import { ConnectionRegistry, hypercallPageCode } from '@hvemu/hypercalls';

describe('hypercall page with a signal doorbell', () => {
  it('checks for fast HvSignalEvent flag 0, writes the doorbell, keeps the exit path', () => {
    const code = hypercallPageCode({ port: 0x99, doorbellPort: 0x98 });
    expect(Array.from(code.subarray(0, 7))).toEqual([0x48, 0x81, 0xf9, 0x5d, 0x00, 0x01, 0x00]); // cmp rcx, 0x1005d
    expect(Array.from(code.subarray(20, 22))).toEqual([0xe7, 0x98]); // out 0x98, eax
    expect(Array.from(code.subarray(code.length - 3))).toEqual([0xe6, 0x99, 0xc3]); // slow: out 0x99, al; ret
    // Both branches to the slow path land on it.
    expect(9 + code[8]).toBe(code.length - 3);
    expect(18 + code[17]).toBe(code.length - 3);
  });

  it('refuses a doorbell port equal to the hypercall port or out of imm8 range', () => {
    expect(() => hypercallPageCode({ port: 0x99, doorbellPort: 0x99 })).toThrow();
    expect(() => hypercallPageCode({ port: 0x99, doorbellPort: 0x100 })).toThrow(/0-255/);
  });
});

describe('event connection watchers', () => {
  it('sees existing and new connections, and removals of the registration it saw', () => {
    const reg = new ConnectionRegistry();
    reg.registerEvent(1, { onSignal: () => 0 });
    const seen: string[] = [];
    reg.watchEvents({ added: (id) => seen.push(`+${id}`), removed: (id) => seen.push(`-${id}`) });
    const off = reg.registerEvent(2, { onSignal: () => 0 });
    off();
    off(); // idempotent
    reg.registerEvent(2, { onSignal: () => 0 });
    off(); // a stale unregister does not remove the new registration
    expect(seen).toEqual(['+1', '+2', '-2', '+2']);
    expect(reg.event(2)).toBeDefined();
  });
});
