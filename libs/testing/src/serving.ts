import type { ChildHandle } from './child';

// Start keymesh processes on port 0 and read back what they bound. A port
// picked ahead with freePort() and bound seconds later can be taken in between:
// by then the processes already started hold outbound connections on ephemeral
// ports from the same range.

/** The address `keymesh serve <service> --port 0` bound, from its "serving on" line. */
export async function servingAddress(child: ChildHandle, service: string, timeoutMs = 30_000): Promise<string> {
  const match = await child.waitForLine(new RegExp(`keymesh ${service} serving on (\\S+:\\d+)`), timeoutMs);
  return match[1]!;
}

/**
 * The HTTP edge's port, from the line `keymesh up` ("router (HTTP edge)  http://…")
 * or `keymesh serve router` ("edge http://…") prints once it is serving.
 * Start either with KEYMESH_HTTP_PORT=0.
 */
export async function edgePort(child: ChildHandle, timeoutMs = 30_000): Promise<number> {
  const match = await child.waitForLine(/edge\)?\s+http:\/\/\S+:(\d+)\/v1/, timeoutMs);
  return Number(match[1]);
}
