import { KEY_STATE_LUA } from './key-state';
import { LEASE_RETURN_LUA } from './lease-return';

/**
 * acquire for one pool. ARGV: base, nowMs, calendars, then per request: its tokens, the
 * candidate count m and m keyIds. Returns one string per request:
 * "+<admissionId>|<keyId>" granted (admissionId "" for a key without token
 * windows), "-<waitMs>" denied with a retry-after, "" denied with none.
 */
export const ACQUIRE_LUA = `${KEY_STATE_LUA}
local nowMs = readNow(ARGV[2])
readCalendars(ARGV[3])
local out = {}
local i = 4
while i <= #ARGV do
  local tokens = tonumber(ARGV[i])
  local m = tonumber(ARGV[i + 1])
  local best, bestHeadroom, earliest = nil, 0, INF
  for j = i + 2, i + 1 + m do
    local k = loadKey(ARGV[j])
    if k then
      local waitMs, headroom = roomOf(k, nowMs, tokens)
      if waitMs ~= nil then
        if waitMs > 0 then
          if waitMs < earliest then earliest = waitMs end
        elseif best == nil or headroom > bestHeadroom or (headroom == bestHeadroom and k.seq < best.seq) then
          best = k
          bestHeadroom = headroom
        end
      end
    end
  end
  i = i + m + 2
  if best then
    record(best, nowMs, nowMs, 1)
    recordQuotas(best, nowMs, nowMs, 1, tokens)
    if best.carriesTokens then
      local admissionId = admissionIdOf(best, nowMs)
      if #best.tokenWindows > 0 then recordTokens(best, nowMs, best.last, tokens, admissionId) end
      out[#out + 1] = '+' .. admissionId .. '|' .. best.id
    else
      out[#out + 1] = '+|' .. best.id
    end
  elseif earliest == INF then
    out[#out + 1] = ''
  else
    out[#out + 1] = '-' .. fmt(earliest)
  end
end
flushSeq()
return out
`;

/**
 * lease for one pool, as memory.ts leaseOne. ARGV: base, nowMs, calendars, holdMs, the
 * returns (see lua/lease-return.ts), then per request: wantedSlots,
 * wantedTokens, the candidate count m and m keyIds. Returns per request the
 * grant count n, then n (keyId, slots, leaseId, tokens, admissionId) tuples
 * (tokens "0" and admissionId "" for a key without token windows), or when n
 * is 0 one wait ("" = none).
 */
export const LEASE_LUA = `${KEY_STATE_LUA}${LEASE_RETURN_LUA}
local nowMs = readNow(ARGV[2])
readCalendars(ARGV[3])
local holdMs = tonumber(ARGV[4])
local stampMs = nowMs + holdMs
local LEASE_SHARE_OF_HEADROOM = 4

-- The tokens a key's tightest token window or token quota still takes.
local function tokensAvailableOf(k, nowMs)
  local available = INF
  for _, w in ipairs(k.tokenWindows) do
    local remaining = w.n - tokensUsed(k, w, nowMs)
    if remaining < available then available = remaining end
  end
  for _, q in ipairs(k.quotas) do
    if q.unit == 't' then
      local remaining = quotaRemaining(k, q, nowMs, stampMs)
      if remaining < available then available = remaining end
    end
  end
  return available
end

local out = {}
local i = returnLeases(5, nowMs)
while i <= #ARGV do
  local wanted = tonumber(ARGV[i])
  local wantedTokens = tonumber(ARGV[i + 1])
  local m = tonumber(ARGV[i + 2])
  local eligible = {}
  local earliest = INF
  for j = i + 3, i + 2 + m do
    local k = loadKey(ARGV[j])
    -- Slots without a token budget would spend tokens no window counts.
    if k and (not k.carriesTokens or wantedTokens > 0) then
      local need = 0
      if k.carriesTokens then need = 1 end
      local waitMs, _, available = roomOf(k, nowMs, need, stampMs)
      if waitMs ~= nil then
        if waitMs > 0 then
          if waitMs < earliest then earliest = waitMs end
        else
          local tokensAvailable = INF
          if k.carriesTokens then tokensAvailable = tokensAvailableOf(k, nowMs) end
          eligible[#eligible + 1] = { k = k, available = available, tokensAvailable = tokensAvailable }
        end
      end
    end
  end
  i = i + m + 3
  if #eligible == 0 then
    out[#out + 1] = '0'
    if earliest == INF then out[#out + 1] = '' else out[#out + 1] = fmt(earliest) end
  else
    if wanted < 1 then wanted = 1 end
    -- Least recently granted first (stable on candidate order), so small leases rotate over the keys.
    for idx, e in ipairs(eligible) do e.idx = idx end
    table.sort(eligible, function(x, y)
      if x.k.seq ~= y.k.seq then return x.k.seq < y.k.seq end
      return x.idx < y.idx
    end)
    local unassigned = wanted
    local unassignedTokens = wantedTokens
    local tokensPerSlot = math.ceil(wantedTokens / wanted)
    local grants = {}
    for idx, e in ipairs(eligible) do
      if unassigned <= 0 then break end
      local slots = math.ceil(unassigned / (#eligible - idx + 1))
      if e.available ~= INF then
        local cap = math.floor(e.available / LEASE_SHARE_OF_HEADROOM)
        if cap < 1 then cap = 1 end
        if cap < slots then slots = cap end
      end
      unassigned = unassigned - slots
      record(e.k, nowMs, stampMs, slots)
      grants[#grants + 1] = e.k.id
      grants[#grants + 1] = fmt(slots)
      grants[#grants + 1] = fmt(e.k.seq)
      if not e.k.carriesTokens then
        recordQuotas(e.k, nowMs, stampMs, slots, 0)
        keepLease(e.k, nowMs, stampMs, slots, 0, '')
        grants[#grants + 1] = '0'
        grants[#grants + 1] = ''
      else
        -- As memory.ts leaseTokens.
        local tokens = math.ceil(unassignedTokens / (#eligible - idx + 1))
        local cap = math.max(math.floor(e.tokensAvailable / LEASE_SHARE_OF_HEADROOM), math.min(tokensPerSlot, e.tokensAvailable))
        if cap < tokens then tokens = cap end
        if e.tokensAvailable < tokens then tokens = e.tokensAvailable end
        if tokens < 1 then tokens = 1 end
        unassignedTokens = math.max(0, unassignedTokens - tokens)
        local admissionId = admissionIdOf(e.k, stampMs)
        if #e.k.tokenWindows > 0 then recordTokens(e.k, nowMs, e.k.last, tokens, admissionId) end
        recordQuotas(e.k, nowMs, stampMs, slots, tokens)
        keepLease(e.k, nowMs, stampMs, slots, tokens, admissionId)
        grants[#grants + 1] = fmt(tokens)
        grants[#grants + 1] = admissionId
      end
    end
    out[#out + 1] = tostring(#grants / 5)
    for _, v in ipairs(grants) do out[#out + 1] = v end
  end
end
flushSeq()
return out
`;

/**
 * settle for one pool, as memory.ts settle. ARGV: base, nowMs, calendars, then per
 * settlement: keyId, admissionId, usedTokens - reservedTokens. A negative
 * difference shrinks the admission (never below 0); a positive one is
 * recorded as a new admission at nowMs. Returns nothing.
 */
export const SETTLE_LUA = `${KEY_STATE_LUA}
local nowMs = readNow(ARGV[2])
readCalendars(ARGV[3])
for i = 4, #ARGV, 3 do
  local k = loadKey(ARGV[i])
  local delta = tonumber(ARGV[i + 2])
  if k and k.carriesTokens then
    if delta < 0 then
      shrinkTokens(k, ARGV[i + 1], -delta)
      -- Refunds trust reservedTokens, as the token log does; a period no longer kept is left as it was.
      local at = string.find(ARGV[i + 1], '@', 1, true)
      if at then refundQuotas(k, tonumber(string.sub(ARGV[i + 1], at + 1)), -delta) end
    elseif delta > 0 then
      local atMs = nowMs
      if k.last > atMs then atMs = k.last end
      k.last = atMs
      redis.call('HSET', k.stKey, 'last', fmt(atMs))
      local id = fmt(nextSeq())
      if #k.tokenWindows > 0 then recordTokens(k, nowMs, atMs, delta, id) end
      recordQuotas(k, nowMs, nowMs, 0, delta)
    end
  end
end
flushSeq()
return 0
`;
