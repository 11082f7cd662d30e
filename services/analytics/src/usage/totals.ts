import type { UsageRecord } from './types';

const NANOS_PER_SECOND = 1_000_000_000;

/**
 * Running sums. Plain numbers (exact up to 2^53) rather than bigints, which
 * would allocate on every addition; latency is kept as whole seconds plus
 * nanos, carried, so it stays exact too.
 */
export class UsageTotals {
  requests = 0;
  errors = 0;
  cached = 0;
  promptTokens = 0;
  completionTokens = 0;
  /** micro-USD: a number stays exact to 2^53 micro-USD, about 9 billion USD. */
  costMicroUsd = 0;
  attempts = 0;
  latencySeconds = 0;
  latencyNanos = 0;

  add(record: UsageRecord): void {
    this.requests++;
    if (record.status >= 400 || record.errorReason !== '') this.errors++;
    if (record.cached) this.cached++;
    this.promptTokens += record.promptTokens;
    this.completionTokens += record.completionTokens;
    this.costMicroUsd += Number(record.costMicroUsd);
    this.attempts += record.attempts;
    const latency = record.latency;
    if (latency !== undefined) this.addLatency(Number(latency.seconds), latency.nanos);
  }

  merge(other: UsageTotals): void {
    this.requests += other.requests;
    this.errors += other.errors;
    this.cached += other.cached;
    this.promptTokens += other.promptTokens;
    this.completionTokens += other.completionTokens;
    this.costMicroUsd += other.costMicroUsd;
    this.attempts += other.attempts;
    this.addLatency(other.latencySeconds, other.latencyNanos);
  }

  copy(): UsageTotals {
    const copy = new UsageTotals();
    copy.merge(this);
    return copy;
  }

  private addLatency(seconds: number, nanos: number): void {
    // A negative latency is a producer bug; it must not subtract from the sum.
    if (seconds < 0 || nanos < 0) return;
    this.latencySeconds += seconds;
    this.latencyNanos += nanos;
    if (this.latencyNanos >= NANOS_PER_SECOND) {
      const carry = Math.floor(this.latencyNanos / NANOS_PER_SECOND);
      this.latencySeconds += carry;
      this.latencyNanos -= carry * NANOS_PER_SECOND;
    }
  }
}
