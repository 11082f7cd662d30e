import { LEASE_RETURN_GRACE_MS } from '../lease-ledger';

/**
 * Lease records and returns, as memory.ts keepLease / returnLeases; appended
 * to KEY_STATE_LUA in LEASE_LUA, whose returns run before its grants.
 *
 *   <base>:ls:<keyId>:<leaseId>  "<grantMs>|<stampMs>|<admittedMs>|<keptUntilMs>|<slots>|<tokens>|<admissionId>|<limits>"
 *                      what one lease counted (leaseId: the grant's seq);
 *                      counts until keptUntilMs, once the lease is in no
 *                      window or quota period (at most LEASE_RETURN_GRACE_MS
 *                      after its end; the key expires then too, by Redis's
 *                      clock), and a return deletes it, so each lease is
 *                      given back at most once. <limits> is the key's
 *                      config at the grant, less its index: a config change
 *                      may have rebuilt the windows the lease was in.
 *   <base>:st:<keyId> field cs: the seq of the last admissions recorded
 *                      because the provider's remaining count said so
 *                      (learn.ts). That count reckoned the leases granted
 *                      before it as spent, so their slots stay in the windows.
 *
 * Returns in ARGV, from index i: the count r, then r × (keyId, leaseId, unspent slots, unspent tokens).
 */
export const LEASE_RETURN_LUA = `
local RETURN_GRACE_MS = ${LEASE_RETURN_GRACE_MS}

local function leaseRecordKey(k, leaseId)
  return base .. ':ls:' .. k.id .. ':' .. leaseId
end

-- The key's limits in its config value "<index>|<requests>|<tokens>|<quotas>|<weight>:<cost>":
-- only they decide whether its windows are still the lease's; its index, weight and cost don't.
local function limitsOf(k)
  return string.match(redis.call('HGET', cfgKey, k.id), '^[^|]*|(.*)|[^|]*$')
end

-- Called right after record(): k.seq names the lease and k.last is where its slots went.
local function keepLease(k, nowMs, stampMs, slots, tokens, admissionId)
  local keptUntil = -INF
  if k.maxN > 0 then keptUntil = k.last + k.maxP end
  if #k.tokenWindows > 0 and k.last + k.maxTP > keptUntil then keptUntil = k.last + k.maxTP end
  for _, q in ipairs(k.quotas) do
    local _, endMs = periodAt(q.cal, stampMs)
    if endMs ~= nil and endMs > keptUntil then keptUntil = endMs end
  end
  if keptUntil > stampMs + RETURN_GRACE_MS then keptUntil = stampMs + RETURN_GRACE_MS end
  if keptUntil <= nowMs then return end
  local record = table.concat({ fmt(nowMs), fmt(stampMs), fmt(k.last), fmt(keptUntil), fmt(slots), fmt(tokens), admissionId, limitsOf(k) }, '|')
  redis.call('SET', leaseRecordKey(k, fmt(k.seq)), record, 'PX', fmt(math.ceil(keptUntil - nowMs)))
end

-- As memory.ts returnQuotas: from the grant's period, and the stamp's when the lease reached into it.
local function returnQuotas(k, grantMs, stampMs, slots, tokens)
  for _, q in ipairs(k.quotas) do
    local amount = slots
    if q.unit == 't' then amount = tokens end
    if amount > 0 then
      takeQuota(k, q, grantMs, amount)
      if periodAt(q.cal, stampMs) ~= periodAt(q.cal, grantMs) then takeQuota(k, q, stampMs, amount) end
    end
  end
end

local function clampTo(given, most)
  local n = math.floor(tonumber(given) or 0)
  if n < 0 then return 0 end
  if n > most then return most end
  return n
end

-- Applies the returns listed from ARGV[i]; returns the index after them.
local function returnLeases(i, nowMs)
  local count = tonumber(ARGV[i])
  for j = i + 1, i + 4 * count, 4 do
    local k = loadKey(ARGV[j])
    local recordKey = k and leaseRecordKey(k, ARGV[j + 1])
    local record = recordKey and redis.call('GET', recordKey)
    if record then
      redis.call('DEL', recordKey)
      local grantMs, stampMs, admittedMs, keptUntil, leased, budget, admissionId, limits =
        string.match(record, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
      grantMs, stampMs, admittedMs = tonumber(grantMs), tonumber(stampMs), tonumber(admittedMs)
      local slots, tokens = 0, 0
      if tonumber(keptUntil) > nowMs then
        slots = clampTo(ARGV[j + 2], tonumber(leased))
        tokens = clampTo(ARGV[j + 3], tonumber(budget))
      end
      -- Admissions at one time are interchangeable, as in sliding-log.ts forget.
      local correctedAt = tonumber(redis.call('HGET', k.stKey, 'cs')) or 0
      if slots > 0 and k.maxN > 0 and admittedMs > nowMs - k.maxP and limits == limitsOf(k) and tonumber(ARGV[j + 1]) > correctedAt then
        local ids = redis.call('ZRANGEBYSCORE', k.logKey, fmt(admittedMs), fmt(admittedMs), 'LIMIT', 0, slots)
        if #ids > 0 then redis.call('ZREM', k.logKey, unpack(ids)) end
      end
      if tokens > 0 then shrinkTokens(k, admissionId, tokens) end
      returnQuotas(k, grantMs, stampMs, slots, tokens)
    end
  end
  return i + 1 + 4 * count
end
`;
