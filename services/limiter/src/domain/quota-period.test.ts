import assert from 'node:assert/strict';
import { isKnownTimeZone } from './calendar';
import { nextQuotaResetMs } from './quota-period';

describe('quota periods', () => {
  it('renews a monthly quota at the first of the next month, midnight UTC', () => {
    assert.equal(nextQuotaResetMs(Date.UTC(2026, 10, 25, 19, 10), { period: 'monthly', timeZone: 'UTC' }), Date.UTC(2026, 11, 1));
    assert.equal(nextQuotaResetMs(Date.UTC(2026, 11, 31, 23, 59), { period: 'monthly', timeZone: 'UTC' }), Date.UTC(2027, 0, 1));
    assert.equal(nextQuotaResetMs(Date.UTC(2026, 11, 1), { period: 'monthly', timeZone: 'UTC' }), Date.UTC(2027, 0, 1), 'a boundary itself is already the new period');
  });

  it('renews a daily quota at the next local midnight of its time zone, across a DST change', () => {
    // 2026-03-08 is the US spring-forward day: New York is UTC-5 before, UTC-4 after.
    assert.equal(nextQuotaResetMs(Date.UTC(2026, 2, 7, 12), { period: 'daily', timeZone: 'America/New_York' }), Date.UTC(2026, 2, 8, 5));
    assert.equal(nextQuotaResetMs(Date.UTC(2026, 2, 8, 12), { period: 'daily', timeZone: 'America/New_York' }), Date.UTC(2026, 2, 9, 4));
    assert.equal(nextQuotaResetMs(Date.UTC(2026, 10, 25, 23, 30), { period: 'daily', timeZone: 'Europe/Berlin' }), Date.UTC(2026, 10, 26, 23));
  });

  it('renews a monthly quota at local midnight of the first in its time zone', () => {
    assert.equal(nextQuotaResetMs(Date.UTC(2026, 10, 25), { period: 'monthly', timeZone: 'Asia/Tokyo' }), Date.UTC(2026, 10, 30, 15));
  });

  it('knows which time zones the runtime knows', () => {
    assert.equal(isKnownTimeZone('Europe/Berlin'), true);
    assert.equal(isKnownTimeZone('Mars/Olympus_Mons'), false);
  });
});
