import { describe, expect, it } from 'vitest';
import * as abi from '../src/backends/mshv/abi.js';

describe('MSHV ioctl numbers', () => {
  // The table of /work/shared/reference/mshv-whpx.md §1.2, which was written from mshv.h.
  it.each([
    ['MSHV_CREATE_PARTITION', abi.MSHV_CREATE_PARTITION, 0x4010b800],
    ['MSHV_INITIALIZE_PARTITION', abi.MSHV_INITIALIZE_PARTITION, 0x0000b800],
    ['MSHV_CREATE_VP', abi.MSHV_CREATE_VP, 0x4004b801],
    ['MSHV_SET_GUEST_MEMORY', abi.MSHV_SET_GUEST_MEMORY, 0x4020b802],
    ['MSHV_IRQFD', abi.MSHV_IRQFD, 0x4010b803],
    ['MSHV_IOEVENTFD', abi.MSHV_IOEVENTFD, 0x4020b804],
    ['MSHV_SET_MSI_ROUTING', abi.MSHV_SET_MSI_ROUTING, 0x4008b805],
    ['MSHV_GET_GPAP_ACCESS_BITMAP', abi.MSHV_GET_GPAP_ACCESS_BITMAP, 0xc020b806],
    ['MSHV_ROOT_HVCALL', abi.MSHV_ROOT_HVCALL, 0xc020b807],
    ['MSHV_RUN_VP', abi.MSHV_RUN_VP, 0x8100b800],
    ['MSHV_GET_VP_STATE', abi.MSHV_GET_VP_STATE, 0xc010b801],
    ['MSHV_SET_VP_STATE', abi.MSHV_SET_VP_STATE, 0xc010b802],
  ])('%s = 0x%s', (_name, value, expected) => {
    expect(value.toString(16)).toBe(expected.toString(16));
  });

  it('the _IOC encoder puts dir, size, type and nr where Linux does', () => {
    expect(abi.ioc(3, 0xb8, 0x07, 32)).toBe(0xc020b807);
    expect(() => abi.ioc(1, 0xb8, 0, 1 << 14)).toThrow(RangeError);
  });
});

describe('MSHV structures', () => {
  const offsets = (s: { rows: readonly (readonly [number, string, unknown])[] }) => Object.fromEntries(s.rows.map(([o, n]) => [n, o]));

  it('ioctl argument structs match mshv.h', () => {
    expect(abi.MshvCreatePartition.size).toBe(16);
    expect(abi.MshvCreateVp.size).toBe(4);
    expect(offsets(abi.MshvUserMemRegion)).toEqual({ size: 0, guestPfn: 8, userspaceAddr: 16, flags: 24, rsvd: 25 });
    expect(abi.MshvUserMemRegion.size).toBe(32);
    expect(offsets(abi.MshvRootHvcall)).toEqual({ code: 0, reps: 2, inSz: 4, outSz: 6, status: 8, rsvd: 10, inPtr: 16, outPtr: 24 });
    expect(abi.MshvRootHvcall.size).toBe(32);
    expect(offsets(abi.MshvUserIoeventfd)).toEqual({ datamatch: 0, addr: 8, len: 16, fd: 20, flags: 24, rsvd: 28 });
    expect(offsets(abi.MshvGetSetVpState)).toEqual({ type: 0, rsvd: 1, bufSz: 4, bufPtr: 8 });
    expect(abi.MshvGpapAccessBitmap.size).toBe(32);
  });

  it('hypercall inputs match hvgdk_mini.h / hvhdk.h', () => {
    expect(offsets(abi.HvInputSetPartitionProperty)).toEqual({ partitionId: 0, propertyCode: 8, padding: 12, propertyValue: 16 });
    expect(offsets(abi.HvInputInstallIntercept)).toEqual({ partitionId: 0, accessType: 8, interceptType: 12, interceptParameter: 16 });
    expect(offsets(abi.HvInputVpRegistersHeader)).toEqual({ partitionId: 0, vpIndex: 8, inputVtl: 12, rsvdZ8: 13, rsvdZ16: 14 });
    expect(offsets(abi.HvRegisterAssoc)).toEqual({ name: 0, reserved1: 4, reserved2: 8, valueLow: 16, valueHigh: 24 });
    expect(abi.HvInputAssertVirtualInterrupt.size).toBe(32);
    expect(offsets(abi.HvInputAssertVirtualInterrupt)).toMatchObject({ interruptType: 8, destAddr: 16, vector: 24, targetVtl: 28 });
    expect(offsets(abi.HvInputSignalEventDirect)).toEqual({
      targetPartition: 0,
      targetVp: 8,
      targetVtl: 12,
      targetSint: 13,
      flagNumber: 14,
    });
    expect(offsets(abi.HvInputPostMessageDirect)).toEqual({
      partitionId: 0,
      vpIndex: 8,
      vtl: 12,
      padding: 13,
      sintIndex: 16,
      message: 20,
      padding2: 276,
    });
    expect(abi.HvInputPostMessageDirect.size).toBe(280);
  });

  it('intercept messages match the x64 layouts (payload offsets)', () => {
    expect(abi.hv_message_header.size).toBe(16);
    expect(offsets(abi.HvX64InterceptHeader)).toEqual({
      vpIndex: 0,
      lengthAndCr8: 4,
      interceptAccessType: 5,
      executionState: 6,
      cs: 8,
      rip: 24,
      rflags: 32,
    });
    expect(abi.HvX64IoPortInterceptMessage.size).toBe(128);
    expect(offsets(abi.HvX64IoPortInterceptMessage)).toMatchObject({
      portNumber: 40,
      accessInfo: 42,
      instructionByteCount: 43,
      rax: 48,
      instructionBytes: 56,
      ds: 72,
      es: 88,
      rcx: 104,
      rsi: 112,
      rdi: 120,
    });
    expect(abi.HvX64MemoryInterceptMessage.size).toBe(80);
    expect(offsets(abi.HvX64MemoryInterceptMessage)).toMatchObject({
      cacheType: 40,
      instructionByteCount: 44,
      memoryAccessInfo: 45,
      guestVirtualAddress: 48,
      guestPhysicalAddress: 56,
      instructionBytes: 64,
    });
    expect(offsets(abi.HvX64MsrInterceptMessage)).toMatchObject({ msrNumber: 40, rdx: 48, rax: 56 });
    expect(abi.HvX64CpuidInterceptMessage.size).toBe(104);
    expect(offsets(abi.HvX64HypercallInterceptMessage)).toMatchObject({
      rax: 40,
      rbx: 48,
      rcx: 56,
      rdx: 64,
      r8: 72,
      rsi: 80,
      rdi: 88,
      xmmRegisters: 96,
      flags: 192,
    });
    expect(abi.HvX64ExceptionInterceptMessage.size).toBe(240);
    expect(offsets(abi.HvX64SintDeliverableMessage)).toMatchObject({ deliverableSints: 40 });
    for (const s of [
      abi.HvX64IoPortInterceptMessage,
      abi.HvX64MemoryInterceptMessage,
      abi.HvX64HypercallInterceptMessage,
      abi.HvX64ExceptionInterceptMessage,
    ]) {
      expect(s.size).toBeLessThanOrEqual(abi.HV_MESSAGE_PAYLOAD_BYTE_COUNT);
    }
  });
});

describe('MSHV constants', () => {
  it('synthetic processor features: the hvhdk.h bits hvemu asks for', () => {
    const mask = abi.syntheticFeatureMask(abi.DEFAULT_SYNTHETIC_FEATURES);
    // present 0, hv1 1, vp runtime 2, ref counter 3, synic 4, stimers 5, intr ctrl 6, hypercall 7,
    // vp index 8, ref tsc 9, frequency 11, direct stimers 22, signal events 29.
    expect(mask).toBe(0b1111_1111_11n | (1n << 11n) | (1n << 22n) | (1n << 29n));
  });

  it('#GP as a pending exception: pending | type 3 | error code valid | vector 13', () => {
    expect(abi.pendingException(13, 0)).toBe(0xd0017n);
    expect(abi.pendingException(14, 2)).toBe(0x2_000e_0017n);
  });

  it('register and message numbers', () => {
    expect(abi.HvX64Register.rax).toBe(0x20000);
    expect(abi.HvX64Register.rbx).toBe(0x20003);
    expect(abi.HvX64Register.rip).toBe(0x20010);
    expect(abi.HV_X64_REGISTER_DELIVERABILITY_NOTIFICATIONS).toBe(0x10006);
    expect(abi.HvMessageType.x64IoPortIntercept).toBe(0x80010000);
    expect(abi.HvMessageType.synicSintDeliverable).toBe(0x80000062);
    expect(abi.HVCALL_POST_MESSAGE_DIRECT).toBe(0xc1);
    expect(abi.HV_STATUS_INSUFFICIENT_BUFFERS).toBe(0x13);
  });
});
