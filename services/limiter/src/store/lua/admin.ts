import { KEY_STATE_LUA } from './key-state';

/**
 * Replaces one pool's key set, as memory.ts configure/reconfigure: unchanged
 * limits keep everything; changed limits keep the condition, grant position
 * and the newest admissions that fit (the log is trimmed to the new largest
 * window); new keys start afresh; keys not listed are deleted. ARGV: base,
 * "keep" | "drop" (drop also forgets the pool's grant counter), then
 * (keyId, "<requests>:<perMs>,...|<tokens>:<perMs>,...|<r|t>:<limit>:<calendarId>,...|<weight>:<cost>") pairs in config
 * order. A key's token log and quota counts are kept across limit changes:
 * what was spent stays spent. Quota counts of removed keys are left to expire
 * with their period (their names hold the period, so no list of them is kept).
 */
export const CONFIGURE_LUA = `${KEY_STATE_LUA}
local old = {}
local flat = redis.call('HGETALL', cfgKey)
for j = 1, #flat, 2 do old[flat[j]] = flat[j + 1] end
local listed = {}
local fields = {}
local index = 0
local learnedKey = base .. ':learned'
for j = 3, #ARGV, 2 do
  local keyId, limits = ARGV[j], ARGV[j + 1]
  -- A key declared without request limits keeps what lua/learn.ts learned for it.
  local sep = string.find(limits, '|', 1, true)
  local requestLimits, tokenLimits = string.sub(limits, 1, sep - 1), string.sub(limits, sep + 1)
  if requestLimits == '' then requestLimits = redis.call('HGET', learnedKey, keyId) or '' else redis.call('HDEL', learnedKey, keyId) end
  limits = requestLimits .. '|' .. tokenLimits
  local value = index .. '|' .. limits
  index = index + 1
  listed[keyId] = true
  fields[#fields + 1] = keyId
  fields[#fields + 1] = value
  local previous = old[keyId]
  if previous == nil then
    redis.call('DEL', base .. ':st:' .. keyId, base .. ':log:' .. keyId, base .. ':tlog:' .. keyId, base .. ':tw:' .. keyId)
  elseif string.sub(previous, string.find(previous, '|', 1, true) + 1) ~= limits then
    local _, maxN = parseWindows(value)
    redis.call('ZREMRANGEBYRANK', base .. ':log:' .. keyId, 0, -(maxN + 1))
  end
end
for keyId, _ in pairs(old) do
  if not listed[keyId] then
    redis.call('DEL', base .. ':st:' .. keyId, base .. ':log:' .. keyId, base .. ':tlog:' .. keyId, base .. ':tw:' .. keyId)
    redis.call('HDEL', learnedKey, keyId)
  end
end
redis.call('DEL', cfgKey)
if #fields > 0 then redis.call('HSET', cfgKey, unpack(fields)) end
if ARGV[2] == 'drop' then redis.call('DEL', seqKey) end
return index
`;

/**
 * cool / park / unpark / condition of one key. ARGV: base, nowMs, calendars,
 * op, keyId, untilMs, reason. Returns {} for an unknown key, else {condition, reason, coolingUntilMs or ""}.
 */
export const CONDITION_LUA = `${KEY_STATE_LUA}
local nowMs, op = readNow(ARGV[2]), ARGV[4]
local k = loadKey(ARGV[5])
if not k then return {} end
if op == 'cool' then
  local untilMs = tonumber(ARGV[6]) + skewMs
  -- A later reply with a shorter retry-after must not end the cooling early.
  if untilMs > k.coolUntil then
    k.coolUntil = untilMs
    k.coolReason = ARGV[7]
    redis.call('HSET', k.stKey, 'cu', fmt(untilMs), 'cr', ARGV[7])
  end
elseif op == 'park' then
  k.parked = true
  k.parkedReason = ARGV[7]
  redis.call('HSET', k.stKey, 'p', '1', 'pr', ARGV[7])
elseif op == 'unpark' then
  k.parked = false
  redis.call('HDEL', k.stKey, 'p', 'pr')
end
return conditionOf(k, nowMs)
`;

/**
 * Every key of one pool in config order. ARGV: base, nowMs, calendars. Returns per key:
 * keyId, condition, reason, coolingUntilMs or "", window count w, then w
 * (requests, perMs, remaining, resetInMs), then token window count t and t
 * (tokens, perMs, remaining, resetInMs), then quota count q and q (unit "r"
 * or "t", limit, calendarId, used, resetAtMs or "" when its period is unknown),
 * then the concurrency cap ("" for none) and the holds in flight.
 */
export const SNAPSHOT_LUA = `${KEY_STATE_LUA}
local nowMs = readNow(ARGV[2])
readCalendars(ARGV[3])
local flat = redis.call('HGETALL', cfgKey)
local keys = {}
for j = 1, #flat, 2 do keys[#keys + 1] = readKey(flat[j], flat[j + 1]) end
table.sort(keys, function(a, b) return a.index < b.index end)
local out = {}
for _, k in ipairs(keys) do
  local c = conditionOf(k, nowMs)
  out[#out + 1] = k.id
  out[#out + 1] = c[1]
  out[#out + 1] = c[2]
  out[#out + 1] = c[3]
  out[#out + 1] = tostring(#k.windows)
  local newest = newestMs(k)
  for _, w in ipairs(k.windows) do
    local resetMs = newest + w.p - nowMs
    if not (resetMs > 0) then resetMs = 0 end
    out[#out + 1] = fmt(w.n)
    out[#out + 1] = fmt(w.p)
    out[#out + 1] = fmt(remainingIn(k, w, nowMs))
    out[#out + 1] = fmt(resetMs)
  end
  out[#out + 1] = tostring(#k.tokenWindows)
  for _, w in ipairs(k.tokenWindows) do
    local remaining = w.n - tokensUsed(k, w, nowMs)
    if remaining < 0 then remaining = 0 end
    out[#out + 1] = fmt(w.n)
    out[#out + 1] = fmt(w.p)
    out[#out + 1] = fmt(remaining)
    out[#out + 1] = fmt(tokenResetMs(k, w, nowMs))
  end
  out[#out + 1] = tostring(#k.quotas)
  for _, q in ipairs(k.quotas) do
    local used, endMs = quotaUsed(k, q, nowMs)
    out[#out + 1] = q.unit
    out[#out + 1] = fmt(q.n)
    out[#out + 1] = q.cal
    out[#out + 1] = fmt(used or 0)
    if endMs then out[#out + 1] = fmt(endMs - skewMs) else out[#out + 1] = '' end
  end
  -- Concurrency cap ("" for none) and holds in flight.
  local cap = concurrencyOf(k)
  if cap == nil then
    out[#out + 1] = ''
    out[#out + 1] = '0'
  else
    out[#out + 1] = fmt(cap)
    out[#out + 1] = tostring(holdsInFlight(k, nowMs))
  end
end
return out
`;
