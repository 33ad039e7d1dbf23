/**
 * The contracts the layers meet through, so none imports another's internals: how VMBus (or
 * any service) reaches the guest's SynIC, whoever owns it (hvemu's user-space SynIC on KVM, the
 * hypervisor's on MSHV and WHPX), and how guest HvPostMessage / HvSignalEvent reach a service.
 */

/** A SynIC message as a sender gives it: message_type and at most 240 bytes of payload. */
export interface PortMessage {
  readonly type: number;
  readonly payload: Uint8Array;
}

/**
 * The guest's SynIC as a sender sees it. postMessage answers 'delivered' (in the slot now),
 * 'queued' (the port holds it and delivers it in order) or 'busy' (its queue for that SINT is
 * full: nothing was taken; post again after onPostReady fires). A port never drops a message.
 */
export interface SynicPort {
  postMessage(vp: number, sint: number, message: PortMessage): 'delivered' | 'queued' | 'busy';
  /** Sets event flag `flag` of `sint` on `vp` and raises the SINT; true when the flag went 0 -> 1. */
  signalEvent(vp: number, sint: number, flag: number): boolean;
  /** Calls `listener(vp, sint)` when a SINT that answered 'busy' can take messages again; returns an unsubscribe. */
  onPostReady?(listener: (vp: number, sint: number) => void): () => void;
}

/** Where guest HvPostMessage on one connection id goes. */
export interface MessageConnection {
  /** A guest post: vp, message type, payload (a copy, at most 240 bytes). Returns an HV_STATUS. */
  onMessage(vp: number, messageType: number, payload: Uint8Array): number;
}

/** Where guest HvSignalEvent on one connection id goes. */
export interface EventConnection {
  /** A guest signal: vp and flag number. Returns an HV_STATUS. */
  onSignal(vp: number, flagNumber: number): number;
}

/** Registers connection ids (the hypercall layer's ConnectionRegistry); each returns an unregister. */
export interface ConnectionPort {
  registerMessage(connectionId: number, handler: MessageConnection): () => void;
  registerEvent(connectionId: number, handler: EventConnection): () => void;
}
