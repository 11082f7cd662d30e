import { KEY_STATE_LUA } from './key-state';
import { LEASE_RETURN_LUA } from './lease-return';

/**
 * acquire for one pool. ARGV: base, nowMs, calendars, "<keySelection>:<reserveShare>", holdTtlMs,
 * then per request: its tokens, "1" when it may use the reserve ("0" else), the
 * candidate count m and m keyIds. Returns one string per request:
 * "+<admissionId>|<holdId>|<keyId>" granted (admissionId "" for a key without token
 * windows, holdId "" for a key without a concurrency cap), "-<waitMs>" denied
 * with a retry-after, "" denied with none.
 */
export const ACQUIRE_LUA = `${KEY_STATE_LUA}
local nowMs = readNow(ARGV[2])
readCalendars(ARGV[3])
local selection = readChoice(ARGV[4])
local holdTtlMs = tonumber(ARGV[5])
local out = {}
local i = 6
while i <= #ARGV do
  local tokens = tonumber(ARGV[i])
  local normal = ARGV[i + 1] ~= '1'
  local m = tonumber(ARGV[i + 2])
  local best, bestHeadroom, earliest = nil, 0, INF
  local eligible = {}
  for j = i + 3, i + 2 + m do
    local k = loadKey(ARGV[j])
    if k then
      local waitMs, headroom = roomOf(k, nowMs, tokens, nowMs, normal)
      if waitMs ~= nil then
        if waitMs > 0 then
          if waitMs < earliest then earliest = waitMs end
        elseif selection == 'weighted' then
          eligible[#eligible + 1] = k
        elseif best == nil or (selection == 'cheapest' and k.cost < best.cost)
          or ((selection ~= 'cheapest' or k.cost == best.cost) and (headroom > bestHeadroom or (headroom == bestHeadroom and k.seq < best.seq))) then
          best = k
          bestHeadroom = headroom
        end
      end
    end
  end
  i = i + m + 3
  if selection == 'weighted' then
    best = nextByWeight(eligible)
    saveWeights(eligible)
  end
  if best then
    record(best, nowMs, nowMs, 1)
    recordQuotas(best, nowMs, nowMs, 1, tokens)
    local holdId = takeHold(best, nowMs, holdTtlMs)
    if best.carriesTokens then
      local admissionId = admissionIdOf(best, nowMs)
      if #best.tokenWindows > 0 then recordTokens(best, nowMs, best.last, tokens, admissionId) end
      out[#out + 1] = '+' .. admissionId .. '|' .. holdId .. '|' .. best.id
    else
      out[#out + 1] = '+|' .. holdId .. '|' .. best.id
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
 * lease for one pool, as memory.ts leaseOne and planLease. ARGV: base, nowMs, calendars, holdMs,
 * "<keySelection>:<reserveShare>", the returns (see lua/lease-return.ts), then per request:
 * wantedSlots, wantedTokens, "1" when the slots may use the reserve ("0" else), the candidate
 * count m and m keyIds. Returns per request the grant count n, then n (keyId, slots, leaseId,
 * tokens, admissionId) tuples (tokens "0" and admissionId "" for a key without token windows),
 * or when n is 0 one wait ("" = none).
 */
export const LEASE_LUA = `${KEY_STATE_LUA}${LEASE_RETURN_LUA}
local nowMs = readNow(ARGV[2])
readCalendars(ARGV[3])
local holdMs = tonumber(ARGV[4])
local selection = readChoice(ARGV[5])
local stampMs = nowMs + holdMs
local LEASE_SHARE_OF_HEADROOM = 4

-- The tokens a key's tightest token window (less its reserve, for a normal lease) or token quota still takes.
local function tokensAvailableOf(k, nowMs, normal)
  local available = INF
  for _, w in ipairs(k.tokenWindows) do
    local remaining = w.n - tokensUsed(k, w, nowMs)
    if normal then remaining = remaining - reservedOf(w.n) end
    if remaining < 0 then remaining = 0 end
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

-- At most a quarter of a key's available slots per grant (at least one); share when it has no windows.
local function capOf(e, share)
  if e.available == INF then return share end
  local cap = math.floor(e.available / LEASE_SHARE_OF_HEADROOM)
  if cap < 1 then cap = 1 end
  return cap
end

-- As memory.ts planLease: { e, slots } in the order they are carved.
local function planLease(eligible, wanted)
  local plan = {}
  local unassigned = wanted
  for idx, e in ipairs(eligible) do e.idx = idx end
  if selection == 'weighted' then
    local caps, slots, keys = {}, {}, {}
    for idx, e in ipairs(eligible) do
      caps[idx] = capOf(e, wanted)
      slots[idx] = 0
      keys[idx] = e.k
    end
    local function usable(idx) return slots[idx] < caps[idx] end
    while unassigned > 0 do
      local k, idx = nextByWeight(keys, usable)
      if k == nil then break end
      slots[idx] = slots[idx] + 1
      unassigned = unassigned - 1
    end
    saveWeights(keys)
    for idx, e in ipairs(eligible) do
      if slots[idx] > 0 then plan[#plan + 1] = { e = e, slots = slots[idx] } end
    end
    return plan
  end
  if selection == 'cheapest' then
    table.sort(eligible, function(x, y)
      if x.k.cost ~= y.k.cost then return x.k.cost < y.k.cost end
      if x.headroom ~= y.headroom then return x.headroom > y.headroom end
      if x.k.seq ~= y.k.seq then return x.k.seq < y.k.seq end
      return x.idx < y.idx
    end)
  else
    -- Least recently granted first (stable on candidate order), so small leases rotate over the keys.
    table.sort(eligible, function(x, y)
      if x.k.seq ~= y.k.seq then return x.k.seq < y.k.seq end
      return x.idx < y.idx
    end)
  end
  for idx, e in ipairs(eligible) do
    if unassigned <= 0 then break end
    -- cheapest fills each key in turn; headroom spreads what is left over the keys left.
    local slots = unassigned
    if selection ~= 'cheapest' then slots = math.ceil(unassigned / (#eligible - idx + 1)) end
    local cap = capOf(e, slots)
    if cap < slots then slots = cap end
    unassigned = unassigned - slots
    plan[#plan + 1] = { e = e, slots = slots }
  end
  return plan
end

local out = {}
local i = returnLeases(6, nowMs)
while i <= #ARGV do
  local wanted = tonumber(ARGV[i])
  local wantedTokens = tonumber(ARGV[i + 1])
  local normal = ARGV[i + 2] ~= '1'
  local m = tonumber(ARGV[i + 3])
  local eligible = {}
  local earliest = INF
  for j = i + 4, i + 3 + m do
    local k = loadKey(ARGV[j])
    -- Slots without a token budget would spend tokens no window counts; capped keys are never leased.
    if k and (not k.carriesTokens or wantedTokens > 0) and concurrencyOf(k) == nil then
      local need = 0
      if k.carriesTokens then need = 1 end
      local waitMs, headroom, available = roomOf(k, nowMs, need, stampMs, normal)
      if waitMs ~= nil then
        if waitMs > 0 then
          if waitMs < earliest then earliest = waitMs end
        else
          local tokensAvailable = INF
          if k.carriesTokens then tokensAvailable = tokensAvailableOf(k, nowMs, normal) end
          eligible[#eligible + 1] = { k = k, headroom = headroom, available = available, tokensAvailable = tokensAvailable }
        end
      end
    end
  end
  i = i + m + 4
  if #eligible == 0 then
    out[#out + 1] = '0'
    if earliest == INF then out[#out + 1] = '' else out[#out + 1] = fmt(earliest) end
  else
    if wanted < 1 then wanted = 1 end
    local plan = planLease(eligible, wanted)
    local unassignedTokens = wantedTokens
    local tokensPerSlot = math.ceil(wantedTokens / wanted)
    local grants = {}
    for idx, p in ipairs(plan) do
      local e, slots = p.e, p.slots
      -- As before key selection policies: the headroom split shares tokens over every eligible key left.
      local keysLeft = #plan - idx + 1
      if selection ~= 'weighted' and selection ~= 'cheapest' then keysLeft = #eligible - idx + 1 end
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
        local tokens = math.ceil(unassignedTokens / keysLeft)
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
