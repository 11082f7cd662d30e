/**
 * Lua shared by every limiter script (prepended to each). One script call
 * works on one pool: KEYS[1] is the pool's config hash `<base>:cfg` and
 * ARGV[1] is `<base>` = `<prefix>:limiter:{<poolId>}`. The per-key keys
 * (`<base>:st:<keyId>`, `<base>:log:<keyId>`) and `<base>:seq` are derived here
 * rather than declared, as BullMQ does: they all carry the pool's `{poolId}`
 * hash tag, so they live in KEYS[1]'s Redis Cluster slot.
 *
 * Data model, per pool:
 *   <base>:cfg         hash keyId -> "<configIndex>|<requests>:<perMs>,...|<tokens>:<perMs>,..."
 *   <base>:seq         grant counter; ties go to the key with the lowest last grant
 *   <base>:st:<keyId>  hash p (parked "1"), pr (park reason), cu/cr (cooling until/reason),
 *                      seq (last grant), last (newest recorded admission)
 *   <base>:log:<keyId> zset of admissions, score = time, the newest max(requests)
 *                      of them: the memory store's rings, one per window, all
 *                      record every admission, so the window of N looks at the
 *                      newest N entries of this one set.
 *   <base>:tlog:<keyId> zset of admissions of a key with token windows, member =
 *                      admission id (the grant's seq), score = time; kept while
 *                      the longest token window can see them
 *   <base>:tw:<keyId>  hash admission id -> tokens it weighs (shrunk by refunds)
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

-- Request windows, their max N and max perMs, the config index, token windows and their max perMs.
local function parseWindows(value)
  local bar = string.find(value, '|', 1, true)
  local rest = string.sub(value, bar + 1)
  local tokenList = ''
  local bar2 = string.find(rest, '|', 1, true)
  if bar2 then
    tokenList = string.sub(rest, bar2 + 1)
    rest = string.sub(rest, 1, bar2 - 1)
  end
  local windows, maxN, maxP = parsePairs(rest)
  local tokenWindows, _, maxTP = parsePairs(tokenList)
  return windows, maxN, maxP, tonumber(string.sub(value, 1, bar - 1)), tokenWindows, maxTP
end

local function readKey(keyId, value)
  local windows, maxN, maxP, index, tokenWindows, maxTP = parseWindows(value)
  local stKey = base .. ':st:' .. keyId
  local st = redis.call('HMGET', stKey, 'p', 'pr', 'cu', 'cr', 'seq', 'last')
  return {
    id = keyId, index = index, windows = windows, maxN = maxN, maxP = maxP,
    tokenWindows = tokenWindows, maxTP = maxTP,
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

-- The admission w.n ago (the ring's oldest slot in the memory store); -inf if fewer.
local function headMs(k, w)
  local r = redis.call('ZREVRANGE', k.logKey, w.n - 1, w.n - 1, 'WITHSCORES')
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

local function windowWaitMs(k, w, nowMs)
  local waitMs = headMs(k, w) + w.p - nowMs
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

-- As token-log.ts waitMs: 0 when tokens fit now, else until enough of the oldest leave.
local function tokenWaitMs(k, w, nowMs, tokens)
  if tokens > w.n then return INF end
  local times, weights = tokenEntries(k, w, nowMs)
  local used = 0
  for _, wt in ipairs(weights) do used = used + wt end
  if used + tokens <= w.n then return 0 end
  for j = 1, #times do
    used = used - weights[j]
    if used + tokens <= w.n then return times[j] + w.p - nowMs end
  end
  return INF
end

local function tokenResetMs(k, w, nowMs)
  local r = redis.call('ZREVRANGE', k.tlogKey, 0, 0, 'WITHSCORES')
  if not r[2] then return 0 end
  local resetMs = tonumber(r[2]) + w.p - nowMs
  if resetMs > 0 then return resetMs end
  return 0
end

-- As memory.ts roomOf: nil when parked or when tokens exceed a token limit; else wait, headroom, available.
local function roomOf(k, nowMs, tokens)
  if k.parked then return nil end
  for _, w in ipairs(k.tokenWindows) do
    if tokens > w.n then return nil end
  end
  local coolingMs = k.coolUntil - nowMs
  if coolingMs > 0 then
    local waitMs = 0
    for _, w in ipairs(k.windows) do
      local wt = windowWaitMs(k, w, nowMs)
      if wt > waitMs then waitMs = wt end
    end
    for _, w in ipairs(k.tokenWindows) do
      local wt = tokenWaitMs(k, w, nowMs, tokens)
      if wt > waitMs then waitMs = wt end
    end
    if coolingMs > waitMs then waitMs = coolingMs end
    return waitMs, 0, 0
  end
  local headroom, available, waitMs = INF, INF, 0
  for _, w in ipairs(k.windows) do
    local head = headMs(k, w)
    if head <= nowMs - w.p then
      local remaining = remainingIn(k, w, nowMs)
      if remaining / w.n < headroom then headroom = remaining / w.n end
      if remaining < available then available = remaining end
    else
      local wt = head + w.p - nowMs
      if wt > waitMs then waitMs = wt end
    end
  end
  for _, w in ipairs(k.tokenWindows) do
    local wt = tokenWaitMs(k, w, nowMs, tokens)
    if wt > 0 then
      if wt > waitMs then waitMs = wt end
    else
      local remaining = w.n - tokensUsed(k, w, nowMs)
      if remaining / w.n < headroom then headroom = remaining / w.n end
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

-- Records tokens at atMs under id, and forgets admissions no token window can see any more.
local function recordTokens(k, nowMs, atMs, tokens, id)
  local cutoff = fmt(atMs - k.maxTP)
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

local function conditionOf(k, nowMs)
  if k.parked then return { 'PARKED', k.parkedReason, '' } end
  if k.coolUntil > nowMs then return { 'COOLING', k.coolReason, fmt(k.coolUntil) } end
  return { 'READY', '', '' }
end
`;
