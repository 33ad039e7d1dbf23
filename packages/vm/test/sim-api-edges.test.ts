/** SimulatedVm as a careless caller builds it: typed refusals before anything is allocated. */
import { describe, expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { SimulatedVm } from '@hvemu/vm';

const anyValue = (v: unknown): never => v as never;

describe('SimulatedVm at its API edge', () => {
  it.each([
    [{ vpCount: 0 }, 'vpCount 0'],
    [{ vpCount: -1 }, 'vpCount -1'],
    [{ vpCount: 1e9 }, 'vpCount 1000000000'],
    [{ ramBytes: 5 }, 'ramBytes 5'],
    [{ ramBytes: 0 }, 'ramBytes 0'],
    [{ ramBytes: 2 ** 52 }, 'ramBytes 4503599627370496'],
    [{ ramBytes: 4096 }, 'ramBytes 4096'],
    [{ clock: {} }, 'clock must have a now() method'],
    [{ logger: 'x' }, 'logger'],
    [{ onEvent: 3 }, 'onEvent'],
  ])('%j is refused: %s', (options, named) => {
    expect(() => new SimulatedVm(anyValue(options))).toThrow(HostUsageError);
    expect(() => new SimulatedVm(anyValue(options))).toThrow(named);
  });

  it('null options are refused; no options build the default VM', () => {
    expect(() => new SimulatedVm(anyValue(null))).toThrow(HostUsageError);
    expect(new SimulatedVm().memory.ramSize).toBe(16 << 20);
  });

  it('asking the guest for a channel it never opened is a HostUsageError', () => {
    expect(() => new SimulatedVm().guest.endpoint('heartbeat')).toThrow(HostUsageError);
  });
});
