-- Fold a batch of stream entries into the incidents' stored state, atomically with their XACK.
--
-- Merge rule: last writer wins per field, ordered by the stream position of the entry that
-- wrote it (s:<field>), so folding is idempotent and order-independent: a batch re-read after
-- a crash, or two workers folding interleaved batches, end in the same state.
--
-- Expiry: a changed state is scheduled, and kept until settle.lua finds it quiet (I1). A state
-- made again after it expired starts from the finish Datadog holds, if settle.lua remembered
-- one (RedisKeys.finished): a late start then merges with it instead of reopening the
-- incident (I2), and a late copy of that very finish costs nothing.
--
-- KEYS: ingest (the stream), due, inflight, dead, stats, then one hash per update, in order
-- Same second: Datadog keeps one deployment per service (and env) and second, so a second
-- deployment in a second another one holds would overwrite it there, silently. The first
-- folded holds the second (`second_prefix` .. `<service> <env> <second>` -> its id, kept as
-- long as a quiet state); a later one is marked `same_second_as` the holder, and its POST is
-- dead-lettered with both ids (workers/delivery/settlement.py) instead of sent.
--
-- Version: `version_prefix` .. `<service> <env> <version>` -> the deployment last folded with
-- them, so that a PATCH by version can wait for that deployment's POST (store.py).
--
-- ARGV (FoldArgs in workers/delivery/scripts.py): group, retention_ms, orphan_wait_ms,
--       finished_prefix, second_prefix, version_prefix, now_ms ('' for Redis' clock),
--       n_ack_ids, n_poison, n_updates, the ack ids,
--       per poison entry (PoisonEntry): entry_id, reason, payload, encoding (utf-8 or
--       base64), size_bytes, truncated (1: payload cut),
--       per update (IncidentUpdate): incident_id, n_fields, force (1: a replay, deliver even if
--       unchanged), then per field (FieldUpdate): field, position, value (JSON)
local ingest_key, due_key, inflight_key, dead_key, stats_key = unpack(KEYS, 1, 5)
local group, retention_ms, orphan_wait_ms, finished_prefix, second_prefix, version_prefix, now_ms,
  n_ack_ids, n_poison, n_updates = unpack(ARGV, 1, 10)
orphan_wait_ms = tonumber(orphan_wait_ms)
n_ack_ids, n_poison, n_updates = tonumber(n_ack_ids), tonumber(n_poison), tonumber(n_updates)
local now = clock_ms(now_ms)

-- Give a state about to be made again the finish Datadog holds; return its value, or nil.
-- It comes without a stream position: any entry folded from now on was published after
-- the finish was delivered, and wins as it would have if the state had never expired.
-- The digest lets delivery skip the request for a state Datadog holds already.
local function recall_finish(key, incident_id)
  local record = redis.call('GET', finished_prefix .. incident_id)
  if not record then return nil end
  local digest, finished = string.match(record, '^(%S+) (.+)$')
  if not digest then return nil end
  redis.call('HSET', key, 'a:finished_at', finished)
  if digest ~= '-' then redis.call('HSET', key, 'remembered', digest) end
  return finished
end

-- Whether a state holds nothing but the given finish: a late copy of a delivered finish.
local function only_finish(key, finished)
  if redis.call('HGET', key, 'a:finished_at') ~= finished then return false end
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'a:' and field ~= 'a:id' and field ~= 'a:finished_at' then
      return false
    end
  end
  return true
end

-- The second a deployment's POST takes at Datadog: `<service> <env> <started_at's second>`
-- (JSON values as stored: started_at is integer nanoseconds), or nil without a POST.
local function second_of(key)
  local service, started = redis.call('HGET', key, 'a:service'), redis.call('HGET', key, 'a:started_at')
  if not (service and started) then return nil end
  local env = redis.call('HGET', key, 'a:env') or 'null'
  local second = '0'
  if #started > 9 then second = string.sub(started, 1, #started - 9) end
  return service .. ' ' .. env .. ' ' .. second
end

-- The deployment holding a second, or nil. Runs after the state's fields are written, so it
-- must not fail: a key of another type there (written by hand) holds no second.
local function holder_of(slot)
  local name = second_prefix .. slot
  if redis.call('TYPE', name)['ok'] ~= 'string' then return nil end
  return redis.call('GET', name)
end

-- Hold the deployment's second, or mark it `same_second_as` the deployment that holds it.
-- Returns 1 when it is so marked (a new conflict), else 0.
local function take_second(key, state_id)
  local event_id = string.sub(state_id, #'deployment/' + 1)
  local slot, old_slot = second_of(key), redis.call('HGET', key, 'second_slot')
  if old_slot and old_slot ~= slot then
    if holder_of(old_slot) == event_id then
      redis.call('DEL', second_prefix .. old_slot)
    end
    redis.call('HDEL', key, 'second_slot')
  end
  redis.call('HDEL', key, 'same_second_as')
  if not slot then return 0 end
  local holder = holder_of(slot)
  if holder and holder ~= event_id then
    -- Still held: the holder's state (same prefix as this one's) has that second.
    local holder_key = string.sub(key, 1, #key - #state_id) .. 'deployment/' .. holder
    if redis.call('TYPE', holder_key)['ok'] == 'hash'
        and redis.call('HGET', holder_key, 'second_slot') == slot then
      redis.call('HSET', key, 'same_second_as', holder)
      return 1
    end
  end
  redis.call('SET', second_prefix .. slot, event_id, 'PX', retention_ms)
  redis.call('HSET', key, 'second_slot', slot)
  return 0
end

-- Name this deployment as the last one of its service + env + version.
local function note_version(key, state_id)
  local service, version = redis.call('HGET', key, 'a:service'), redis.call('HGET', key, 'a:version')
  if not (service and version) then return end
  local env = redis.call('HGET', key, 'a:env') or 'null'
  redis.call('SET', version_prefix .. service .. ' ' .. env .. ' ' .. version,
    string.sub(state_id, #'deployment/' + 1), 'PX', retention_ms)
end

local i = 11
local acks = {}
for _ = 1, n_ack_ids do acks[#acks + 1] = ARGV[i]; i = i + 1 end

local letters = {}
for _ = 1, n_poison do
  local entry_id, reason, payload, encoding, size_bytes, truncated = unpack(ARGV, i, i + 5)
  i = i + 6
  letters[#letters + 1] = {entry_id, reason, payload, encoding, size_bytes, truncated}
end

-- A script is not rolled back when a command in it fails: check what could fail before
-- writing anything, and write the dead letters (the one thing a retry would repeat) last.
-- BADKEY: Redis-wide (every fold would fail), so the worker keeps the entries pending.
local refused = check_types({{due_key, 'zset'}, {inflight_key, 'zset'}, {dead_key, 'stream'},
  {stats_key, 'hash'}})
if refused then return refused end
-- WRONGTYPE: this one state cannot take the batch's update (a key of another type, or numbers
-- that are not numbers); folded one by one, its entries become dead letters saying so.
for u = 1, n_updates do
  local key = KEYS[5 + u]
  local ok, kind = of_type(key, 'hash')
  if not ok then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', not a hash')
  end
  local version, first_ms = redis.call('HGET', key, 'version'), redis.call('HGET', key, 'first_ms')
  -- HINCRBY takes a decimal integer only: '1.5' or '1e3' would fail it halfway.
  if (version and not string.match(version, '^%-?%d+$')) or (first_ms and not num(first_ms)) then
    return redis.error_reply('WRONGTYPE ' .. key .. ': its version or first_ms is not a number')
  end
end

local changed, unchanged, same_second = 0, 0, 0
for u = 1, n_updates do
  local key = KEYS[5 + u]
  local incident_id, n_fields, force = unpack(ARGV, i, i + 2)
  i = i + 3
  local dirty = force == '1'
  local newest = ''
  local recalled = nil
  if is_incident(incident_id) and redis.call('EXISTS', key) == 0 then
    recalled = recall_finish(key, incident_id)
  end
  -- A DELETE drops every field older than it, and no write older than it lands afterwards
  -- (as workers/delivery/fold.py merge): reordered entries cannot bring a deleted id back.
  local deleted_at = redis.call('HGET', key, 's:delete')
  for _ = 1, tonumber(n_fields) do
    local field, position, value = unpack(ARGV, i, i + 2)
    i = i + 3
    if position > newest then newest = position end
    local seen = redis.call('HGET', key, 's:' .. field)
    local after_delete = field == 'delete' or (not deleted_at) or position > deleted_at
    if ((not seen) or position > seen) and after_delete then
      redis.call('HSET', key, 's:' .. field, position)
      if redis.call('HGET', key, 'a:' .. field) ~= value then
        redis.call('HSET', key, 'a:' .. field, value)
        dirty = true
      end
      if field == 'delete' then
        deleted_at = position
        for _, name in ipairs(redis.call('HKEYS', key)) do
          if string.sub(name, 1, 2) == 'a:' and name ~= 'a:delete' then
            local attribute = string.sub(name, 3)
            local written = redis.call('HGET', key, 's:' .. attribute)
            if (not written) or written < position then
              redis.call('HDEL', key, 'a:' .. attribute, 's:' .. attribute)
            end
          end
        end
        -- What a finish record said Datadog holds is about to be deleted.
        redis.call('HDEL', key, 'remembered')
      end
    end
  end
  if dirty and force == '1' then
    -- A replay: every request of the state goes again, whatever Datadog accepted before.
    redis.call('HDEL', key, 'done:post', 'done:patch', 'done:delete')
  end
  if dirty then
    local version = redis.call('HINCRBY', key, 'version', 1)
    -- When the newest entry behind this version was published (its stream id's ms part):
    -- delivery measures the publish-to-delivery latency from it.
    if newest ~= '' then redis.call('HSET', key, 'pub_ms', tonumber(string.sub(newest, 1, 15))) end
    redis.call('HSETNX', key, 'first_ms', ms(now))
    if string.sub(incident_id, 1, #'deployment/') == 'deployment/' then
      same_second = same_second + take_second(key, incident_id)
      note_version(key, incident_id)
    end
    local quiet = recalled and force ~= '1' and only_finish(key, recalled)
    if quiet then
      -- Datadog holds this finish already: nothing to send, no start to wait for.
      unchanged = unchanged + 1
      redis.call('HSET', key, 'sent', version)
      redis.call('PEXPIRE', key, retention_ms)
    else
      changed = changed + 1
      -- Scheduled: kept until it is delivered or dead-lettered, however long that takes.
      redis.call('PERSIST', key)
    end
    -- An incident in flight is made due again by its settlement, which sees the new version.
    if not quiet and not redis.call('ZSCORE', inflight_key, incident_id) then
      -- As workers/delivery/fold.py owes_something_now: an incident's POST needs services or
      -- team (a deployment always has its service); a PATCH (it always has change_failure)
      -- or a DELETE can go at once.
      local complete = (redis.call('HEXISTS', key, 'a:started_at') == 1 and
        (redis.call('HEXISTS', key, 'a:services') == 1 or redis.call('HEXISTS', key, 'a:team') == 1
         or redis.call('HEXISTS', key, 'a:service') == 1))
        or redis.call('HEXISTS', key, 'a:delete') == 1
        or redis.call('HEXISTS', key, 'a:patch.change_failure') == 1
      local due_at = now
      if not complete then
        -- A finish without its start waits for it; if it is still alone then, it is dead-lettered.
        due_at = tonumber(redis.call('HGET', key, 'first_ms')) + orphan_wait_ms
      end
      -- An incident backing off after failures keeps its retry time (NX); otherwise the
      -- earlier time wins (LT), so a start folded after its finish ends the orphan wait.
      local mode = 'LT'
      if redis.call('HEXISTS', key, 'attempt') == 1 then mode = 'NX' end
      redis.call('ZADD', due_key, mode, ms(due_at), incident_id)
    end
  else
    unchanged = unchanged + 1
  end
end

for _, letter in ipairs(letters) do
  redis.call('XADD', dead_key, '*', 'source', 'stream', 'entry_id', letter[1],
    'reason', letter[2], 'payload', letter[3], 'payload_encoding', letter[4],
    'payload_bytes', letter[5], 'payload_truncated', letter[6], 'at_ms', ms(now))
end

for start = 1, #acks, 1000 do
  local chunk = {unpack(acks, start, math.min(start + 999, #acks))}
  redis.call('XACK', ingest_key, group, unpack(chunk))
  -- Folded entries are kept nowhere else than in the state: delete them so the stream holds
  -- only what is still to be read (its length is the backlog).
  redis.call('XDEL', ingest_key, unpack(chunk))
end
if n_ack_ids > 0 then
  add(stats_key, 'entries_folded', n_ack_ids - n_poison)
  add(stats_key, 'updates_unchanged', unchanged)
end
if n_poison > 0 then add(stats_key, 'dead_letters', n_poison) end
if same_second > 0 then add(stats_key, 'same_second', same_second) end
return {changed, unchanged, n_poison}
