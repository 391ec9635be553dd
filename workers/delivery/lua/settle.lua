-- Record the outcome of delivery attempts and what the answers say about the gate,
-- atomically per batch.
--
-- delivered: the claimed version reached Datadog; due again at once if a newer one was folded
--            while in flight (never a state older than one delivered: versions only grow).
-- retry:     due again after `delay_ms`; the attempt count and the first failure are kept.
-- wait:      due again after `delay_ms`, no attempt counted (a finish waiting for its start,
--            or a claim released at shutdown).
-- dead:      a dead letter with the reason and details; the incident stays stored, so a later
--            change to it is delivered again.
-- Only the holder of the claim moves the incident; a settlement whose lease lapsed and was
-- taken over only records a delivered version.
--
-- Gate (see claim.lua): `close_ms` closes it (never shortens a closure); a refused key also
-- forgets what is known about limits, so that the reopened gate lets one probe through.
--
-- KEYS: 1 due, 2 inflight, 3 dead, 4 stats, 5 gate
-- ARGV: 1 incident key prefix, 2 token, 3 now_ms ('' for Redis' clock),
--       4 close_ms, 5 close reason, 6 close detail,
--       7 budget limit (0: no budget seen), 8 remaining, 9 reset_ms, 10 period_ms,
--       11 unlimited (1: a 2xx came without rate-limit headers), 12 answered (1: any answer),
--       then per outcome: id, version, verdict, delay_ms, reason, detail (JSON, dead letters)
-- Returns: {delivered, retry, dead, stale, gate newly closed (0/1)}
local now = clock_ms(ARGV[3])
local prefix, token = ARGV[1], ARGV[2]

local counts = {delivered = 0, retry = 0, wait = 0, dead = 0, stale = 0}
local last_error = nil
for i = 13, #ARGV, 6 do
  local id, version, verdict = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local delay_ms, reason, detail = tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5]
  local key = prefix .. id
  if redis.call('EXISTS', key) == 1 then
    local owned = redis.call('HGET', key, 'claim') == token
    local current = tonumber(redis.call('HGET', key, 'version') or '0')
    if verdict == 'delivered' then
      if version > tonumber(redis.call('HGET', key, 'sent') or '0') then
        redis.call('HSET', key, 'sent', version)
      end
    end
    if not owned then
      counts.stale = counts.stale + 1
    else
      redis.call('ZREM', KEYS[2], id)
      redis.call('HDEL', key, 'claim')
      counts[verdict] = counts[verdict] + 1
      if verdict == 'retry' or verdict == 'dead' then last_error = id .. ': ' .. reason end
      if verdict == 'wait' then
        redis.call('ZADD', KEYS[1], ms(now + delay_ms), id)
      elseif verdict == 'retry' then
        redis.call('HINCRBY', key, 'attempt', 1)
        redis.call('HSETNX', key, 'failing_since_ms', ms(now))
        redis.call('HSET', key, 'last_error', reason)
        redis.call('ZADD', KEYS[1], ms(now + delay_ms), id)
      else
        redis.call('HDEL', key, 'attempt', 'failing_since_ms', 'last_error')
        if verdict == 'dead' then
          redis.call('HSET', key, 'dead_version', version)
          redis.call('XADD', KEYS[3], '*', 'source', 'incident', 'incident_id', id,
            'reason', reason, 'detail', detail, 'at_ms', ms(now))
        end
        if current > version then redis.call('ZADD', KEYS[1], ms(now), id) end
      end
    end
  end
end

-- The gate.
local close_ms, close_reason, close_detail = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local budget_limit, remaining = tonumber(ARGV[7]), tonumber(ARGV[8])
local reset_ms, period_ms = tonumber(ARGV[9]), tonumber(ARGV[10])
local newly_closed = 0
if close_ms > 0 then
  local closed_until = tonumber(redis.call('HGET', KEYS[5], 'closed_until_ms') or '0')
  if closed_until <= now then newly_closed = 1 end
  if now + close_ms > closed_until then
    redis.call('HSET', KEYS[5], 'closed_until_ms', ms(now + close_ms), 'reason', close_reason,
      'detail', close_detail, 'closed_at_ms', ms(now))
  end
  if close_reason == 'auth' then
    redis.call('HDEL', KEYS[5], 'limit', 'remaining', 'window_end_ms', 'period_ms',
      'budget_ms', 'unlimited_ms', 'probe_until_ms')
  end
end
if budget_limit > 0 and close_reason ~= 'auth' then
  local new_end = now + reset_ms
  local known_end = tonumber(redis.call('HGET', KEYS[5], 'window_end_ms') or '0')
  local known_at = tonumber(redis.call('HGET', KEYS[5], 'budget_ms') or '0')
  if now - known_at >= KNOWLEDGE_MS or math.abs(new_end - known_end) > 1000 then
    -- A window we did not know about: take the server's count as it is.
    redis.call('HSET', KEYS[5], 'window_end_ms', ms(new_end), 'remaining', remaining)
  else
    -- The same window: in-flight answers arrive in any order; the smallest count is current.
    local known = tonumber(redis.call('HGET', KEYS[5], 'remaining') or remaining)
    if remaining < known then redis.call('HSET', KEYS[5], 'remaining', remaining) end
  end
  redis.call('HSET', KEYS[5], 'limit', budget_limit, 'period_ms', ms(period_ms),
    'budget_ms', ms(now))
end
if ARGV[11] == '1' and close_reason ~= 'auth' then
  redis.call('HSET', KEYS[5], 'unlimited_ms', ms(now))
end
if ARGV[12] == '1' and close_reason ~= 'auth' then redis.call('HDEL', KEYS[5], 'probe_until_ms') end

if counts.delivered > 0 then
  redis.call('HINCRBY', KEYS[4], 'delivered', counts.delivered)
  redis.call('HSET', KEYS[4], 'last_success_ms', ms(now))
end
if last_error then redis.call('HSET', KEYS[4], 'last_error', last_error, 'last_error_ms', ms(now)) end
if counts.retry > 0 then redis.call('HINCRBY', KEYS[4], 'retries', counts.retry) end
if counts.dead > 0 then redis.call('HINCRBY', KEYS[4], 'dead_letters', counts.dead) end
return {counts.delivered, counts.retry, counts.dead, counts.stale, newly_closed}
