/** The CMOS RTC: the host's wall clock in BCD, the registers a kernel's boot reads, the index port. */
import { describe, expect, it } from 'vitest';
import { CmosRtc } from '@hvemu/platform';

const at = (rtc: CmosRtc, index: number): number => {
  rtc.write(0x70, 1, index);
  return rtc.read(0x71, 1);
};

describe('CmosRtc', () => {
  it('reads the wall clock as BCD in UTC, 24-hour, with the century', () => {
    const rtc = new CmosRtc(() => Date.UTC(2026, 11, 5, 23, 59, 58)); // Saturday 2026-12-05 23:59:58
    expect([0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map((i) => at(rtc, i))).toEqual([
      0x58, 0x59, 0x23, 0x07, 0x05, 0x12, 0x26, 0x20,
    ]);
  });

  it('never reports an update in progress, says 24-hour BCD, and that the time is valid', () => {
    const rtc = new CmosRtc(() => 0);
    expect(at(rtc, 0x0a) & 0x80).toBe(0);
    expect(at(rtc, 0x0b)).toBe(0x02);
    expect(at(rtc, 0x0d)).toBe(0x80);
  });

  it('ignores the NMI-mask bit of the index, and answers other registers and the index port harmlessly', () => {
    const rtc = new CmosRtc(() => Date.UTC(2000, 0, 1, 0, 0, 7));
    expect(at(rtc, 0x80)).toBe(0x07); // seconds, with NMI masked
    expect(at(rtc, 0x40)).toBe(0);
    rtc.write(0x71, 1, 0x55); // a write to the clock: ignored
    expect(at(rtc, 0x00)).toBe(0x07);
    expect(rtc.read(0x70, 1)).toBe(0xff);
  });
});
