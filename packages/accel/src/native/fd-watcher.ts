/**
 * Readiness of host file descriptors without a timer and without holding a libuv thread: the
 * native addon's epoll thread (native/src/eventfd_watcher.h, edge-triggered EPOLLIN) reports
 * fds that became readable, and the callback runs on the JS thread. Built for KVM's doorbell
 * eventfds; any pollable fd works the same way (a non-blocking TAP fd, for @hvemu/net). Edge
 * triggered: after a report the owner reads until EAGAIN, or remembers that it did not.
 */
import { NativeAddonError, native } from '../errors.js';
import { loadAddon } from './addon.js';

export interface FdWatcher {
  /**
   * Watches `fd`. One-shot: reported once, then silent until rearm(fd), for a packet fd (a TAP)
   * that would otherwise wake the watcher for every packet queued while its owner is draining it.
   */
  add(fd: number, oneShot?: boolean): void;
  /** Arms a one-shot fd again (after a read found it empty); a readable fd is reported at once. */
  rearm(fd: number): void;
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
  const watcher = native(() => new Watcher(onReady));
  // Native errors (a bad fd, rearm of an fd never added, use after close) as typed AccelErrors.
  return {
    add: (fd, oneShot) => native(() => watcher.add(fd, oneShot)),
    rearm: (fd) => native(() => watcher.rearm(fd)),
    remove: (fd) => native(() => watcher.remove(fd)),
    close: () => native(() => watcher.close()),
  };
}
