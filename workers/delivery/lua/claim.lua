-- Claim up to `limit` due incidents for delivery, under a lease, if the fleet's gate allows.
--
-- The gate (one hash for the whole fleet) is checked and spent in the same step as the
-- claim, so that no two workers spend the same request of Datadog's budget:
--   closed_until_ms     nothing is sent before (a 429, or a refused key); `reason` says why
--   limit, remaining,   Datadog's window as its X-RateLimit-* headers describe it; when the
--   window_end_ms,      window ends, the next one starts with `limit` requests
--   period_ms
--   unlimited_ms        when an answer last came without rate-limit headers
--   probe_until_ms,     while nothing is known about limits, one request at a time; `probe`
--   probe               is the incident it claimed (settle.lua gives back one that sent nothing)
--   tokens, tokens_ms   the optional fleet-wide ceiling (requests per second)
--   breaker_*           the circuit breaker (settle.lua opens and closes it): while open,
--                       one probe at a time, none before breaker_probe_at_ms
-- Claims whose lease lapsed (their worker died or hung) fall due again first. Each claim
-- stores the caller's token in the incident, so that a late settlement by a worker whose
-- lease lapsed cannot undo the work of the worker that took over.
-- A claimed state never expires (settle.lua starts its retention once it is quiet); a due
-- incident whose state is gone anyway becomes a dead letter, never a silent drop (I1).
--
-- KEYS: due, inflight, dead, stats, gate, app_key_waits (a state dead-lettered here waits no more)
-- ARGV (ClaimArgs in workers/delivery/scripts.py): incident key prefix, limit, lease_ms,
--       token, probe_ms, ceiling_per_s (0: none), now_ms ('' for Redis' clock; tests pin it),
--       breaker_probe_ms, breaker_probe_max_ms (the breaker's probe spacing: first, longest)
-- Returns: {now_ms, wait_ms, reason, app_key_closed_until_ms (0: PATCH and DELETE may go),
--          reopened, {id, field, value, ...}, ...} without s:* fields. `reopened` is the reason
--          of a closure this call found over ('' if none): it is reported once, to the one
--          worker that logs the gate's reopening for the fleet.
local due_key, inflight_key, dead_key, stats_key, gate_key, app_key_waits_key = unpack(KEYS, 1, 6)
local prefix, limit, lease_ms, token, probe_ms, ceiling_per_s, now_ms, breaker_probe_ms,
  breaker_probe_max_ms = unpack(ARGV, 1, 9)
local now = clock_ms(now_ms)
limit, lease_ms, probe_ms = tonumber(limit), tonumber(lease_ms), tonumber(probe_ms)
local ceiling = tonumber(ceiling_per_s)
local refused = check_types({{due_key, 'zset'}, {inflight_key, 'zset'}, {dead_key, 'stream'},
  {stats_key, 'hash'}, {gate_key, 'hash'}, {app_key_waits_key, 'zset'}})
if refused then return refused end

local lapsed = redis.call('ZRANGEBYSCORE', inflight_key, '-inf', ms(now), 'LIMIT', 0, limit)
for _, id in ipairs(lapsed) do
  redis.call('ZREM', inflight_key, id)
  redis.call('ZADD', due_key, ms(now), id)
  -- Its worker died or hung, and its request may have landed unanswered: what done:post,
  -- done:patch and a finish record's digest say Datadog holds may no longer be so, and a
  -- state folded back to that content would be taken as delivered. Forgotten, the POST and
  -- PATCH go again (a DELETE accepted before stays: no later request undoes it).
  if of_type(prefix .. id, 'hash') then
    redis.call('HDEL', prefix .. id, 'claim', 'done:post', 'done:patch', 'remembered')
  end
end
if #lapsed > 0 then add(stats_key, 'leases_lapsed', #lapsed) end

local g = {}
local raw = redis.call('HGETALL', gate_key)
for i = 1, #raw, 2 do g[raw[i]] = raw[i + 1] end
-- Datadog refused the application key: the claims' PATCH and DELETE wait (POSTs go).
local app_key_until = ms(num(g.app_key_closed_until_ms) or 0)

local closed_until = num(g.closed_until_ms) or 0
if closed_until > now then
  return {ms(now), ms(closed_until - now), g.reason or 'closed', app_key_until, ''}
end
local reopened = ''
if closed_until > 0 then
  -- Over: 0 marks it announced (the reason stays, lift_auth_pause.lua reads it).
  redis.call('HSET', gate_key, 'closed_until_ms', 0)
  reopened = g.reason or 'closed'
end

-- The API looks down: one probe at a time, spaced, stands in for every waiting incident.
local breaker_probe = g.breaker_opened_ms ~= nil
if breaker_probe then
  local probe_at = num(g.breaker_probe_at_ms) or 0
  if probe_at > now then
    return {ms(now), ms(probe_at - now), 'breaker', app_key_until, reopened}
  end
  if g.breaker_probe and redis.call('ZSCORE', inflight_key, g.breaker_probe) then
    return {ms(now), '100', 'breaker', app_key_until, reopened}
  end
end

local allowed, wait, why = limit, 0, ''
if breaker_probe then allowed = 1 end
local budget_limit, remaining = count(g.limit), count(g.remaining)
local window_end, period = num(g.window_end_ms), num(g.period_ms)
local budgeted, probing = false, false
-- A budget with a part missing or absurd (written by hand, or unchecked by an older version)
-- is no budget: nothing is known, and one probe finds out.
if budget_limit and budget_limit > 0 and remaining and window_end and period and period > 0
    and now - (num(g.budget_ms) or 0) < KNOWLEDGE_MS then
  budgeted = true
  if now >= window_end then
    -- Datadog's windows are fixed and back to back: the next one has the full limit.
    window_end = window_end + (math.floor((now - window_end) / period) + 1) * period
    remaining = budget_limit
    redis.call('HSET', gate_key, 'window_end_ms', ms(window_end), 'remaining', ms(remaining))
  end
  if remaining < allowed then allowed = remaining end
  if allowed <= 0 then wait, why = window_end - now, 'budget' end
elseif now - (num(g.unlimited_ms) or -KNOWLEDGE_MS) >= KNOWLEDGE_MS then
  -- Nothing known about limits (first start, or after a refused key): one request finds out.
  local probe_until = num(g.probe_until_ms) or 0
  if probe_until > now then
    allowed, wait, why = 0, math.min(probe_until - now, 100), 'probe'
  else
    allowed, probing = math.min(allowed, 1), true
  end
end

local tokens = 0
if ceiling > 0 and allowed > 0 then
  local burst = math.max(1, ceiling)
  tokens = num(g.tokens) or burst
  local since = now - (num(g.tokens_ms) or now)
  tokens = math.min(burst, tokens + since * ceiling / 1000)
  redis.call('HSET', gate_key, 'tokens', tostring(tokens), 'tokens_ms', ms(now))
  if math.floor(tokens) < allowed then allowed = math.floor(tokens) end
  if allowed <= 0 then wait, why = math.ceil((1 - tokens) * 1000 / ceiling), 'ceiling' end
end

if allowed <= 0 then return {ms(now), ms(math.max(wait, 1)), why, app_key_until, reopened} end

local MISSING = 'the state is missing (deleted by hand, evicted by a Redis whose '
  .. 'maxmemory-policy is not noeviction, or expired under an older version): nothing to send'
local out = {ms(now), '0', '', app_key_until, reopened}
local missing = 0
local ids = redis.call('ZRANGEBYSCORE', due_key, '-inf', ms(now), 'LIMIT', 0, allowed)
for _, id in ipairs(ids) do
  redis.call('ZREM', due_key, id)
  local key = prefix .. id
  local is_hash, kind = of_type(key, 'hash')
  local fields = {}
  if is_hash then fields = redis.call('HGETALL', key) end
  if #fields == 0 then
    -- Gone, or not a state at all (a key someone wrote by hand): a dead letter, never a
    -- failed script (ids of this batch may already be in flight).
    local reason = MISSING
    if not is_hash then reason = 'the state is not a hash but a ' .. kind .. ': nothing to send' end
    missing = missing + 1
    redis.call('ZREM', app_key_waits_key, id)  -- no longer waiting for the application key
    redis.call('XADD', dead_key, '*', 'source', 'incident', 'incident_id', id, 'reason', reason,
      'detail', '{"status":null,"response":null,"attributes":null,"attempts":0}', 'at_ms', ms(now))
    redis.call('HSET', stats_key, 'last_error', id .. ': ' .. reason, 'last_error_ms', ms(now))
  else
    redis.call('PERSIST', key)  -- an expiry an older version set
    redis.call('ZADD', inflight_key, ms(now + lease_ms), id)
    redis.call('HSET', key, 'claim', token)
    local kept = {id}
    for f = 1, #fields, 2 do
      if string.sub(fields[f], 1, 2) ~= 's:' and fields[f] ~= 'claim' then
        kept[#kept + 1] = fields[f]
        kept[#kept + 1] = fields[f + 1]
      end
    end
    out[#out + 1] = kept
  end
end

if missing > 0 then
  add(stats_key, 'dead_letters', missing)
  add(stats_key, 'states_missing', missing)
end

-- Ids are in flight now: nothing below may fail (Redis does not undo a script's earlier writes,
-- and a failure would strand them until their lease ends). Hence HSET of values computed here,
-- never HINCRBY on what the hash holds.
local sent = #out - 5
if sent > 0 then
  if budgeted then redis.call('HSET', gate_key, 'remaining', ms(remaining - sent)) end
  if ceiling > 0 then redis.call('HSET', gate_key, 'tokens', tostring(tokens - sent)) end
  if probing then
    redis.call('HSET', gate_key, 'probe_until_ms', ms(now + probe_ms), 'probe', out[6][1])
  end
  if breaker_probe then
    local probes = (num(g.breaker_probes) or 0) + 1
    -- As BreakerPolicy.probe_spacing_ms: doubling, capped.
    local spacing = math.min(tonumber(breaker_probe_max_ms),
      tonumber(breaker_probe_ms) * 2 ^ probes)
    redis.call('HSET', gate_key, 'breaker_probe', out[6][1], 'breaker_probes', probes,
      'breaker_probe_at_ms', ms(now + spacing))
    add(stats_key, 'breaker_probes', 1)
  end
end
return out
