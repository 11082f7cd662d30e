import { KEY_STATE_LUA } from './key-state';

/**
 * As memory.ts learn: what the provider's headers said about one key.
 * ARGV: the decision scripts' header (base, now, calendars; see
 * key-state.ts), then keyId, requests ("" when no limit was seen), perMs,
 * remaining ("" when not said). Learned limits live in `<base>:learned`
 * (hash keyId -> "<requests>:<perMs>"), beside the config, so that every
 * replica's configure keeps them for keys declared without limits. Returns {}
 * for an unknown key, else the key's condition as CONDITION_LUA does.
 */
export const LEARN_LUA = `${KEY_STATE_LUA}
local nowMs = readNow(ARGV[2])
readCalendars(ARGV[3])
local keyId = ARGV[4]
local k = loadKey(keyId)
if not k then return {} end
local learnedKey = base .. ':learned'
local limitN = tonumber(ARGV[5])
if limitN then
  -- The config value is "<index>|<request limits>|<token limits>"; only the request part is learned.
  local value = redis.call('HGET', cfgKey, keyId)
  local bar = string.find(value, '|', 1, true)
  local bar2 = string.find(value, '|', bar + 1, true)
  local limits = string.sub(value, bar + 1, bar2 - 1)
  local previous = redis.call('HGET', learnedKey, keyId)
  -- A declared limit always wins; a learned one may be refined.
  if limits == '' or limits == previous then
    local perMs = tonumber(ARGV[6])
    if previous then
      local pn, pp = string.match(previous, '([^:]+):([^:]+)')
      if tonumber(pn) == limitN and tonumber(pp) > perMs then perMs = tonumber(pp) end
    end
    local learned = fmt(limitN) .. ':' .. fmt(perMs)
    if learned ~= previous then
      redis.call('HSET', learnedKey, keyId, learned)
      redis.call('HSET', cfgKey, keyId, string.sub(value, 1, bar) .. learned .. string.sub(value, bar2))
      redis.call('ZREMRANGEBYRANK', k.logKey, 0, -(limitN + 1))
      keyCache[keyId] = nil
      k = loadKey(keyId)
    end
  end
end
local remaining = tonumber(ARGV[7])
if remaining then
  local ours = INF
  for _, w in ipairs(k.windows) do
    local r = remainingIn(k, w, nowMs)
    if w.n == limitN then
      ours = r
      break
    end
    if r < ours then ours = r end
  end
  if ours ~= INF and ours > remaining then
    record(k, nowMs, nowMs, ours - remaining)
    -- Leases granted so far were reckoned as spent: see lease-return.ts.
    redis.call('HSET', k.stKey, 'cs', fmt(k.seq))
  end
end
flushSeq()
return conditionOf(k, nowMs)
`;
