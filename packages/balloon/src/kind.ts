/**
 * The balloon as a registrable device kind: the VM builder, the CLI (`--balloon`) and replay
 * build it by name. The memory port comes from the VM (a partition's memoryControl through
 * `balloonMemory(memory, control)`), so the spec carries it, or a function that makes it.
 */
import type { DeviceKind } from '@hvemu/vmbus';
import { BalloonDevice, type BalloonOptions } from './device.js';
import type { BalloonMemory } from './memory.js';
import { DEFAULT_DM_INSTANCE, HV_DM_GUID } from './protocol.js';

/** The kind name the balloon is offered (and traced) under. */
export const BALLOON_KIND = 'balloon';

export interface BalloonSpec extends Omit<BalloonOptions, 'memory' | 'logger'> {
  /** The RAM the balloon works on, or a function that makes it when the device is built. */
  readonly memory: BalloonMemory | (() => BalloonMemory);
}

export function createBalloon(spec: BalloonSpec, logger?: BalloonOptions['logger']): BalloonDevice {
  const memory = typeof spec.memory === 'function' ? spec.memory() : spec.memory;
  return new BalloonDevice({ ...spec, memory, logger });
}

/** A DeviceKind offering the balloon over `spec.memory` (register it on a DeviceRegistry). */
export function balloonDeviceKind(spec: BalloonSpec, name = BALLOON_KIND): DeviceKind<BalloonDevice> {
  return {
    name,
    offer: { interfaceType: HV_DM_GUID, interfaceInstance: spec.instanceId ?? DEFAULT_DM_INSTANCE },
    create: (env) => createBalloon(spec, env.logger),
  };
}
