-- Whether a beat tick is too old to run, by Redis' clock at both ends; counts those dropped.
-- KEYS: stats (hash)
-- ARGV (TickArgs): sent_ms (when the tick was sent, Redis' clock), max_age_ms (the oldest
--       age that still runs), now_ms ('' for Redis' clock; tests pin it)
-- Returns {age (ms), the fleet's count of dropped ticks after this one, or 0 if it runs}.
local stats_key = unpack(KEYS, 1, 1)
local sent_ms, max_age_ms, now_ms = unpack(ARGV, 1, 3)
local now = clock_ms(now_ms)
local age = now - tonumber(sent_ms)
if age <= tonumber(max_age_ms) then
  return {ms(age), 0}
end
return {ms(age), redis.call('HINCRBY', stats_key, 'ticks_dropped', 1)}
