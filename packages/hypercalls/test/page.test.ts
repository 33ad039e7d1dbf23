import { describe, expect, it } from 'vitest';
import { hypercallPage, hypercallPageCode } from '@hvemu/hypercalls';

describe('hypercall page', () => {
  it('is out imm8,%al; ret, padded with int3', () => {
    expect(Array.from(hypercallPageCode({ port: 0x99 }))).toEqual([0xe6, 0x99, 0xc3]);
    const page = hypercallPage({ port: 0x99 });
    expect(page.length).toBe(4096);
    expect(page[3]).toBe(0xcc);
    expect(page[4095]).toBe(0xcc);
  });

  it('refuses ports the imm8 form cannot name', () => {
    expect(() => hypercallPageCode({ port: 0x100 })).toThrow(/0-255/);
    expect(() => hypercallPageCode({ port: -1 })).toThrow();
  });
});
