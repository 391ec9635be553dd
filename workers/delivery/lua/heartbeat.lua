-- A worker process says it is alive, on Redis' clock (the fleet's one clock).
-- KEYS: workers (sorted set)
-- ARGV (HeartbeatArgs): consumer name, forget_after_ms (forget processes silent this long)
local workers_key = unpack(KEYS, 1, 1)
local consumer, forget_after_ms = unpack(ARGV, 1, 2)
local now = clock_ms(nil)
redis.call('ZADD', workers_key, ms(now), consumer)
redis.call('ZREMRANGEBYSCORE', workers_key, '-inf', ms(now - tonumber(forget_after_ms)))
return ms(now)
