/**
 * The part of run() the TypeScript-driven backends (MSHV, WHPX) share: check the request,
 * run each vCPU's loop, resolve with every outcome or reject with the first vCPU's error.
 */
import { AccelUsageError } from '../errors.js';
import type { VcpuOutcome } from './types.js';

export function runVcpus<V>(
  state: { closed: boolean; running: Promise<VcpuOutcome[]> | undefined },
  vcpus: readonly V[],
  vps: readonly number[] | undefined,
  runOne: (vcpu: V) => Promise<VcpuOutcome>,
): { started: Promise<VcpuOutcome[]> | undefined; result: Promise<VcpuOutcome[]> } {
  if (state.closed) return { started: undefined, result: Promise.reject(new AccelUsageError('partition is closed')) };
  if (state.running) return { started: undefined, result: Promise.reject(new AccelUsageError('partition is already running')) };
  if (vps !== undefined && !Array.isArray(vps))
    return { started: undefined, result: Promise.reject(new AccelUsageError('run(vps): vps must be an array of vCPU indices')) };
  const list = vps ?? vcpus.map((_, i) => i);
  // Integers only: vcpus['0'] would find vCPU 0 and slip past the duplicate check below.
  for (const i of list as unknown[]) {
    if (typeof i !== 'number' || !Number.isInteger(i) || !vcpus[i])
      return { started: undefined, result: Promise.reject(new AccelUsageError(`no vCPU ${String(i)}`)) };
  }
  // Two loops on one VP would run it twice at once and apply each exit's completion twice.
  if (new Set(list).size !== list.length)
    return { started: undefined, result: Promise.reject(new AccelUsageError(`vCPU list ${list.join(',')} names a vCPU twice`)) };
  const started = Promise.all(list.map((i) => runOne(vcpus[i])));
  const result = started.then((outcomes) => {
    const failed = outcomes.find((o) => o.error);
    if (failed) throw failed.error;
    return outcomes;
  });
  return { started, result };
}
