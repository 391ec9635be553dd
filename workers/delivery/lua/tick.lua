-- Whether a beat tick is too old to run, by Redis' clock at both ends; counts those dropped.
-- KEYS: 1 stats (hash)
-- ARGV: 1 when the tick was sent (ms, Redis clock), 2 oldest age that still runs (ms),
--       3 the stats field that counts dropped ticks, 4 "now" override (ms; tests, else '')
-- Returns {age (ms), the fleet's count of dropped ticks after this one, or 0 if it runs}.
local now = clock_ms(ARGV[4])
local age = now - tonumber(ARGV[1])
if age <= tonumber(ARGV[2]) then
  return {ms(age), 0}
end
return {ms(age), redis.call('HINCRBY', KEYS[1], ARGV[3], 1)}
