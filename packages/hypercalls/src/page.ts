/**
 * Contents of the hypercall page the guest enables through HV_X64_MSR_HYPERCALL, for
 * accelerators without Hyper-V support (KVM here): instead of VMCALL, which KVM would take as
 * one of its own paravirtual calls, the page holds an exiting sequence the accelerator turns
 * into a "hypercall" exit carrying RCX/RDX/R8, and the handler's answer lands in RAX.
 *
 *   out  imm8, %al     ; E6 ib: a byte OUT to the accelerator's hypercall port
 *   ret                ; C3
 *
 * With a doorbell port, a fast HvSignalEvent with flag number 0 (RCX = 0x1005D, RDX < 2^32)
 * first writes the connection id to that port as a 32-bit OUT. The backend backs each
 * registered connection id with an ioeventfd (datamatch), so a known connection is signalled
 * with no user-space exit. Any other value exits as plain port I/O; the host then runs the
 * call through the dispatcher and writes RAX = status | bit 63, which tells the page the
 * status is real (a doorbell hit leaves RAX = the zero-extended connection id, bit 63 clear):
 *
 *   cmp  rcx, 0x1005D ; jne slow          fast HvSignalEvent, no rep / header bits?
 *   mov  rax, rdx ; shr rax, 32 ; jnz slow   flag number 0, reserved 0?
 *   mov  eax, edx ; out imm8, eax         the doorbell
 *   test rax, rax ; jns hit
 *   movzx eax, ax ; ret                   the host answered: its status
 *   hit: xor eax, eax ; ret               HV_STATUS_SUCCESS
 *   slow: out imm8, al ; ret              the ordinary hypercall exit
 *
 * The guest calls the page (`call *hv_hypercall_pg` in Linux) with the control value in RCX,
 * the input in RDX and the output in R8, as on Hyper-V; the page clobbers only RAX and flags.
 */
import { HostUsageError } from '@hvemu/common';

export interface HypercallPageOptions {
  /** The port the accelerator reports as a hypercall exit (must fit the imm8 form of OUT). */
  port: number;
  /** Port of the fast-HvSignalEvent doorbell (imm8 form of OUT); none: every call exits. */
  doorbellPort?: number;
}

/** Bit 63 of RAX after a doorbell OUT that exited: the host put a real status in RAX. */
export const DOORBELL_HOST_STATUS = 1n << 63n;

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 0xff) throw new HostUsageError(`${what} ${port} must be 0-255 (OUT imm8)`);
}

/** The bytes to write at the start of the hypercall page (the rest of the page is left as INT3). */
export function hypercallPageCode(options: HypercallPageOptions): Uint8Array {
  const { port, doorbellPort } = options;
  checkPort(port, 'hypercall port');
  if (doorbellPort === undefined) return Uint8Array.of(0xe6, port, 0xc3);
  checkPort(doorbellPort, 'doorbell port');
  if (doorbellPort === port) throw new HostUsageError('the doorbell port must differ from the hypercall port');
  // prettier-ignore
  return Uint8Array.of(
    0x48, 0x81, 0xf9, 0x5d, 0x00, 0x01, 0x00, // 0:  cmp rcx, 0x1005d
    0x75, 0x19,                               // 7:  jne slow (34)
    0x48, 0x89, 0xd0,                         // 9:  mov rax, rdx
    0x48, 0xc1, 0xe8, 0x20,                   // 12: shr rax, 32
    0x75, 0x10,                               // 16: jnz slow (34)
    0x89, 0xd0,                               // 18: mov eax, edx
    0xe7, doorbellPort,                       // 20: out imm8, eax
    0x48, 0x85, 0xc0,                         // 22: test rax, rax
    0x79, 0x04,                               // 25: jns hit (31)
    0x0f, 0xb7, 0xc0,                         // 27: movzx eax, ax
    0xc3,                                     // 30: ret
    0x31, 0xc0,                               // 31: hit: xor eax, eax
    0xc3,                                     // 33: ret
    0xe6, port,                               // 34: slow: out imm8, al
    0xc3,                                     // 36: ret
  );
}

/** A whole 4 KiB page: the code, then INT3 padding so a stray jump into the page traps. */
export function hypercallPage(options: HypercallPageOptions): Uint8Array {
  const page = new Uint8Array(4096).fill(0xcc);
  page.set(hypercallPageCode(options));
  return page;
}
