import { describe, expect, it } from 'vitest';
import * as abi from '../src/backends/whpx/abi.js';
import type { StructLayout } from '@hvemu/common';

// Expected values are written out from WinHvPlatformDefs.h (MicrosoftDocs/Virtualization-
// Documentation @77e0742a), not derived from the tables under test.

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function layout(s: StructLayout<any>): Record<string, number> {
  return { ...s.offsetOf, sizeof: s.size };
}

describe('WHPX constants', () => {
  it('capability and partition property codes', () => {
    expect(abi.WHvCapabilityCode).toEqual({
      HypervisorPresent: 0,
      Features: 1,
      ExtendedVmExits: 2,
      X64MsrExitBitmap: 4,
      ProcessorVendor: 0x1000,
      SyntheticProcessorFeaturesBanks: 0x1008,
      PhysicalAddressWidth: 0x100a,
      GicLpiIntIdBits: 0x2011,
    });
    expect(abi.WHvPartitionPropertyCode).toEqual({
      ExtendedVmExits: 1,
      ExceptionExitBitmap: 2,
      X64MsrExitBitmap: 5,
      CpuidExitList: 0x1003,
      LocalApicEmulationMode: 0x1005,
      MsrActionList: 0x100f,
      SyntheticProcessorFeaturesBanks: 0x100c,
      Arm64IcParameters: 0x1012,
      ProcessorCount: 0x1fff,
    });
    expect(abi.LocalApicEmulationMode.X2Apic).toBe(2);
    expect(abi.CAPABILITY_FEATURE_ARM64_SUPPORT).toBe(0x800n);
    expect(abi.CAPABILITY_FEATURE_LOCAL_APIC_EMULATION).toBe(0x2n);
  });

  it('extended VM exit and MSR exit bitmap bits', () => {
    expect(abi.ExtendedVmExit).toMatchObject({
      X64CpuidExit: 0,
      X64MsrExit: 1,
      ExceptionExit: 2,
      HypercallExit: 5,
      UnknownSynicConnection: 10,
      RetargetUnknownVpciDevice: 11,
      GpaAccessFaultExit: 14,
    });
    expect(abi.X64MsrExitBitmap.UnhandledMsrs).toBe(0);
    expect(abi.MsrAction).toEqual({ ArchitectureDefault: 0, IgnoreWriteReadZero: 1, Exit: 2 });
  });

  it('synthetic processor features bank 0 bit numbers', () => {
    expect(abi.SyntheticFeature).toMatchObject({
      HypervisorPresent: 0,
      Hv1: 1,
      AccessVpRunTimeReg: 2,
      AccessPartitionReferenceCounter: 3,
      AccessSynicRegs: 4,
      AccessSyntheticTimerRegs: 5,
      AccessIntrCtrlRegs: 6,
      AccessHypercallRegs: 7,
      AccessVpIndex: 8,
      AccessPartitionReferenceTsc: 9,
      AccessGuestIdleReg: 10,
      AccessFrequencyRegs: 11,
      FastHypercallOutput: 18,
      DirectSyntheticTimers: 22,
      SignalEvents: 29,
      SyncContext: 39,
    });
    // HypervisorPresent|Hv1|VpRunTime|RefCounter|Synic|STimer|IntrCtrl|Hypercall|VpIndex|RefTsc (bits 0-9) + 18 + 22 + 29
    expect(abi.syntheticFeatureMask(abi.DEFAULT_SYNTHETIC_FEATURES, 'x64')).toBe(0x3ffn | (1n << 18n) | (1n << 22n) | (1n << 29n));
    expect(abi.syntheticFeatureMask(['AccessGuestIdleReg', 'SyncContext'], 'x64')).toBe(1n << 10n);
    expect(abi.syntheticFeatureMask(['AccessGuestIdleReg', 'SyncContext'], 'arm64')).toBe(1n << 39n);
  });

  it('register names: x64 WHP numbering, arm64 HV numbering', () => {
    expect(abi.WHvX64Register).toMatchObject({
      rax: 0,
      rcx: 1,
      rdx: 2,
      rbx: 3,
      rsp: 4,
      rbp: 5,
      rsi: 6,
      rdi: 7,
      r8: 8,
      r15: 15,
      rip: 0x10,
      rflags: 0x11,
    });
    expect(abi.WHvX64SegmentRegister).toEqual({ es: 0x12, cs: 0x13, ss: 0x14, ds: 0x15, fs: 0x16, gs: 0x17, ldt: 0x18, tr: 0x19 });
    expect([abi.WHvX64RegisterIdtr, abi.WHvX64RegisterGdtr, abi.WHvX64RegisterCr0, abi.WHvX64RegisterCr8]).toEqual([
      0x1a, 0x1b, 0x1c, 0x20,
    ]);
    expect([abi.WHvX64RegisterXmm0, abi.WHvX64RegisterEfer, abi.WHvX64RegisterApicBase]).toEqual([0x1000, 0x2001, 0x2003]);
    expect([abi.WHvRegisterPendingInterruption, abi.WHvRegisterPendingEvent, abi.WHvX64RegisterDeliverabilityNotifications]).toEqual([
      0x80000000, 0x80000002, 0x80000004,
    ]);
    expect([abi.arm64X(0), abi.arm64X(17), abi.arm64X(28)]).toEqual([0x20000, 0x20011, 0x2001c]);
    expect([abi.WHvArm64RegisterSp, abi.WHvArm64RegisterPc, abi.WHvArm64RegisterPstate]).toEqual([0x2001f, 0x20022, 0x20023]);
    expect([abi.WHvArm64RegisterGicrBaseGpa, abi.WHvArm64RegisterDeliverabilityNotifications]).toEqual([0x63000, 0x10006]);
    expect(abi.deliverabilityRegister('x64')).toBe(0x80000004);
    expect(abi.deliverabilityRegister('arm64')).toBe(0x10006);
    expect(abi.DELIVERABILITY_SINT_SHIFT).toBe(48n);
  });

  it('exit reasons, x64 and arm64', () => {
    expect(abi.WHvRunVpExitReasonX64).toEqual({
      None: 0,
      MemoryAccess: 1,
      X64IoPortAccess: 2,
      UnrecoverableException: 4,
      InvalidVpRegisterValue: 5,
      UnsupportedFeature: 6,
      X64InterruptWindow: 7,
      X64Halt: 8,
      X64ApicEoi: 9,
      SynicSintDeliverable: 0xa,
      X64MsrAccess: 0x1000,
      X64Cpuid: 0x1001,
      Exception: 0x1002,
      X64Rdtsc: 0x1003,
      X64ApicSmiTrap: 0x1004,
      Hypercall: 0x1005,
      X64ApicInitSipiTrap: 0x1006,
      X64ApicWriteTrap: 0x1007,
      Canceled: 0x2001,
    });
    expect(abi.WHvRunVpExitReasonArm64).toEqual({
      None: 0,
      UnmappedGpa: 0x80000000,
      GpaIntercept: 0x80000001,
      InvalidVpRegisterValue: 0x80000020,
      UnrecoverableException: 0x80000021,
      UnsupportedFeature: 0x80000022,
      Hypercall: 0x80000050,
      SynicSintDeliverable: 0x80000062,
      RegisterIntercept: 0x80010006,
      Arm64Reset: 0x8001000c,
      Canceled: 0xffffffff,
    });
    expect(abi.RUN_VP_EXIT_CONTEXT_SIZE).toEqual({ x64: 224, arm64: 272 });
  });

  it('HRESULTs: ERROR_HV_OBJECT_IN_USE carries HV status 0x19', () => {
    expect(abi.ERROR_HV_OBJECT_IN_USE).toBe(0xc0350019);
    expect(abi.hvStatusOf(0xc0350019)).toBe(0x19);
    expect(abi.hvStatusOf(0x80350019)).toBe(0x19); // severity bits are ignored
    expect(abi.hvStatusOf(abi.E_INVALIDARG)).toBeUndefined();
    expect(abi.failed(0xc0350019)).toBe(true);
    expect(abi.failed(0)).toBe(false);
    expect(abi.formatHresult(abi.WHV_E_UNKNOWN_PROPERTY)).toBe('0x80370302');
  });

  it('pending exception event for #GP(0): EventPending, DeliverErrorCode, vector 13', () => {
    expect(abi.pendingExceptionEvent(13, 0)).toBe(0x000d_0101n);
    expect(abi.pendingExceptionEvent(6, undefined)).toBe(0x0006_0001n);
    expect(abi.pendingExceptionEvent(13, 0x28)).toBe(0x28_000d_0101n);
  });
});

describe('WHPX structure layouts', () => {
  it('x64 exit context head and VpContext', () => {
    expect(layout(abi.WhvRunVpExitContextX64Head)).toEqual({
      exitReason: 0,
      reserved: 4,
      executionState: 8,
      instructionLengthCr8: 10,
      reserved1: 11,
      reserved2: 12,
      csBase: 16,
      csLimit: 24,
      csSelector: 28,
      csAttributes: 30,
      rip: 32,
      rflags: 40,
      sizeof: 48,
    });
    expect([abi.X64_UNION_OFFSET, abi.X64_UNION_SIZE, abi.X64_UNION_OFFSET + abi.X64_UNION_SIZE]).toEqual([48, 176, 224]);
    expect([abi.ARM64_UNION_OFFSET, abi.ARM64_UNION_SIZE, abi.ARM64_UNION_OFFSET + abi.ARM64_UNION_SIZE]).toEqual([16, 256, 272]);
  });

  it('x64 union members', () => {
    expect(layout(abi.WhvMemoryAccessContextX64)).toEqual({
      instructionByteCount: 0,
      reserved: 1,
      instructionBytes: 4,
      accessInfo: 20,
      gpa: 24,
      gva: 32,
      sizeof: 40,
    });
    expect(layout(abi.WhvX64IoPortAccessContext)).toEqual({
      instructionByteCount: 0,
      reserved: 1,
      instructionBytes: 4,
      accessInfo: 20,
      portNumber: 24,
      reserved2: 26,
      rax: 32,
      rcx: 40,
      rsi: 48,
      rdi: 56,
      ds: 64,
      es: 80,
      sizeof: 96,
    });
    expect(layout(abi.WhvX64MsrAccessContext)).toEqual({ accessInfo: 0, msrNumber: 4, rax: 8, rdx: 16, sizeof: 24 });
    expect(layout(abi.WhvX64CpuidAccessContext)).toMatchObject({
      rax: 0,
      rcx: 8,
      rdx: 16,
      rbx: 24,
      defaultResultRax: 32,
      defaultResultRcx: 40,
      defaultResultRdx: 48,
      defaultResultRbx: 56,
      sizeof: 64,
    });
    expect(layout(abi.WhvVpExceptionContext)).toMatchObject({
      exceptionInfo: 20,
      exceptionType: 24,
      errorCode: 28,
      exceptionParameter: 32,
      sizeof: 40,
    });
    expect(layout(abi.WhvX64HypercallContext)).toEqual({
      rax: 0,
      rbx: 8,
      rcx: 16,
      rdx: 24,
      r8: 32,
      rsi: 40,
      rdi: 48,
      reserved0: 56,
      xmmRegisters: 64,
      reserved1: 160,
      sizeof: 176,
    });
    expect(layout(abi.WhvSynicSintDeliverableContextX64)).toEqual({ deliverableSints: 0, reserved1: 2, reserved2: 4, sizeof: 8 });
    expect(layout(abi.WhvX64UnsupportedFeatureContext)).toEqual({ featureCode: 0, reserved: 4, featureParameter: 8, sizeof: 16 });
    expect([abi.WhvX64ApicEoiContext.size, abi.WhvRunVpCanceledContext.size, abi.WhvX64InterruptionDeliverableContext.size]).toEqual([
      4, 4, 4,
    ]);
    expect(layout(abi.WhvX64SegmentRegister)).toEqual({ base: 0, limit: 8, selector: 12, attributes: 14, sizeof: 16 });
    expect(layout(abi.WhvX64TableRegister)).toEqual({ pad: 0, limit: 6, base: 8, sizeof: 16 });
  });

  it('arm64 union members (hypervisor intercept messages)', () => {
    expect(layout(abi.WhvInterceptMessageHeaderArm64)).toEqual({
      vpIndex: 0,
      instructionLength: 4,
      interceptAccessType: 5,
      executionState: 6,
      pc: 8,
      cpsr: 16,
      sizeof: 24,
    });
    expect(layout(abi.WhvMemoryAccessContextArm64)).toMatchObject({
      reserved0: 24,
      instructionByteCount: 28,
      accessInfo: 29,
      reserved1: 30,
      instructionBytes: 32,
      reserved2: 36,
      gva: 40,
      gpa: 48,
      syndrome: 56,
      sizeof: 64,
    });
    expect(layout(abi.WhvArm64HypercallContext)).toMatchObject({ immediate: 24, reserved1: 26, reserved2: 28, x: 32, sizeof: 176 });
    expect(layout(abi.WhvSynicSintDeliverableContextArm64)).toMatchObject({ deliverableSints: 24, sizeof: 32 });
    expect(layout(abi.WhvArm64ResetContext)).toMatchObject({ resetType: 24, reserved: 28, sizeof: 32 });
    expect(layout(abi.WhvRegisterContextArm64)).toMatchObject({ isMemoryOp: 24, registerName: 28, accessInfo: 32, sizeof: 48 });
    expect(layout(abi.WhvInvalidVpRegisterContext)).toEqual({ vpIndex: 0, reserved: 4, sizeof: 8 });
    expect(layout(abi.WhvRunVpExitContextArm64Head)).toEqual({ exitReason: 0, reserved: 4, reserved1: 8, sizeof: 16 });
  });

  it('inputs: interrupt control (x64 16, arm64 32), SynIC event parameters, feature banks, GIC parameters (64), MSR action entries', () => {
    expect(layout(abi.WhvInterruptControlX64)).toEqual({ control: 0, destination: 8, vector: 12, sizeof: 16 });
    expect(layout(abi.WhvInterruptControlArm64)).toEqual({
      targetPartition: 0,
      interruptControl: 8,
      destinationAddress: 16,
      requestedVector: 24,
      targetVtl: 28,
      reservedZ0: 29,
      reservedZ1: 30,
      sizeof: 32,
    });
    expect(abi.ARM64_INTERRUPT_ASSERTED).toBe(0x4_0000_0000n); // WHV_INTERRUPT_CONTROL2: u32 type, 2 reserved bits, Asserted
    expect(layout(abi.WhvSynicEventParameters)).toEqual({ vpIndex: 0, targetSint: 4, targetVtl: 5, flagNumber: 6, sizeof: 8 });
    expect(layout(abi.WhvSyntheticProcessorFeaturesBanks)).toEqual({ banksCount: 0, reserved0: 4, bank0: 8, sizeof: 16 });
    expect(layout(abi.WhvArm64IcParameters)).toEqual({
      emulationMode: 0,
      reserved: 4,
      gicdBaseAddress: 8,
      gitsTranslaterBaseAddress: 16,
      reserved0: 24,
      gicLpiIntIdBits: 28,
      gicPpiOverflowInterruptFromCntv: 32,
      gicPpiPerformanceMonitorsInterrupt: 36,
      reserved1: 40,
      sizeof: 64,
    });
    expect(layout(abi.WhvMsrActionEntry)).toEqual({ index: 0, readAction: 4, writeAction: 5, reserved: 6, sizeof: 8 });
  });
});

describe('WHPX koffi prototypes', () => {
  it('every WinHvPlatform.dll prototype parses in koffi (no DLL needed)', async () => {
    const { default: koffi } = await import('koffi');
    const { PROTOTYPES } = await import('../src/backends/whpx/api.js');
    expect(PROTOTYPES.length).toBe(15);
    for (const p of PROTOTYPES) expect(() => koffi.proto(p.replace(/ (WHv\w+)\(/, ' hvemu_$1(')), p).not.toThrow();
    const params = koffi.struct({ VpIndex: 'uint32_t', TargetSint: 'uint8_t', TargetVtl: 'uint8_t', FlagNumber: 'uint16_t' });
    expect([koffi.sizeof(params), koffi.offsetof(params, 'TargetVtl'), koffi.offsetof(params, 'FlagNumber')]).toEqual([8, 5, 6]);
  });
});
