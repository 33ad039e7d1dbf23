export * from './tlfs.js';
export * from './hypercall.js';
export type { ConnectionPort, EventConnection, MessageConnection, PortMessage, SynicPort } from './contracts.js';
