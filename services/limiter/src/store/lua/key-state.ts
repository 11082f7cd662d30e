import { HOLD_STATE_LUA } from './holds';

/**
 * Lua shared by every limiter script (prepended to each). One script call
 * works on one pool: KEYS[1] is the pool's config hash `<base>:cfg` and
 * ARGV[1] is `<base>` = `<prefix>:limiter:{<poolId>}`. The per-key keys
 * (`<base>:st:<keyId>`, `<base>:log:<keyId>`) and `<base>:seq` are derived here
 * rather than declared, as BullMQ does: they all carry the pool's `{poolId}`
 * hash tag, so they live in KEYS[1]'s Redis Cluster slot.
 *
 * Data model, per pool:
 *   <base>:cfg         hash keyId -> "<configIndex>|<requests>:<perMs>,...|<tokens>:<perMs>,...
 *                      |<r|t>:<limit>:<calendarId>,...|<weight>:<cost>"
 *   <base>:seq         grant counter; ties go to the key with the lowest last grant
 *   <base>:st:<keyId>  hash p (parked "1"), pr (park reason), cu/cr (cooling until/reason),
 *                      seq (last grant), last (newest recorded admission),
 *                      cw (running weight of a weighted pool's round robin)
 *   <base>:log:<keyId> zset of admissions, score = time, the newest max(requests)
 *                      of them: the memory store's rings, one per window, all
 *                      record every admission, so the window of N looks at the
 *                      newest N entries of this one set.
 *   <base>:tlog:<keyId> zset of admissions of a key with token windows, member =
 *                      admission id (the grant's seq), score = time; kept while
 *                      the longest token window can see them
 *   <base>:tw:<keyId>  hash admission id -> tokens it weighs (shrunk by refunds)
 *   <base>:cc, <base>:h:<keyId>  concurrency caps and holds (see lua/holds.ts)
 *   <base>:q:<keyId>:<r|t>:<calendarId>:<periodStartMs>
 *                      a calendar quota's count of requests (r) or tokens (t) in
 *                      one period; expires QUOTA_SLACK_MS after the period ends
 *
 * Decision scripts share an ARGV header: ARGV[2] the caller's nowMs ("<ms>",
 * or "r<ms>" to decide by Redis TIME instead, see readNow), ARGV[3]
 * the calendars of the pool's quotas as "<calendarId>=<b1>,<b2>,<b3>,<b4>;..."
 * (calendarId "day@Europe/Berlin"): the previous, current and next period
 * are [b1, b2), [b2, b3), [b3, b4). The caller computes them because Lua has
 * no time zones; three periods cover a lease's hold past midnight and the
 * stamps of settles from the previous period.
 *
 * Numbers go to Redis as strings formatted %.17g: Lua's own number-to-string
 * keeps 14 digits, which would round fractional milliseconds away.
 */
export const KEY_STATE_LUA = `
local cfgKey = KEYS[1]
local base = ARGV[1]
local seqKey = base .. ':seq'
local INF = math.huge

local function fmt(n)
  return string.format('%.17g', n)
end

-- Redis TIME minus the caller's nowMs (0 when deciding by the caller's clock).
-- Absolute times cross the boundary in the caller's frame (cooling ends, quota
-- resets) and are kept in the decision clock's, so replicas whose clocks
-- disagree still agree on every window; durations need no conversion.
local skewMs = 0
local function readNow(arg)
  if string.sub(arg, 1, 1) ~= 'r' then return tonumber(arg) end
  -- Redis 7 replicates a script's effects, not the script, so TIME is allowed.
  local t = redis.call('TIME')
  local nowMs = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  skewMs = nowMs - tonumber(string.sub(arg, 2))
  return nowMs
end

local calendars = {}
local function readCalendars(list)
  for id, b1, b2, b3, b4 in string.gmatch(list, '([^=;]+)=([^,;]+),([^,;]+),([^,;]+),([^,;]+)') do
    calendars[id] = { tonumber(b1), tonumber(b2), tonumber(b3), tonumber(b4) }
  end
end

-- The period of a calendar that holds atMs: its start and end; nil when the caller sent no such period.
local function periodAt(calendarId, atMs)
  local b = calendars[calendarId]
  if b == nil then return nil end
  for j = 1, 3 do
    if atMs >= b[j] and atMs < b[j + 1] then return b[j], b[j + 1] end
  end
  return nil
end

-- "r:<limit>:<calendarId>,t:<limit>:<calendarId>,..." -> quotas, and whether one counts tokens.
local function parseQuotas(list)
  local quotas = {}
  local hasTokens = false
  for unit, n, cal in string.gmatch(list, '([rt]):([^:,]+):([^,]+)') do
    quotas[#quotas + 1] = { unit = unit, n = tonumber(n), cal = cal }
    if unit == 't' then hasTokens = true end
  end
  return quotas, hasTokens
end

local function parsePairs(list)
  local windows = {}
  local maxN = 0
  local maxP = 0
  for n, p in string.gmatch(list, '([^:,]+):([^:,]+)') do
    local w = { n = tonumber(n), p = tonumber(p) }
    windows[#windows + 1] = w
    if w.n > maxN then maxN = w.n end
    if w.p > maxP then maxP = w.p end
  end
  return windows, maxN, maxP
end

-- Request windows, their max N and max perMs, the config index, token windows, their max perMs, the quota list and "<weight>:<cost>".
local function parseWindows(value)
  local bar = string.find(value, '|', 1, true)
  local rest = string.sub(value, bar + 1)
  local tokenList = ''
  local quotaList = ''
  local choice = ''
  local bar2 = string.find(rest, '|', 1, true)
  if bar2 then
    tokenList = string.sub(rest, bar2 + 1)
    rest = string.sub(rest, 1, bar2 - 1)
    local bar3 = string.find(tokenList, '|', 1, true)
    if bar3 then
      quotaList = string.sub(tokenList, bar3 + 1)
      tokenList = string.sub(tokenList, 1, bar3 - 1)
      local bar4 = string.find(quotaList, '|', 1, true)
      if bar4 then
        choice = string.sub(quotaList, bar4 + 1)
        quotaList = string.sub(quotaList, 1, bar4 - 1)
      end
    end
  end
  local windows, maxN, maxP = parsePairs(rest)
  local tokenWindows, _, maxTP = parsePairs(tokenList)
  return windows, maxN, maxP, tonumber(string.sub(value, 1, bar - 1)), tokenWindows, maxTP, quotaList, choice
end

local function readKey(keyId, value)
  local windows, maxN, maxP, index, tokenWindows, maxTP, quotaList, choice = parseWindows(value)
  local quotas, hasTokenQuota = parseQuotas(quotaList)
  local weight, cost = string.match(choice, '([^:]+):([^:]+)')
  local stKey = base .. ':st:' .. keyId
  local st = redis.call('HMGET', stKey, 'p', 'pr', 'cu', 'cr', 'seq', 'last', 'cw')
  return {
    weight = tonumber(weight) or 1, cost = tonumber(cost) or 0, cw = tonumber(st[7]) or 0,
    id = keyId, index = index, windows = windows, maxN = maxN, maxP = maxP,
    tokenWindows = tokenWindows, maxTP = maxTP,
    quotas = quotas, hasTokenQuota = hasTokenQuota,
    carriesTokens = #tokenWindows > 0 or hasTokenQuota,
    stKey = stKey, logKey = base .. ':log:' .. keyId,
    tlogKey = base .. ':tlog:' .. keyId, twKey = base .. ':tw:' .. keyId,
    parked = st[1] == '1', parkedReason = st[2] or '',
    coolUntil = tonumber(st[3]) or -INF, coolReason = st[4] or '',
    seq = tonumber(st[5]) or 0, last = tonumber(st[6]) or -INF,
  }
end

-- State is read once per script and written through; false marks an unknown key.
local keyCache = {}
local function loadKey(keyId)
  local k = keyCache[keyId]
  if k ~= nil then return k end
  local value = redis.call('HGET', cfgKey, keyId)
  if value then k = readKey(keyId, value) else k = false end
  keyCache[keyId] = k
  return k
end

-- The admission n ago (n = w.n: the ring's oldest slot in the memory store); -inf if fewer.
local function headMs(k, n)
  local r = redis.call('ZREVRANGE', k.logKey, n - 1, n - 1, 'WITHSCORES')
  if r[2] then return tonumber(r[2]) end
  return -INF
end

local function newestMs(k)
  local r = redis.call('ZREVRANGE', k.logKey, 0, 0, 'WITHSCORES')
  if r[2] then return tonumber(r[2]) end
  return -INF
end

-- Admissions the window would still take: its newest w.n entries that have left it.
local function remainingIn(k, w, nowMs)
  local inside = redis.call('ZCOUNT', k.logKey, '(' .. fmt(nowMs - w.p), '+inf')
  if inside > w.n then inside = w.n end
  return w.n - inside
end

-- Until one more admission keeps the window at most cap full (memory.ts waitMsUnder).
local function windowWaitMs(k, w, nowMs, cap)
  local waitMs = headMs(k, cap) + w.p - nowMs
  if waitMs > 0 then return waitMs end
  return 0
end

-- HMGET in chunks: unpack() of thousands of arguments would overflow Lua's C stack.
local UNPACK_CHUNK = 4000

-- A token window's admissions, oldest first: their times and weights.
local function tokenEntries(k, w, nowMs)
  local r = redis.call('ZRANGEBYSCORE', k.tlogKey, '(' .. fmt(nowMs - w.p), '+inf', 'WITHSCORES')
  local ids, times, weights = {}, {}, {}
  for j = 1, #r, 2 do
    ids[#ids + 1] = r[j]
    times[#times + 1] = tonumber(r[j + 1])
  end
  for from = 1, #ids, UNPACK_CHUNK do
    local to = math.min(from + UNPACK_CHUNK - 1, #ids)
    local ws = redis.call('HMGET', k.twKey, unpack(ids, from, to))
    for j = 1, #ws do weights[from + j - 1] = tonumber(ws[j]) or 0 end
  end
  return times, weights
end

local function tokensUsed(k, w, nowMs)
  local _, weights = tokenEntries(k, w, nowMs)
  local used = 0
  for _, wt in ipairs(weights) do used = used + wt end
  return used
end

-- As token-log.ts waitMs with a limit of n (w.n less any reserve): 0 when tokens fit now, else until enough of the oldest leave.
local function tokenWaitMs(k, w, nowMs, tokens, n)
  if tokens > n then return INF end
  local times, weights = tokenEntries(k, w, nowMs)
  local used = 0
  for _, wt in ipairs(weights) do used = used + wt end
  if used + tokens <= n then return 0 end
  for j = 1, #times do
    used = used - weights[j]
    if used + tokens <= n then return times[j] + w.p - nowMs end
  end
  return INF
end

-- The pool's reserve_for_high share, set by the decision scripts that take it (key-choice.ts reservedOf computes the same).
local reserveShare = 0
local function reservedOf(n)
  if not (reserveShare > 0) then return 0 end
  return math.ceil(math.floor(reserveShare * n * 1e6 + 0.5) / 1e6)
end

-- "<selection>:<reserveShare>" of ACQUIRE and LEASE: the pool's key selection; sets reserveShare.
local function readChoice(arg)
  local selection, share = string.match(arg, '([^:]+):([^:]+)')
  reserveShare = tonumber(share) or 0
  return selection or 'headroom'
end

-- As memory.ts nextByWeight: smooth weighted round robin over the keys for which usable(idx)
-- holds (all when nil), first in order on a tie; returns the key and its index, nil for none.
local function nextByWeight(keys, usable)
  local best, bestIdx, total = nil, nil, 0
  for idx, k in ipairs(keys) do
    if usable == nil or usable(idx) then
      k.cw = k.cw + k.weight
      total = total + k.weight
      if best == nil or k.cw > best.cw then
        best = k
        bestIdx = idx
      end
    end
  end
  if best then best.cw = best.cw - total end
  return best, bestIdx
end

local function saveWeights(keys)
  for _, k in ipairs(keys) do redis.call('HSET', k.stKey, 'cw', fmt(k.cw)) end
end

local function tokenResetMs(k, w, nowMs)
  local r = redis.call('ZREVRANGE', k.tlogKey, 0, 0, 'WITHSCORES')
  if not r[2] then return 0 end
  local resetMs = tonumber(r[2]) + w.p - nowMs
  if resetMs > 0 then return resetMs end
  return 0
end

local function quotaKey(k, q, startMs)
  return base .. ':q:' .. k.id .. ':' .. q.unit .. ':' .. q.cal .. ':' .. fmt(startMs)
end

-- A quota's count in the period holding atMs, and that period's end; nil for a period the caller didn't send.
local function quotaUsed(k, q, atMs)
  local startMs, endMs = periodAt(q.cal, atMs)
  if startMs == nil then return nil end
  return tonumber(redis.call('GET', quotaKey(k, q, startMs))) or 0, endMs
end

-- As memory.ts quotaWaitMsOf; nil when a period is unknown (a config swap in flight).
local function quotaWaitMs(k, q, nowMs, tokens, stampMs)
  local need = 1
  if q.unit == 't' and tokens > 1 then need = tokens end
  local used, endMs = quotaUsed(k, q, nowMs)
  if used == nil then return nil end
  if used + need > q.n then return endMs - nowMs end
  local stampUsed, stampEndMs = quotaUsed(k, q, stampMs)
  if stampUsed == nil then return nil end
  if stampUsed + need > q.n then return stampEndMs - nowMs end
  return 0
end

-- What a quota has left in the periods of nowMs and stampMs.
local function quotaRemaining(k, q, nowMs, stampMs)
  local used = quotaUsed(k, q, nowMs)
  local stampUsed = quotaUsed(k, q, stampMs)
  if stampUsed > used then used = stampUsed end
  local remaining = q.n - used
  if remaining < 0 then return 0 end
  return remaining
end

${HOLD_STATE_LUA}
-- As memory.ts roomOf: nil when parked or when tokens exceed a token limit; else wait, headroom, available.
-- normal: the request may not use the reserve_for_high share (every window's cap is its limit less reservedOf).
local function roomOf(k, nowMs, tokens, stampMs, normal)
  if k.parked then return nil end
  stampMs = stampMs or nowMs
  local held, heldTokens = {}, {}
  for j, w in ipairs(k.windows) do
    held[j] = 0
    if normal then held[j] = reservedOf(w.n) end
    -- A window wholly reserved is never this request's, whatever the wait.
    if w.n - held[j] < 1 then return nil end
  end
  for j, w in ipairs(k.tokenWindows) do
    heldTokens[j] = 0
    if normal then heldTokens[j] = reservedOf(w.n) end
    if tokens > w.n - heldTokens[j] then return nil end
  end
  local quotaWaits = {}
  for j, q in ipairs(k.quotas) do
    if q.unit == 't' and tokens > q.n then return nil end
    quotaWaits[j] = quotaWaitMs(k, q, nowMs, tokens, stampMs)
    if quotaWaits[j] == nil then return nil end
  end
  local coolingMs = k.coolUntil - nowMs
  if coolingMs > 0 then
    local waitMs = 0
    for j, w in ipairs(k.windows) do
      local wt = windowWaitMs(k, w, nowMs, w.n - held[j])
      if wt > waitMs then waitMs = wt end
    end
    for j, w in ipairs(k.tokenWindows) do
      local wt = tokenWaitMs(k, w, nowMs, tokens, w.n - heldTokens[j])
      if wt > waitMs then waitMs = wt end
    end
    for _, wt in ipairs(quotaWaits) do
      if wt > waitMs then waitMs = wt end
    end
    if coolingMs > waitMs then waitMs = coolingMs end
    local holdWaitMs = holdRoom(k, nowMs)
    if holdWaitMs > waitMs then waitMs = holdWaitMs end
    return waitMs, 0, 0
  end
  local waitMs, headroom = holdRoom(k, nowMs)
  local available = INF
  for j, w in ipairs(k.windows) do
    local head = headMs(k, w.n - held[j])
    if head <= nowMs - w.p then
      local remaining = remainingIn(k, w, nowMs)
      if remaining / w.n < headroom then headroom = remaining / w.n end
      if remaining - held[j] < available then available = remaining - held[j] end
    else
      local wt = head + w.p - nowMs
      if wt > waitMs then waitMs = wt end
    end
  end
  for j, w in ipairs(k.tokenWindows) do
    local wt = tokenWaitMs(k, w, nowMs, tokens, w.n - heldTokens[j])
    if wt > 0 then
      if wt > waitMs then waitMs = wt end
    else
      local remaining = w.n - tokensUsed(k, w, nowMs)
      if remaining / w.n < headroom then headroom = remaining / w.n end
    end
  end
  for j, q in ipairs(k.quotas) do
    if quotaWaits[j] > 0 then
      if quotaWaits[j] > waitMs then waitMs = quotaWaits[j] end
    else
      local remaining = quotaRemaining(k, q, nowMs, stampMs)
      if remaining / q.n < headroom then headroom = remaining / q.n end
      if q.unit == 'r' and remaining < available then available = remaining end
    end
  end
  return waitMs, headroom, available
end

local seq = nil
local function nextSeq()
  if seq == nil then seq = tonumber(redis.call('GET', seqKey)) or 0 end
  seq = seq + 1
  return seq
end
local function flushSeq()
  if seq ~= nil then redis.call('SET', seqKey, fmt(seq)) end
end

-- Slack past the newest admission's window before idle logs expire: covers
-- replicas whose clocks disagree a little with each other and with Redis.
local IDLE_SLACK_MS = 60000
local ZADD_CHUNK = 500

-- Records slots admissions at atMs, clamped so the log never goes back in time.
local function record(k, nowMs, atMs, slots)
  local admittedMs = atMs
  if k.last > admittedMs then admittedMs = k.last end
  k.last = admittedMs
  k.seq = nextSeq()
  redis.call('HSET', k.stKey, 'seq', fmt(k.seq), 'last', fmt(admittedMs))
  if k.maxN == 0 then return end
  -- Only the newest maxN can ever count; never write more than that.
  local n = slots
  if n > k.maxN then n = k.maxN end
  local score = fmt(admittedMs)
  local args = {}
  for s = 1, n do
    args[#args + 1] = score
    args[#args + 1] = k.seq .. '.' .. s
    if #args >= 2 * ZADD_CHUNK or s == n then
      redis.call('ZADD', k.logKey, unpack(args))
      args = {}
    end
  end
  redis.call('ZREMRANGEBYRANK', k.logKey, 0, -(k.maxN + 1))
  redis.call('PEXPIRE', k.logKey, fmt(math.ceil(admittedMs + k.maxP - nowMs) + IDLE_SLACK_MS))
end

-- Records tokens at atMs under id, and forgets admissions no token window can see any more
-- at nowMs (not atMs: a lease records at its end, and its windows are still read at nowMs).
local function recordTokens(k, nowMs, atMs, tokens, id)
  local cutoff = fmt(nowMs - k.maxTP)
  local old = redis.call('ZRANGEBYSCORE', k.tlogKey, '-inf', cutoff)
  for from = 1, #old, UNPACK_CHUNK do
    redis.call('HDEL', k.twKey, unpack(old, from, math.min(from + UNPACK_CHUNK - 1, #old)))
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', k.tlogKey, '-inf', cutoff) end
  redis.call('ZADD', k.tlogKey, fmt(atMs), id)
  redis.call('HSET', k.twKey, id, fmt(tokens))
  local ttl = fmt(math.ceil(atMs + k.maxTP - nowMs) + IDLE_SLACK_MS)
  redis.call('PEXPIRE', k.tlogKey, ttl)
  redis.call('PEXPIRE', k.twKey, ttl)
end

-- Past its period's end a count only serves settles that arrive late and the snapshot.
local QUOTA_SLACK_MS = 3600000

local function addQuota(k, q, nowMs, atMs, amount)
  local startMs, endMs = periodAt(q.cal, atMs)
  if startMs == nil then return end
  local key = quotaKey(k, q, startMs)
  redis.call('INCRBY', key, amount)
  redis.call('PEXPIRE', key, fmt(math.ceil(endMs - nowMs) + QUOTA_SLACK_MS))
end

-- As memory.ts recordQuotas: counted at nowMs, and again in the next period when a lease's hold reaches it.
local function recordQuotas(k, nowMs, stampMs, slots, tokens)
  for _, q in ipairs(k.quotas) do
    local amount = slots
    if q.unit == 't' then amount = tokens end
    if amount > 0 then
      addQuota(k, q, nowMs, nowMs, amount)
      if periodAt(q.cal, stampMs) ~= periodAt(q.cal, nowMs) then addQuota(k, q, nowMs, stampMs, amount) end
    end
  end
end

-- Shrinks a token admission's weight by up to amount, if a token window still sees it.
local function shrinkTokens(k, admissionId, amount)
  if #k.tokenWindows == 0 then return end
  local weight = tonumber(redis.call('HGET', k.twKey, admissionId))
  if weight == nil then return end
  weight = weight - amount
  if weight < 0 then weight = 0 end
  redis.call('HSET', k.twKey, admissionId, fmt(weight))
end

-- Gives back up to amount of a quota's count in the period of atMs, if that count is still kept.
local function takeQuota(k, q, atMs, amount)
  local startMs = periodAt(q.cal, atMs)
  if startMs == nil then return end
  local key = quotaKey(k, q, startMs)
  local used = tonumber(redis.call('GET', key))
  if used ~= nil then
    used = used - amount
    if used < 0 then used = 0 end
    redis.call('SET', key, fmt(used), 'KEEPTTL')
  end
end

-- Gives back up to amount of a token quota's count in the period of stampMs.
local function refundQuotas(k, stampMs, amount)
  for _, q in ipairs(k.quotas) do
    if q.unit == 't' then takeQuota(k, q, stampMs, amount) end
  end
end

-- "<seq>", or "<seq>@<stampMs>" for a key with token quotas (see quota-counter.ts admissionIdOf).
local function admissionIdOf(k, stampMs)
  if k.hasTokenQuota then return fmt(k.seq) .. '@' .. fmt(stampMs) end
  return fmt(k.seq)
end

local function conditionOf(k, nowMs)
  if k.parked then return { 'PARKED', k.parkedReason, '' } end
  if k.coolUntil > nowMs then return { 'COOLING', k.coolReason, fmt(k.coolUntil - skewMs) } end
  return { 'READY', '', '' }
end
`;
