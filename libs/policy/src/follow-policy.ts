import { Subjects, type Bus } from '@keymesh/bus';
import { parsePolicy, type Policy } from '@keymesh/config';
import { PolicyUpdatedEventSchema, type ControlService } from '@keymesh/proto/control/v1/control';
import type { RpcClient } from '@keymesh/rpc';
import type { Logger } from '@keymesh/telemetry';

export type PolicyListener = (policy: Policy, version: bigint) => void;

export interface FollowPolicyOptions {
  control: RpcClient<typeof ControlService>;
  bus: Bus;
  logger: Logger;
  onPolicy: PolicyListener;
  /** Backoff ceiling while control is not reachable yet. */
  maxRetryDelayMs?: number;
  /** How often control is asked for a newer policy than the bus brought; DEFAULT_POLICY_RESYNC_MS when not given. */
  resyncMs?: number;
}

/**
 * The bus delivers at most once: a service whose connection to NATS blinks
 * while a policy is broadcast misses it, and nothing would bring it later.
 * Asking control this often bounds how long such a service stays behind.
 */
export const DEFAULT_POLICY_RESYNC_MS = 30_000;

export interface PolicyFollower {
  /** Resolves once a first policy has been applied. */
  readonly ready: Promise<void>;
  version(): bigint;
  close(): void;
}

/**
 * After a broadcast, fetches from control are spaced by at least this much,
 * so a flood of announcements (forged, or a burst of applies) costs control
 * a handful of GetPolicy calls a second per service, not one per message.
 */
export const ANNOUNCED_FETCH_SPACING_MS = 100;

/**
 * Keeps a service on the newest policy: fetches it from control at start
 * (retrying until control answers, so start order does not matter), fetches
 * again whenever keymesh.policy.updated announces a newer version, and asks
 * control every `resyncMs` for a version the bus did not bring. Versions only
 * move forward, so a late fetch never undoes a newer one.
 *
 * The policy itself only ever comes from control, never from the bus: a
 * policy says where each key's secret is sent, and whoever can publish on
 * NATS could otherwise send every key to a host of their choosing. A forged
 * announcement costs one fetch and changes nothing.
 */
export function followPolicy(options: FollowPolicyOptions): PolicyFollower {
  let version = 0n;
  let closed = false;
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (markReady = resolve));

  const apply = (json: string, next: bigint, source: string): void => {
    // A fetch or event still on its way when the follower closed changes nothing.
    if (closed || next <= version) return;
    let policy: Policy;
    try {
      policy = parsePolicy(json);
    } catch (err) {
      options.logger.error('ignoring an invalid policy', { version: String(next), source, error: err as Error });
      return;
    }
    version = next;
    options.onPolicy(policy, next);
    markReady();
  };

  // One fetch at a time, started at least ANNOUNCED_FETCH_SPACING_MS after the last.
  let fetchPending = false;
  let fetchAgain = false;
  let lastFetchAtMs = Number.NEGATIVE_INFINITY;
  let fetchTimer: NodeJS.Timeout | undefined;
  const requestFetch = (): void => {
    if (fetchPending) {
      fetchAgain = true;
      return;
    }
    fetchPending = true;
    fetchTimer = setTimeout(() => void fetchAnnounced(), Math.max(0, lastFetchAtMs + ANNOUNCED_FETCH_SPACING_MS - Date.now())).unref();
  };
  const fetchAnnounced = async (): Promise<void> => {
    lastFetchAtMs = Date.now();
    try {
      const response = await options.control.getPolicy({}, { timeoutMs: 2_000 });
      apply(response.policyJson, response.version, 'control');
    } catch (err) {
      // The resync brings it later; the policy in hand stays in force meanwhile.
      options.logger.warn('cannot fetch the announced policy from control', { error: err as Error });
    }
    fetchPending = false;
    // Announced while this fetch was on its way: control may have moved on since it answered.
    if (fetchAgain && !closed) {
      fetchAgain = false;
      requestFetch();
    }
  };
  const onAnnounced = (announced: bigint): void => {
    if (!closed && announced > version) requestFetch();
  };

  // Subscribe before fetching, so an update published in between is not missed.
  const subscription = options.bus.subscribe(Subjects.policyUpdated);
  void (async () => {
    for await (const message of subscription) {
      try {
        onAnnounced(message.decode(PolicyUpdatedEventSchema).version);
      } catch (err) {
        options.logger.warn('malformed policy event', { error: err as Error });
      }
    }
  })();

  let resyncTimer: NodeJS.Timeout | undefined;
  let resyncFailing = false;
  const scheduleResync = (): void => {
    if (!closed) resyncTimer = setTimeout(() => void resync(), options.resyncMs ?? DEFAULT_POLICY_RESYNC_MS).unref();
  };
  const resync = async (): Promise<void> => {
    try {
      const response = await options.control.getPolicy({}, { timeoutMs: 2_000 });
      if (resyncFailing) options.logger.info('control answers again');
      resyncFailing = false;
      apply(response.policyJson, response.version, 'control');
    } catch (err) {
      // The policy in hand stays in force; said once per outage, not every interval.
      if (!resyncFailing) options.logger.warn('cannot ask control for a newer policy; keeping the current one', { error: err as Error });
      resyncFailing = true;
    }
    scheduleResync();
  };

  void (async () => {
    let delayMs = 50;
    while (!closed && version === 0n) {
      try {
        const response = await options.control.getPolicy({}, { timeoutMs: 2_000 });
        apply(response.policyJson, response.version, 'control');
        break;
      } catch (err) {
        if (delayMs >= 800) options.logger.warn('waiting for control to serve a policy', { error: err as Error });
        await new Promise((resolve) => setTimeout(resolve, delayMs).unref());
        delayMs = Math.min(delayMs * 2, options.maxRetryDelayMs ?? 2_000);
      }
    }
    scheduleResync();
  })();

  return {
    ready,
    version: () => version,
    close() {
      closed = true;
      clearTimeout(resyncTimer);
      clearTimeout(fetchTimer);
      subscription.unsubscribe();
    },
  };
}
