/**
 * Where guest HvPostMessage and HvSignalEvent go: the connection ids vmbus (or any other
 * service) registers. A message handler answers with an HV_STATUS (INSUFFICIENT_BUFFERS when
 * its bounded queue is full); an event handler is told the flag number.
 */
import { HostUsageError } from '@hvemu/common';
import { HV_CONNECTION_ID_MASK, type ConnectionPort, type EventConnection, type MessageConnection } from '@hvemu/hvdef';

/** Told when event connections come and go (a backend keeping a doorbell per connection). */
export interface EventConnectionWatcher {
  added(connectionId: number): void;
  removed(connectionId: number): void;
}

export class ConnectionRegistry implements ConnectionPort {
  private readonly messages = new Map<number, MessageConnection>();
  private readonly events = new Map<number, EventConnection>();
  private readonly watchers = new Set<EventConnectionWatcher>();

  registerMessage(connectionId: number, handler: MessageConnection): () => void {
    this.checkId(connectionId, this.messages);
    this.messages.set(connectionId, handler);
    return () => this.messages.delete(connectionId);
  }

  registerEvent(connectionId: number, handler: EventConnection): () => void {
    this.checkId(connectionId, this.events);
    this.events.set(connectionId, handler);
    for (const w of this.watchers) w.added(connectionId);
    return () => {
      // Only the registration this closure made: a later re-registration is not undone.
      if (this.events.get(connectionId) !== handler) return;
      this.events.delete(connectionId);
      for (const w of this.watchers) w.removed(connectionId);
    };
  }

  /** Calls `watcher.added` for every event connection now and later, `removed` as they go. Returns an unsubscribe. */
  watchEvents(watcher: EventConnectionWatcher): () => void {
    this.watchers.add(watcher);
    for (const id of this.events.keys()) watcher.added(id);
    return () => this.watchers.delete(watcher);
  }

  message(connectionId: number): MessageConnection | undefined {
    return this.messages.get(connectionId);
  }

  event(connectionId: number): EventConnection | undefined {
    return this.events.get(connectionId);
  }

  private checkId(id: number, map: Map<number, unknown>): void {
    if (!Number.isInteger(id) || id < 0 || id > HV_CONNECTION_ID_MASK) throw new HostUsageError(`connection id ${id} is not 24 bits`);
    if (map.has(id)) throw new HostUsageError(`connection id ${id} is already registered`);
  }
}
