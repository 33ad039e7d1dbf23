/** The KVP host API as a careless caller uses it: typed refusals, nothing sent to the guest. */
import { describe, expect, it } from 'vitest';
import { HostUsageError } from '@hvemu/common';
import { KVP_POOL_EXTERNAL, KvpService, type IcTransport } from '@hvemu/util';

function service(): { kvp: KvpService; sent: Uint8Array[] } {
  const sent: Uint8Array[] = [];
  const transport: IcTransport = { send: (p) => (sent.push(p), true) };
  return { kvp: new KvpService(transport), sent };
}

const anyValue = (v: unknown): never => v as never;

describe('KvpService at its API edge', () => {
  it.each([
    ['a pool that does not exist', (k: KvpService) => k.get(5, 'key')],
    ['a negative pool', (k: KvpService) => k.set(-1, { key: 'a', value: 'b' })],
    ['a fractional pool', (k: KvpService) => k.delete(0.5, 'a')],
    ['a key that is not a string', (k: KvpService) => k.get(KVP_POOL_EXTERNAL, anyValue(42))],
    ['a value that is not a string, u32 or u64', (k: KvpService) => k.set(KVP_POOL_EXTERNAL, { key: 'a', value: anyValue({}) })],
    ['a u32 value that does not fit', (k: KvpService) => k.set(KVP_POOL_EXTERNAL, { key: 'a', value: { u32: 2 ** 32 } })],
    ['a u64 value that is a number', (k: KvpService) => k.set(KVP_POOL_EXTERNAL, { key: 'a', value: anyValue({ u64: 5 }) })],
    ['a key longer than HV_KVP_EXCHANGE_MAX_KEY_SIZE', (k: KvpService) => k.get(KVP_POOL_EXTERNAL, 'k'.repeat(256))],
    ['an enumerate index that is not a u32', (k: KvpService) => k.enumerate(KVP_POOL_EXTERNAL, -1)],
    ['a list limit of NaN', (k: KvpService) => k.list(KVP_POOL_EXTERNAL, NaN)],
  ])('%s is a HostUsageError and sends nothing', async (_what, call) => {
    const { kvp, sent } = service();
    let thrown: unknown;
    try {
      await call(kvp);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(HostUsageError);
    expect(sent).toEqual([]);
  });
});
