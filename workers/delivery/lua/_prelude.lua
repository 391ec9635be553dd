-- Prepended to every script when it is loaded (see workers/delivery/scripts.py).

-- A score or time as Redis wants it: an integer, never 1.7e+12.
local function ms(x) return string.format('%.0f', x) end

-- Redis' clock in milliseconds (one clock for the whole fleet); `override` pins it in tests.
local function clock_ms(override)
  if override and override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- What X-RateLimit-* headers (or their absence) told the gate is trusted this long.
local KNOWLEDGE_MS = 600000

-- Whether a state id names an incident (a deployment's is `deployment/<id>`).
local function is_incident(state_id) return not string.find(state_id, '/', 1, true) end

-- The most requests per window the gate believes (MAX_BUDGET_REQUESTS in workers/delivery/gate.py).
local MAX_BUDGET_REQUESTS = 1000000

-- A finite number, or nil for anything else (missing, a word, inf, nan).
local function num(v)
  local n = tonumber(v)
  if n and n == n and n > -math.huge and n < math.huge then return n end
  return nil
end

-- A request count of the gate: an integer in 0..MAX_BUDGET_REQUESTS, or nil for anything else
-- (e.g. '1e+17', as versions before the bound wrote it): such a budget counts as unknown.
local function count(v)
  local n = num(v)
  if n and n >= 0 and n <= MAX_BUDGET_REQUESTS then return math.floor(n) end
  return nil
end

-- Whether `key` is missing or of type `wanted`; and its type.
local function of_type(key, wanted)
  local kind = redis.call('TYPE', key)['ok']
  return kind == 'none' or kind == wanted, kind
end

-- Refuse to run on shared keys of the wrong type, before any write: Redis does not undo the
-- writes of a script that fails halfway. BADKEY: Redis-wide, every run would fail alike.
local function check_types(pairs_of_key_and_type)
  for _, pair in ipairs(pairs_of_key_and_type) do
    local ok, kind = of_type(pair[1], pair[2])
    if not ok then return redis.error_reply('BADKEY ' .. pair[1] .. ' holds a ' .. kind) end
  end
  return nil
end

-- Add `n` to a counter of a hash that holds numbers, whatever the field holds now (a word
-- counts as 0): unlike HINCRBY it cannot fail, so it may run after claims have moved.
local function add(key, field, n)
  local value = (num(redis.call('HGET', key, field)) or 0) + n
  redis.call('HSET', key, field, ms(value))
  return value
end

