-- Forget the consumers of the ingest group that hold no entries and were idle `idle_ms`: the
-- names of worker processes that are gone (every process reads under a name of its own).
-- Checked and deleted in one step: a consumer that read between the check and the deletion
-- would lose the pending records of what it read, and a reclaim would never find those.
-- KEYS: ingest (the stream)
-- ARGV (ForgetConsumersArgs in workers/delivery/scripts.py): group, keep (the caller's own
--       consumer, never forgotten), idle_ms
-- Returns: how many consumers were forgotten.
local ingest_key = unpack(KEYS, 1, 1)
local group, keep, idle_ms = unpack(ARGV, 1, 3)
idle_ms = tonumber(idle_ms)
local forgotten = 0
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', ingest_key, group)) do
  local consumer = {}
  for i = 1, #row, 2 do consumer[row[i]] = row[i + 1] end
  if consumer.name ~= keep and consumer.pending == 0 and consumer.idle >= idle_ms then
    redis.call('XGROUP', 'DELCONSUMER', ingest_key, group, consumer.name)
    forgotten = forgotten + 1
  end
end
return forgotten
