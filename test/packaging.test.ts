/**
 * The packages as a user gets them: every workspace packed with `npm pack`, the tarballs
 * installed together into an empty project (the native addon built there from the packed
 * sources), a consumer that imports every package type-checked with strict tsc (library types
 * included) and run, and the `hvemu` bin run. This is how the README says the packages are
 * consumed: as one set at one exact version.
 */
import { execFileSync, type ExecFileSyncOptions } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'hvemu-pack-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
function run(cmd: string, args: string[], opts: ExecFileSyncOptions = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts }) as string;
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
  }
}

const CONSUMER = `
import { HostUsageError, ManualClock } from '@hvemu/common';
import { GuestMemory } from '@hvemu/memory';
import { KvmPartition, probeGuestCpuid } from '@hvemu/accel';
import { TestPlatform } from '@hvemu/platform';
import { HyperV } from '@hvemu/synic';
import { HypercallDispatcher } from '@hvemu/hypercalls';
import { VmbusHost } from '@hvemu/vmbus';
import { createTestRing, ringGeometry } from '@hvemu/vmbus/testing';
import { FakeMshvSys, FakeWhpxApi } from '@hvemu/accel/testing';
import { KvpService } from '@hvemu/util';
import { NetvspDevice, createPortPair } from '@hvemu/net';
import { NetvscClient, frameArbitrary } from '@hvemu/net/testing';
import { ScsiDisk } from '@hvemu/storage';
import { DiskModel } from '@hvemu/storage/testing';
import { TraceRecorder } from '@hvemu/trace';
import { SimulatedVm } from '@hvemu/vm';

const vm = new SimulatedVm({ clock: new ManualClock() });
const parts: [GuestMemory, HyperV, HypercallDispatcher, VmbusHost] = [vm.memory, vm.hyperv, vm.hypercalls, vm.vmbus];
void [NetvscClient, frameArbitrary, new NetvspDevice({ backend: createPortPair()[0], mac: '00:15:5d:00:00:01' }).offer, createTestRing, ringGeometry, KvpService, ScsiDisk, DiskModel, TraceRecorder, probeGuestCpuid, KvmPartition, FakeMshvSys, FakeWhpxApi, TestPlatform];
let refused = false;
try {
  new SimulatedVm({ vpCount: 0 });
} catch (e) {
  refused = e instanceof HostUsageError;
}
console.log(JSON.stringify({ ram: parts[0].ramSize, refused, addon: typeof KvmPartition.probe().ok }));
`;

describe('the packed package set', () => {
  it('installs from its tarballs alone, type-checks strictly, runs, and has a working hvemu bin', () => {
    const tarballs = join(work, 'tgz');
    const app = join(work, 'app');
    mkdirSync(tarballs);
    mkdirSync(app);
    run(npm, ['pack', '--workspaces', '--pack-destination', tarballs, '--silent'], { cwd: repo });
    const packed = readdirSync(tarballs).filter((f) => f.endsWith('.tgz'));
    expect(packed.sort()).toEqual(
      readdirSync(join(repo, 'packages'))
        .map((p) => `hvemu-${p}-0.1.0.tgz`)
        .sort(),
    );

    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    // Only the tarballs and their third-party dependencies (from npm's cache where it has them).
    run(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', '@types/node@20', ...packed.map((f) => join(tarballs, f))], {
      cwd: app,
    });

    writeFileSync(join(app, 'consumer.ts'), CONSUMER);
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          outDir: 'out',
          skipLibCheck: false,
          types: ['node'],
        },
        files: ['consumer.ts'],
      }),
    );
    run(process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-p', '.'], { cwd: app });
    expect(JSON.parse(run(process.execPath, ['out/consumer.js'], { cwd: app }))).toEqual({
      ram: 16 << 20,
      refused: true,
      addon: 'boolean',
    });
    expect(run(join(app, 'node_modules/.bin/hvemu'), ['help'], { cwd: app })).toContain('usage: hvemu');
  }, 300_000);
});
