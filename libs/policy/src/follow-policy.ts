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
 * while a version is announced misses it, and nothing would bring it later.
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
 * While an announced version is not served yet, fetches for it are at least
 * this far apart, the gap doubling up to MAX_CHASE_DELAY_MS; announcements that
 * arrive meanwhile join the chase. So a flood of announcements naming versions
 * control never serves (forged) costs a few GetPolicy calls per service, not
 * one per message.
 */
export const ANNOUNCED_FETCH_SPACING_MS = 100;

const CONTROL_CALL_TIMEOUT_MS = 2_000;

/** The longest wait between two fetches while chasing an announced version control does not serve yet. */
const MAX_CHASE_DELAY_MS = 2_000;

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

  /** Asks control for its policy and applies it when newer; throws when control does not answer. */
  const fetchLatest = async (): Promise<void> => {
    const { policyJson, version: next } = await options.control.getPolicy({}, { timeoutMs: CONTROL_CALL_TIMEOUT_MS });
    // A fetch still on its way when the follower closed changes nothing.
    if (closed || next <= version) return;
    let policy: Policy;
    try {
      policy = parsePolicy(policyJson);
    } catch (err) {
      options.logger.error('ignoring an invalid policy from control', { version: String(next), error: err as Error });
      return;
    }
    version = next;
    options.onPolicy(policy, next);
    markReady();
  };

  // An announced version is chased until control serves it: during a rolling
  // restart the new control announces while GetPolicy still reaches the old
  // one (an older version) or nothing at all. The chase ends when the version
  // is reached, or after one resync interval, since a forged announcement can
  // name a version that never comes; the resync goes on regardless.
  let announced = 0n;
  let announcedAtMs = 0;
  let chases = 0;
  let fetchPending = false;
  let fetchTimer: NodeJS.Timeout | undefined;
  const resyncMs = options.resyncMs ?? DEFAULT_POLICY_RESYNC_MS;
  const scheduleFetch = (delayMs: number): void => {
    if (fetchPending || closed) return;
    fetchPending = true;
    fetchTimer = setTimeout(() => void fetchAnnounced(), delayMs).unref();
  };
  const fetchAnnounced = async (): Promise<void> => {
    try {
      await fetchLatest();
    } catch (err) {
      if (chases === 0) options.logger.warn('cannot fetch the announced policy from control yet', { version: String(announced), error: err as Error });
    }
    fetchPending = false;
    if (closed || version >= announced) {
      chases = 0;
      return;
    }
    if (Date.now() - announcedAtMs > resyncMs) {
      options.logger.warn('control has not served an announced policy version; leaving it to the resync', { version: String(announced), current: String(version) });
      announced = version;
      chases = 0;
      return;
    }
    chases++;
    scheduleFetch(Math.min(MAX_CHASE_DELAY_MS, ANNOUNCED_FETCH_SPACING_MS * 2 ** (chases - 1)));
  };
  const onAnnounced = (next: bigint): void => {
    if (closed || next <= version) return;
    if (next > announced) {
      announced = next;
      announcedAtMs = Date.now();
    }
    scheduleFetch(0);
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
    if (!closed) resyncTimer = setTimeout(() => void resync(), resyncMs).unref();
  };
  const resync = async (): Promise<void> => {
    try {
      await fetchLatest();
      if (resyncFailing) options.logger.info('control answers again');
      resyncFailing = false;
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
        await fetchLatest();
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
