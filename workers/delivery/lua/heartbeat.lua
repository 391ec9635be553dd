-- A worker process says it is alive, on Redis' clock (the fleet's one clock).
-- KEYS: 1 workers (sorted set)   ARGV: 1 consumer name, 2 forget processes silent this long (ms)
local now = clock_ms(nil)
redis.call('ZADD', KEYS[1], ms(now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms(now - tonumber(ARGV[2])))
return ms(now)
