import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Timestamp } from '@bufbuild/protobuf/wkt';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { isCostScopePoolId } from '@keymesh/config';
import { Code, KeymeshError, Reason } from '@keymesh/errors';
import {
  AcquireOutcome,
  Priority,
  KeyCondition as ProtoKeyCondition,
  KeyParkedEventSchema,
  QuotaPeriod as ProtoQuotaPeriod,
  QuotaUnit as ProtoQuotaUnit,
  type AcquireResponseSchema,
  type LimiterService,
} from '@keymesh/proto/limiter/v1/limiter';
import { durationOfMs, msOfDuration, type ServiceImpl } from '@keymesh/rpc';
import { create, toBinary } from '@bufbuild/protobuf';
import { Subjects, type Bus } from '@keymesh/bus';
import { LimiterError, UnknownKeyError, UnknownPoolError } from './domain/errors';
import type { KeyPoolLimiter } from './domain/key-pool-limiter';
import type { AcquireResult, KeyCondition, QuotaPeriod, QuotaUnit } from './domain/types';
import type { Clock } from '@keymesh/clock';

const DEFAULT_HOLD_MS = 1_000;
const MAX_HOLD_MS = 10_000;

/**
 * Whole milliseconds: times the Redis store converts from its clock to the
 * caller's (cooling ends, quota resets) carry fractions, which a Timestamp's
 * integer nanos can't hold.
 */
function timestampOf(ms: number): Timestamp {
  return timestampFromMs(Math.round(ms));
}

const CONDITIONS: Record<KeyCondition, ProtoKeyCondition> = {
  READY: ProtoKeyCondition.READY,
  COOLING: ProtoKeyCondition.COOLING,
  PARKED: ProtoKeyCondition.PARKED,
};

const QUOTA_UNITS: Record<QuotaUnit, ProtoQuotaUnit> = { requests: ProtoQuotaUnit.REQUESTS, tokens: ProtoQuotaUnit.TOKENS };
const QUOTA_PERIODS: Record<QuotaPeriod, ProtoQuotaPeriod> = { day: ProtoQuotaPeriod.DAY, month: ProtoQuotaPeriod.MONTH };

function responseOf(result: AcquireResult, holdTtl: MessageInitShape<typeof import('@bufbuild/protobuf/wkt').DurationSchema>): MessageInitShape<typeof AcquireResponseSchema> {
  if (result.granted) {
    if (result.holdId === undefined) return { outcome: AcquireOutcome.GRANTED, keyId: result.keyId, admissionId: result.admissionId };
    return { outcome: AcquireOutcome.GRANTED, keyId: result.keyId, admissionId: result.admissionId, holdId: result.holdId, holdTtl };
  }
  return {
    outcome: AcquireOutcome.DENIED,
    reason: result.reason,
    ...(result.retryAfterMs === undefined ? {} : { retryAfter: durationOfMs(result.retryAfterMs) }),
  };
}

/** Domain errors as the statuses a caller can act on. */
function statusOf(err: unknown): unknown {
  if (err instanceof UnknownPoolError || err instanceof UnknownKeyError) {
    return new KeymeshError({ code: Code.NotFound, reason: Reason.NOT_FOUND, message: err.message, cause: err });
  }
  if (err instanceof LimiterError) {
    return new KeymeshError({ code: Code.InvalidArgument, reason: Reason.INVALID_REQUEST, message: err.message, cause: err });
  }
  return err;
}

/**
 * `bus`, when given, hears every key the limiter parks after a 401/403 (keymesh.keys.parked),
 * so operators and dashboards learn of a revoked key without polling.
 */
export function limiterHandlers(limiter: KeyPoolLimiter, clock: Clock, bus?: Bus): ServiceImpl<typeof LimiterService> {
  const holdTtl = durationOfMs(limiter.holdTtlMs);
  return {
    async acquire(request) {
      try {
        return responseOf(
          await limiter.acquire(
            { poolId: request.poolId, excludedKeyIds: request.excludedKeyIds, estimatedTokens: request.estimatedTokens, high: request.priority === Priority.HIGH },
            clock.nowMs(),
          ),
          holdTtl,
        );
      } catch (err) {
        throw statusOf(err);
      }
    },
    async acquireBatch(request) {
      try {
        const results = await limiter.acquireBatch(
          request.requests.map((r) => ({ poolId: r.poolId, excludedKeyIds: r.excludedKeyIds, estimatedTokens: r.estimatedTokens, high: r.priority === Priority.HIGH })),
          clock.nowMs(),
        );
        return { responses: results.map((result) => responseOf(result, holdTtl)) };
      } catch (err) {
        throw statusOf(err);
      }
    },
    async grantLeases(request) {
      const holdMs = Math.min(msOfDuration(request.hold) ?? DEFAULT_HOLD_MS, MAX_HOLD_MS);
      try {
        const results = await limiter.grantLeases(
          request.requests.map((r) => ({
            poolId: r.poolId,
            wantedSlots: r.wantedSlots,
            wantedTokens: r.wantedTokens,
            excludedKeyIds: r.excludedKeyIds,
            high: r.priority === Priority.HIGH,
          })),
          clock.nowMs(),
          holdMs,
          request.returns.map((r) => ({ poolId: r.poolId, keyId: r.keyId, leaseId: r.leaseId, slots: r.slots, tokens: r.tokens })),
        );
        return {
          pools: results.map((result, i) => ({
            poolId: request.requests[i].poolId,
            leases: result.grants.map((g) => ({ keyId: g.keyId, slots: g.slots, tokens: g.tokens ?? 0, admissionId: g.admissionId ?? '', leaseId: g.leaseId })),
            reason: result.reason ?? '',
            ...(result.retryAfterMs === undefined ? {} : { retryAfter: durationOfMs(result.retryAfterMs) }),
          })),
        };
      } catch (err) {
        throw statusOf(err);
      }
    },
    async settle(request) {
      try {
        await limiter.settle(
          request.settlements.map((s) => ({
            poolId: s.poolId,
            keyId: s.keyId,
            admissionId: s.admissionId,
            reservedTokens: s.reservedTokens,
            usedTokens: s.usedTokens,
          })),
          clock.nowMs(),
        );
        return {};
      } catch (err) {
        throw statusOf(err);
      }
    },
    async release(request) {
      try {
        const nowMs = clock.nowMs();
        const holdRef = (h: { poolId: string; keyId: string; holdId: string }) => ({ poolId: h.poolId, keyId: h.keyId, holdId: h.holdId });
        // Releases first: a slot freed by this call is free for the acquires that follow it.
        await limiter.release(request.releases.map(holdRef), nowMs);
        const renewed = await limiter.renew(request.renewals.map(holdRef), nowMs);
        return { expiredRenewals: request.renewals.filter((_, i) => !renewed[i]).map(holdRef), holdTtl };
      } catch (err) {
        throw statusOf(err);
      }
    },
    async reportOutcome(request) {
      try {
        const retryAfterMs = msOfDuration(request.retryAfter);
        const windowMs = msOfDuration(request.learnedWindow);
        const nowMs = clock.nowMs();
        const state = await limiter.reportOutcome(
          {
            poolId: request.poolId,
            keyId: request.keyId,
            httpStatus: request.httpStatus,
            ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
            ...(request.learnedLimitRequests > 0 && windowMs !== undefined ? { learnedLimit: { requests: request.learnedLimitRequests, perMs: windowMs } } : {}),
            ...(request.remainingRequests === undefined ? {} : { remainingRequests: request.remainingRequests }),
            ...(request.quotaExhausted ? { quotaExhausted: true } : {}),
          },
          nowMs,
        );
        if (bus !== undefined && state.condition === 'PARKED' && (request.httpStatus === 401 || request.httpStatus === 403)) {
          const event = create(KeyParkedEventSchema, {
            poolId: request.poolId,
            keyId: request.keyId,
            httpStatus: request.httpStatus,
            reason: state.conditionReason,
            parkedAt: timestampFromMs(nowMs),
          });
          bus.publish(Subjects.keyParked, toBinary(KeyParkedEventSchema, event));
        }
        return { condition: CONDITIONS[state.condition] };
      } catch (err) {
        throw statusOf(err);
      }
    },
    async getKeyState(request) {
      const nowMs = clock.nowMs();
      const states = await limiter.keyStates(request.poolId ? { poolId: request.poolId } : {}, nowMs);
      return {
        keys: states.map((s) => {
          // A cost quota is kept as its own pool's token quota (see limiterQuotaOf in server.ts): shown as what it counts.
          const costPool = isCostScopePoolId(s.poolId);
          // The tightest declared window is what the caller runs into first; burst windows are listed apart.
          const tightest = s.windows.filter((w) => w.burst !== true).reduce<(typeof s.windows)[number] | undefined>(
            (min, w) => (min === undefined || w.remaining / w.requests < min.remaining / min.requests ? w : min),
            undefined,
          );
          return {
            poolId: s.poolId,
            keyId: s.keyId,
            condition: CONDITIONS[s.condition],
            conditionReason: s.conditionReason,
            remainingRequests: tightest?.remaining ?? 0,
            limitRequests: tightest?.requests ?? 0,
            ...(tightest ? { window: durationOfMs(tightest.perMs), resetIn: durationOfMs(tightest.resetInMs) } : {}),
            ...(s.coolingUntilMs === undefined ? {} : { coolingUntil: timestampOf(s.coolingUntilMs) }),
            burstWindows: s.windows
              .filter((w) => w.burst === true)
              .map((w) => ({ remainingRequests: w.remaining, limitRequests: w.requests, window: durationOfMs(w.perMs) })),
            tokenWindows: s.tokenWindows.map((w) => ({
              remainingTokens: BigInt(Math.floor(w.remaining)),
              limitTokens: BigInt(w.tokens),
              window: durationOfMs(w.perMs),
              resetIn: durationOfMs(w.resetInMs),
            })),
            calendarQuotas: s.quotas.map((q) => ({
              unit: costPool ? ProtoQuotaUnit.COST_MICRO_USD : QUOTA_UNITS[q.unit],
              limit: BigInt(q.limit),
              period: QUOTA_PERIODS[q.period],
              timeZone: q.timeZone,
              used: BigInt(Math.floor(q.used)),
              resetsAt: timestampOf(q.resetAtMs),
            })),
            concurrencyLimit: s.concurrency?.limit ?? 0,
            holdsInFlight: s.concurrency?.inFlight ?? 0,
          };
        }),
      };
    },
  };
}
