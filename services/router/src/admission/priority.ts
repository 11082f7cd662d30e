import { KeymeshError } from '@keymesh/errors';
import { Priority } from '@keymesh/proto/router/v1/router';
import type { RequestPriority } from './wait-queue';

export const PRIORITY_HEADER = 'x-keymesh-priority';

const BY_NAME: Readonly<Record<string, RequestPriority>> = { low: 'low', normal: 'normal', high: 'high' };

/**
 * The HTTP edge's `x-keymesh-priority: low|normal|high` (any case); absent
 * means normal. Anything else is the caller's mistake, said as a 400 rather
 * than guessed, so a typo never silently demotes or promotes a request.
 */
export function priorityFromHeader(value: string | string[] | undefined): RequestPriority {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || text === '') return 'normal';
  const priority = BY_NAME[text.trim().toLowerCase()];
  if (priority !== undefined) return priority;
  throw KeymeshError.invalidRequest(`${PRIORITY_HEADER} must be low, normal or high`, PRIORITY_HEADER);
}

/** ChatRequest.priority over gRPC; UNSPECIFIED (and values this router doesn't know) mean normal. */
export function priorityFromProto(priority: Priority): RequestPriority {
  if (priority === Priority.LOW) return 'low';
  if (priority === Priority.HIGH) return 'high';
  return 'normal';
}
