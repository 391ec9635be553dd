-- Record the outcome of delivery attempts, atomically per batch.
--
-- delivered: the claimed version reached Datadog; due again at once if a newer one was folded
--            while in flight (never a state older than one delivered: versions only grow).
-- retry:     due again after `delay_ms`; the attempt count and the first failure are kept.
-- wait:      a finish still waiting for its start: due again after `delay_ms`, no attempt counted.
-- dead:      a dead letter with the reason and details; the incident stays stored, so a later
--            change to it is delivered again.
-- Only the holder of the claim moves the incident; a settlement whose lease lapsed and was
-- taken over only records a delivered version.
--
-- KEYS: 1 due, 2 inflight, 3 dead, 4 stats
-- ARGV: 1 incident key prefix, 2 token, then per outcome: id, version, verdict, delay_ms,
--       reason, detail (JSON, for dead letters)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, token = ARGV[1], ARGV[2]

local function ms(x) return string.format('%.0f', x) end

local counts = {delivered = 0, retry = 0, wait = 0, dead = 0, stale = 0}
local last_error = nil
for i = 3, #ARGV, 6 do
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
if counts.delivered > 0 then
  redis.call('HINCRBY', KEYS[4], 'delivered', counts.delivered)
  redis.call('HSET', KEYS[4], 'last_success_ms', ms(now))
end
if last_error then redis.call('HSET', KEYS[4], 'last_error', last_error, 'last_error_ms', ms(now)) end
if counts.retry > 0 then redis.call('HINCRBY', KEYS[4], 'retries', counts.retry) end
if counts.dead > 0 then redis.call('HINCRBY', KEYS[4], 'dead_letters', counts.dead) end
return {counts.delivered, counts.retry, counts.dead, counts.stale}
