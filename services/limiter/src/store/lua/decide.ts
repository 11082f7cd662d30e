import { KEY_STATE_LUA } from './key-state';

/**
 * acquire for one pool. ARGV: base, nowMs, then per request: the candidate
 * count m and m keyIds. Returns one string per request: "+<keyId>" granted,
 * "-<waitMs>" denied with a retry-after, "" denied with none.
 */
export const ACQUIRE_LUA = `${KEY_STATE_LUA}
local nowMs = tonumber(ARGV[2])
local out = {}
local i = 3
while i <= #ARGV do
  local m = tonumber(ARGV[i])
  local best, bestHeadroom, earliest = nil, 0, INF
  for j = i + 1, i + m do
    local k = loadKey(ARGV[j])
    if k then
      local waitMs, headroom = roomOf(k, nowMs)
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
  i = i + m + 1
  if best then
    record(best, nowMs, nowMs, 1)
    out[#out + 1] = '+' .. best.id
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
 * lease for one pool. ARGV: base, nowMs, holdMs, then per request:
 * wantedSlots, the candidate count m and m keyIds. Returns per request the
 * grant count n, then n (keyId, slots) pairs, or when n is 0 one wait ("" = none).
 */
export const LEASE_LUA = `${KEY_STATE_LUA}
local nowMs = tonumber(ARGV[2])
local holdMs = tonumber(ARGV[3])
local LEASE_SHARE_OF_HEADROOM = 4
local out = {}
local i = 4
while i <= #ARGV do
  local wanted = tonumber(ARGV[i])
  local m = tonumber(ARGV[i + 1])
  local eligible = {}
  local earliest = INF
  for j = i + 2, i + 1 + m do
    local k = loadKey(ARGV[j])
    if k then
      local waitMs, _, available = roomOf(k, nowMs)
      if waitMs ~= nil then
        if waitMs > 0 then
          if waitMs < earliest then earliest = waitMs end
        else
          eligible[#eligible + 1] = { k = k, available = available }
        end
      end
    end
  end
  i = i + m + 2
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
    local stampMs = nowMs + holdMs
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
    end
    out[#out + 1] = tostring(#grants / 2)
    for _, v in ipairs(grants) do out[#out + 1] = v end
  end
end
flushSeq()
return out
`;
