/**
 * Contents of the hypercall page the guest enables through HV_X64_MSR_HYPERCALL, for
 * accelerators without Hyper-V support (KVM here): instead of VMCALL, which KVM would take as
 * one of its own paravirtual calls, the page holds an exiting sequence the accelerator turns
 * into a "hypercall" exit carrying RCX/RDX/R8, and the handler's answer lands in RAX.
 *
 *   out  imm8, %al     ; E6 ib: a byte OUT to the accelerator's hypercall port
 *   ret                ; C3
 *
 * The guest calls the page (`call *hv_hypercall_pg` in Linux) with the control value in RCX,
 * the input in RDX and the output in R8, as on Hyper-V; nothing else in its ABI changes.
 */
import { HostUsageError } from '@hvemu/common';

export interface HypercallPageOptions {
  /** The port the accelerator reports as a hypercall exit (must fit the imm8 form of OUT). */
  port: number;
}

/** The bytes to write at the start of the hypercall page (the rest of the page is left as INT3). */
export function hypercallPageCode(options: HypercallPageOptions): Uint8Array {
  const { port } = options;
  if (!Number.isInteger(port) || port < 0 || port > 0xff) throw new HostUsageError(`hypercall port ${port} must be 0-255 (OUT imm8)`);
  return Uint8Array.of(0xe6, port, 0xc3);
}

/** A whole 4 KiB page: the code, then INT3 padding so a stray jump into the page traps. */
export function hypercallPage(options: HypercallPageOptions): Uint8Array {
  const page = new Uint8Array(4096).fill(0xcc);
  page.set(hypercallPageCode(options));
  return page;
}
