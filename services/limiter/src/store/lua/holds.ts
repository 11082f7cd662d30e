/**
 * Concurrency caps and holds, as memory.ts's HoldSet. Spliced into
 * KEY_STATE_LUA (before roomOf, which asks holdRoom), so every decision
 * script sees them. Data, beside the pool's other keys (same `{poolId}` slot):
 *   <base>:cc          hash keyId -> concurrency cap; a key not in it has none
 *   <base>:h:<keyId>   zset of holds in flight, member = hold id (the grant's
 *                      seq), score = expiry; entries at or before now are
 *                      trimmed by whichever script looks first, so a dead
 *                      holder's hold frees at its expiry inside the decision
 *                      that needs it. Expires IDLE slack after its last hold.
 */
export const HOLD_STATE_LUA = `
local concurrencyCaps = nil
local function concurrencyOf(k)
  if concurrencyCaps == nil then
    concurrencyCaps = {}
    local flat = redis.call('HGETALL', base .. ':cc')
    for j = 1, #flat, 2 do concurrencyCaps[flat[j]] = tonumber(flat[j + 1]) end
  end
  return concurrencyCaps[k.id]
end

local function holdsKey(keyId)
  return base .. ':h:' .. keyId
end

-- Holds in flight on a capped key at nowMs (expired ones trimmed first).
local function holdsInFlight(k, nowMs)
  local key = holdsKey(k.id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(nowMs))
  return redis.call('ZCARD', key)
end

-- 0 and the key's concurrency headroom when a hold is free (INF without a
-- cap); else until the earliest hold expires, and 0.
local function holdRoom(k, nowMs)
  local cap = concurrencyOf(k)
  if cap == nil then return 0, INF end
  local n = holdsInFlight(k, nowMs)
  if n < cap then return 0, (cap - n) / cap end
  local first = redis.call('ZRANGE', holdsKey(k.id), 0, 0, 'WITHSCORES')
  return tonumber(first[2]) - nowMs, 0
end

local HOLD_IDLE_SLACK_MS = 60000

-- Keeps a hold set until its last hold expires, plus slack.
local function expireHolds(key, nowMs)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIRE', key, fmt(math.ceil(tonumber(last[2]) - nowMs) + HOLD_IDLE_SLACK_MS)) end
end

-- The hold an admission to a capped key takes, named by the grant's seq
-- (record() just set it); '' for a key without a cap.
local function takeHold(k, nowMs, ttlMs)
  if concurrencyOf(k) == nil then return '' end
  local key = holdsKey(k.id)
  local holdId = fmt(k.seq)
  redis.call('ZADD', key, fmt(nowMs + ttlMs), holdId)
  expireHolds(key, nowMs)
  return holdId
end
`;

/**
 * Replaces one pool's concurrency caps. ARGV: base, then (keyId, cap)
 * pairs. Holds are kept: requests in flight stay counted under a new cap,
 * and those of a key no longer capped expire with their TTL.
 */
export const CONFIGURE_HOLDS_LUA = `
local base = ARGV[1]
redis.call('DEL', base .. ':cc')
if #ARGV > 1 then redis.call('HSET', base .. ':cc', unpack(ARGV, 2)) end
return 0
`;

/**
 * release / renew holds of one pool (KEY_STATE_LUA is prepended). ARGV:
 * base, nowMs, calendars, op ("release" | "renew"), ttlMs, then (keyId,
 * holdId) pairs. Returns per pair "1" when the hold was still in flight
 * (renew extended it; release freed it), else "0".
 */
export const HOLDS_LUA = `
local nowMs = readNow(ARGV[2])
local op, ttlMs = ARGV[4], tonumber(ARGV[5])
local out = {}
for i = 6, #ARGV, 2 do
  local key = holdsKey(ARGV[i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(nowMs))
  if op == 'release' then
    out[#out + 1] = tostring(redis.call('ZREM', key, ARGV[i + 1]))
  elseif redis.call('ZSCORE', key, ARGV[i + 1]) then
    -- XX: only a hold still in flight; GT: a renewal never shortens one.
    redis.call('ZADD', key, 'XX', 'GT', fmt(nowMs + ttlMs), ARGV[i + 1])
    expireHolds(key, nowMs)
    out[#out + 1] = '1'
  else
    out[#out + 1] = '0'
  end
end
return out
`;
