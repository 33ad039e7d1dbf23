/**
 * Readiness of host file descriptors without a timer and without holding a libuv thread: the
 * native addon's epoll thread (native/src/eventfd_watcher.h, edge-triggered EPOLLIN) reports
 * fds that became readable, and the callback runs on the JS thread. Built for KVM's doorbell
 * eventfds; any pollable fd works the same way (a non-blocking TAP fd, for @hvemu/net). Edge
 * triggered: after a report the owner reads until EAGAIN, or remembers that it did not.
 */
import { NativeAddonError } from '../errors.js';
import { loadAddon } from './addon.js';

export interface FdWatcher {
  add(fd: number): void;
  remove(fd: number): void;
  /** Stops the epoll thread (idempotent). */
  close(): void;
}

/**
 * A watcher calling `onReady(fds)` on the JS thread when watched fds become readable. It does
 * not keep the process alive by itself. NativeAddonError where the addon is missing or a stub.
 */
export function createFdWatcher(onReady: (fds: number[]) => void): FdWatcher {
  const Watcher = loadAddon().EventfdWatcher;
  if (!Watcher) throw new NativeAddonError('this hvemu native addon has no fd watcher (built as a stub for this platform)');
  return new Watcher(onReady);
}
