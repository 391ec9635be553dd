-- Claim up to `limit` due incidents for delivery, under a lease, and return their state.
--
-- Claims whose lease lapsed (their worker died or hung) fall due again first. Each claim
-- stores the caller's token in the incident, so that a late settlement by a worker whose
-- lease lapsed cannot undo the work of the worker that took over.
--
-- KEYS: 1 due, 2 inflight, 3 stats
-- ARGV: 1 incident key prefix, 2 limit, 3 lease_ms, 4 token
-- Returns: {now_ms, {id, field, value, ...}, ...} without the s:* bookkeeping fields.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, limit, lease_ms, token = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]

local function ms(x) return string.format('%.0f', x) end

local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ms(now), 'LIMIT', 0, limit)
for _, id in ipairs(lapsed) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ms(now), id)
  redis.call('HDEL', prefix .. id, 'claim')
end
if #lapsed > 0 then redis.call('HINCRBY', KEYS[3], 'leases_lapsed', #lapsed) end

local out = {ms(now)}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms(now), 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = prefix .. id
  local fields = redis.call('HGETALL', key)
  -- A hash that expired (retention) or was purged has nothing left to deliver.
  if #fields > 0 then
    redis.call('ZADD', KEYS[2], ms(now + lease_ms), id)
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
return out
