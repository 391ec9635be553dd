-- Reopen the gate if a refused key closed it, so that the next claim probes the key at once
-- (a worker is often restarted precisely to fix the key). Any other closure, a 429's, stays.
-- One step, so that a closure for another reason in between is never undone.
-- A pause that has ended is left alone: the reason stays in the hash after it (for status),
-- and lifting it again would say "refused before" at every start, long after the key worked.
-- KEYS: gate
-- ARGV (LiftAuthPauseArgs): auth_reason (the reason a refused key closes the gate with),
--       now_ms ('' for Redis' clock; tests pin it)
-- Returns: 1 if a pause for a refused key was lifted, else 0.
local gate_key = unpack(KEYS, 1, 1)
local auth_reason, now_ms = unpack(ARGV, 1, 2)
if redis.call('HGET', gate_key, 'reason') ~= auth_reason then return 0 end
local until_ms = num(redis.call('HGET', gate_key, 'closed_until_ms')) or 0
if until_ms <= clock_ms(now_ms) then return 0 end
redis.call('HSET', gate_key, 'closed_until_ms', 0)
return 1
