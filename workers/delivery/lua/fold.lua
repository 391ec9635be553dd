-- Fold a batch of stream entries into the incidents' stored state, atomically with their XACK.
--
-- Merge rule: last writer wins per field, ordered by the stream position of the entry that
-- wrote it (s:<field>), so folding is idempotent and order-independent: a batch re-read after
-- a crash, or two workers folding interleaved batches, end in the same state.
--
-- KEYS: 1 stream, 2 due, 3 inflight, 4 dead, 5 stats, 6.. one hash per incident of the batch
-- ARGV: 1 group, 2 retention_ms, 3 orphan_wait_ms,
--       n_ack, ack ids..., n_poison,
--       (entry id, reason, payload, payload encoding, payload bytes, truncated 0/1)...,
--       then per incident in KEYS order: incident id, force (1: a replay, deliver even if
--       unchanged), n_fields, (field, position, json)...
local now = clock_ms(nil)
local retention_ms = ARGV[2]
local orphan_wait_ms = tonumber(ARGV[3])

local i = 4
local n_ack = tonumber(ARGV[i]); i = i + 1
local acks = {}
for _ = 1, n_ack do acks[#acks + 1] = ARGV[i]; i = i + 1 end

local n_poison = tonumber(ARGV[i]); i = i + 1
local poison_at = i
i = i + 6 * n_poison

-- A script is not rolled back when a command in it fails: check what could fail before
-- writing anything, and write the dead letters (the one thing a retry would repeat) last.
local function expect(key, wanted)
  local kind = redis.call('TYPE', key)['ok']
  return kind == 'none' or kind == wanted, kind
end
for k, wanted in pairs({[2] = 'zset', [3] = 'zset', [4] = 'stream', [5] = 'hash'}) do
  local ok, kind = expect(KEYS[k], wanted)
  -- BADKEY: Redis-wide (every fold would fail), so the worker keeps the entries pending.
  if not ok then return redis.error_reply('BADKEY ' .. KEYS[k] .. ' holds a ' .. kind) end
end
for k = 6, #KEYS do
  local ok, kind = expect(KEYS[k], 'hash')
  if not ok then
    return redis.error_reply('WRONGTYPE ' .. KEYS[k] .. ' holds a ' .. kind .. ', not a hash')
  end
end

local changed, unchanged = 0, 0
for k = 6, #KEYS do
  local key = KEYS[k]
  local id = ARGV[i]
  local dirty = ARGV[i + 1] == '1'
  local n_fields = tonumber(ARGV[i + 2])
  local newest = ''
  i = i + 3
  for _ = 1, n_fields do
    local field, position, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    if position > newest then newest = position end
    local seen = redis.call('HGET', key, 's:' .. field)
    if (not seen) or position > seen then
      redis.call('HSET', key, 's:' .. field, position)
      if redis.call('HGET', key, 'a:' .. field) ~= value then
        redis.call('HSET', key, 'a:' .. field, value)
        dirty = true
      end
    end
  end
  if dirty then
    changed = changed + 1
    redis.call('HINCRBY', key, 'version', 1)
    -- When the newest entry behind this version was published (its stream id's ms part):
    -- delivery measures the publish-to-delivery latency from it.
    if newest ~= '' then redis.call('HSET', key, 'pub_ms', tonumber(string.sub(newest, 1, 15))) end
    redis.call('HSETNX', key, 'first_ms', ms(now))
    redis.call('PEXPIRE', key, retention_ms)
    -- An incident in flight is made due again by its settlement, which sees the new version.
    if not redis.call('ZSCORE', KEYS[3], id) then
      -- As workers/_fold.py is_complete: an incident needs services or team, a deployment
      -- always has its service.
      local complete = redis.call('HEXISTS', key, 'a:started_at') == 1 and
        (redis.call('HEXISTS', key, 'a:services') == 1 or redis.call('HEXISTS', key, 'a:team') == 1
         or redis.call('HEXISTS', key, 'a:service') == 1)
      local due_at = now
      if not complete then
        -- A finish without its start waits for it; if it is still alone then, it is dead-lettered.
        due_at = tonumber(redis.call('HGET', key, 'first_ms')) + orphan_wait_ms
      end
      -- An incident backing off after failures keeps its retry time (NX); otherwise the
      -- earlier time wins (LT), so a start folded after its finish ends the orphan wait.
      local mode = 'LT'
      if redis.call('HEXISTS', key, 'attempt') == 1 then mode = 'NX' end
      redis.call('ZADD', KEYS[2], mode, ms(due_at), id)
    end
  else
    unchanged = unchanged + 1
  end
end

for p = poison_at, poison_at + 6 * (n_poison - 1), 6 do
  redis.call('XADD', KEYS[4], '*', 'source', 'stream', 'entry_id', ARGV[p],
    'reason', ARGV[p + 1], 'payload', ARGV[p + 2], 'payload_encoding', ARGV[p + 3],
    'payload_bytes', ARGV[p + 4], 'payload_truncated', ARGV[p + 5], 'at_ms', ms(now))
end

for start = 1, #acks, 1000 do
  local chunk = {unpack(acks, start, math.min(start + 999, #acks))}
  redis.call('XACK', KEYS[1], ARGV[1], unpack(chunk))
  -- Folded entries are kept nowhere else than in the state: delete them so the stream holds
  -- only what is still to be read (its length is the backlog).
  redis.call('XDEL', KEYS[1], unpack(chunk))
end
if n_ack > 0 then
  redis.call('HINCRBY', KEYS[5], 'entries_folded', n_ack - n_poison)
  redis.call('HINCRBY', KEYS[5], 'updates_unchanged', unchanged)
end
if n_poison > 0 then redis.call('HINCRBY', KEYS[5], 'dead_letters', n_poison) end
return {changed, unchanged, n_poison}
