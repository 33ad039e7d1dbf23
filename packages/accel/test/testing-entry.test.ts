import { describe, expect, it } from 'vitest';
import * as main from '../src/index.js';
import * as testing from '../src/testing/index.js';

describe('@hvemu/accel/testing', () => {
  it('holds the fake hypervisor layers; the main entry does not', () => {
    expect(typeof testing.FakeMshvSys).toBe('function');
    expect(typeof testing.FakeWhpxApi).toBe('function');
    expect(typeof testing.whpxBlankExitContext).toBe('function');
    for (const name of ['FakeMshvSys', 'FakeWhpxApi', 'whpxBlankExitContext']) expect(Object.keys(main)).not.toContain(name);
  });
});
