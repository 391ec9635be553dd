-- Record the outcome of delivery attempts and what the answers say about the gate,
-- atomically per batch.
--
-- delivered: the claimed version reached Datadog; due again at once if a newer one was folded
--            while in flight (never a state older than one delivered: versions only grow).
-- retry:     due again after `delay_ms`; the attempt count and the first failure are kept.
-- wait:      due again after `delay_ms`, no attempt counted (a finish waiting for its start,
--            or a claim released at shutdown).
-- dead:      a dead letter with the reason and details; the incident stays stored, so a later
--            change to it is delivered again.
-- Only the holder of the claim moves the incident; a settlement whose lease lapsed and was
-- taken over only records a delivered version.
--
-- Expiry: a state is kept while it is due, in flight or backing off (I1). Once it is quiet
-- (delivered or dead-lettered, nothing newer folded) it expires after `retention_ms`, and a
-- delivered incident's finish is remembered apart for `finished_retention_ms`
-- (RedisKeys.finished in forwarder/protocol.py), so that fold.lua can give a state made
-- again the finish Datadog holds (I2).
--
-- Doubt (I2: the newest version is the last to land): a request without an answer (timeout,
-- connection lost after it was written, released at shutdown) may still be applied until its
-- lease ends; `doubt_until_ms` keeps the latest such moment. A delivery claimed before it is
-- followed by one more send of the current version, due at `doubt_until_ms`; one claimed at
-- or after it clears it. A late answer (lease lapsed) that may have landed makes the
-- incident due again at once: whatever was delivered meanwhile may have landed before it.
--
-- Gate (see claim.lua): `close_ms` closes it (never shortens a closure); a refused key also
-- forgets what is known about limits, so that the reopened gate lets one probe through.
--
-- Circuit breaker (see workers/delivery/breaker.py): `outages` outage answers (5xx, 408, no
-- answer) add to the fleet's count in a row; at `breaker_failures` it opens, and claim.lua
-- then lets one probe at a time through. Any other answer (`healthy`) resets the count and
-- closes it. While it is open, an outage retry stays due (held back by the breaker, not by
-- its own backoff), so that everything goes out as soon as it closes.
--
-- Steps (workers/delivery/operations.py): a state may owe a DELETE, a POST and a PATCH, one
-- request per claim. A step delivered is recorded in `done:<step>`; with `more` the state is
-- due again at once (and not `sent` yet). A dead-lettered step ends its version. A delivered
-- DELETE forgets what Datadog held (`done:post`, `done:patch`, an incident's finish record),
-- a delivered POST what a PATCH set (`done:patch`). `forget` clears all of it: after
-- requests in doubt every step goes again, in order.
--
-- Application key: a PATCH or DELETE waiting for one (`app_key_wait`) is listed in
-- app_key_waits; `app_key_close_ms` pauses them fleet-wide (a refused key), and a delivered
-- PATCH or DELETE lifts that pause.
--
-- A refused key's probe (app_key_probe, taken by the pump) is given back once a PATCH or
-- DELETE of the claim that holds it was answered.
--
-- KEYS: due, inflight, dead, stats, gate, app_key_waits, app_key_probe
-- ARGV (SettleArgs in workers/delivery/scripts.py): incident key prefix, token,
--       now_ms ('' for Redis' clock), retention_ms, finished_prefix, finished_retention_ms,
--       close_ms, close_reason, close_detail,
--       budget_limit (0: no budget seen), remaining, reset_ms, period_ms,
--       unlimited (1: a 2xx came without rate-limit headers), answered (1: any answer),
--       outages, healthy (0/1), breaker_failures, breaker_probe_ms (see above),
--       app_key_close_ms, app_key_detail, app_key_works (1: a PATCH or DELETE got past the
--       application key; see above),
--       n_settlements, then per outcome (Settlement): incident_id, version, verdict, delay_ms,
--       reason, detail (JSON, dead letters), digest (of the delivered attributes, or ''),
--       sent_at_ms (0: not sent), doubt (1: may land), outage (1: an outage answer),
--       step, step_done, more, forget, app_key_wait (see above)
-- Returns: {delivered, retry, dead, stale, gate newly closed (0/1),
--           breaker (1: opened, -1: closed, 0: neither), application key newly paused (0/1)}
local due_key, inflight_key, dead_key, stats_key, gate_key, app_key_waits_key, app_key_probe_key =
  unpack(KEYS, 1, 7)
local prefix, token, now_ms, retention_ms, finished_prefix, finished_retention_ms, close_ms,
  close_reason, close_detail, budget_limit, remaining, reset_ms, period_ms, unlimited, answered,
  outages, healthy, breaker_failures, breaker_probe_ms, app_key_close_ms, app_key_detail,
  app_key_works, n_settlements = unpack(ARGV, 1, 23)
local now = clock_ms(now_ms)

-- Remember the finish of a delivered incident: its value, and the digest of the whole state
-- Datadog now holds ('-' when that is not the stored state).
local function remember_finish(key, incident_id, digest)
  if not is_incident(incident_id) then return end  -- a deployment's POST carries both times
  local finished = redis.call('HGET', key, 'a:finished_at')
  if not finished then return end
  if digest == '' then digest = '-' end
  redis.call('SET', finished_prefix .. incident_id, digest .. ' ' .. finished,
    'PX', finished_retention_ms)
end

local counts = {delivered = 0, retry = 0, wait = 0, dead = 0, stale = 0}

-- Every argument is checked before the first write: Redis does not undo the writes of a script
-- that fails halfway, and claims settled by half a batch would be left in flight.
local outcomes = {}
for i = 24, 23 + 15 * tonumber(n_settlements), 15 do
  local incident_id, version, verdict, delay_ms, reason, detail, digest, sent_at_ms, doubt,
    outage, step, step_done, more, forget, app_key_wait = unpack(ARGV, i, i + 14)
  version, delay_ms, sent_at_ms = num(version), num(delay_ms), num(sent_at_ms)
  if not (version and delay_ms and sent_at_ms and counts[verdict]) or verdict == 'stale' then
    return redis.error_reply('settle: the settlement of ' .. tostring(incident_id)
      .. ' has a bad version, delay_ms, sent_at_ms or verdict')
  end
  if not (step == '' or step == 'post' or step == 'patch' or step == 'delete') then
    return redis.error_reply('settle: the settlement of ' .. tostring(incident_id)
      .. ' has a bad step')
  end
  outcomes[#outcomes + 1] = {incident_id, version, verdict, delay_ms, reason, detail, digest,
    sent_at_ms, doubt, outage, step, step_done, more, forget, app_key_wait}
end
app_key_close_ms = num(app_key_close_ms) or 0
outages, breaker_failures = num(outages) or 0, num(breaker_failures) or 1
breaker_probe_ms = num(breaker_probe_ms) or 1000
-- Figures about the gate that are missing or absurd tell nothing (workers/delivery/gate.py
-- clamps them; this holds for any caller).
close_ms = num(close_ms) or 0
budget_limit, remaining = count(budget_limit) or 0, count(remaining)
reset_ms, period_ms = num(reset_ms), num(period_ms)
if not (remaining and reset_ms and period_ms and reset_ms >= 0 and period_ms > 0) then
  budget_limit = 0
end

local refused = check_types({{due_key, 'zset'}, {inflight_key, 'zset'}, {dead_key, 'stream'},
  {stats_key, 'hash'}, {gate_key, 'hash'}, {app_key_waits_key, 'zset'},
  {app_key_probe_key, 'string'}})
if refused then return refused end

-- The breaker next: the settlements below depend on whether it is open.
local breaker_open = redis.call('HEXISTS', gate_key, 'breaker_opened_ms') == 1
local breaker_change = 0
if healthy == '1' then
  redis.call('HSET', gate_key, 'breaker_failures', 0)
  if breaker_open then
    redis.call('HDEL', gate_key, 'breaker_opened_ms', 'breaker_probes', 'breaker_probe_at_ms',
      'breaker_probe')
    breaker_open, breaker_change = false, -1
  end
elseif outages > 0 then
  local failures = (num(redis.call('HGET', gate_key, 'breaker_failures')) or 0) + outages
  redis.call('HSET', gate_key, 'breaker_failures', failures)
  if not breaker_open and failures >= breaker_failures then
    redis.call('HSET', gate_key, 'breaker_opened_ms', ms(now), 'breaker_probes', 0,
      'breaker_probe_at_ms', ms(now + breaker_probe_ms))
    add(stats_key, 'breaker_opened', 1)
    breaker_open, breaker_change = true, 1
  end
end

local last_error = nil
local app_key_answered = false
for _, outcome in ipairs(outcomes) do
  local incident_id, version, verdict, delay_ms, reason, detail, digest, sent_at_ms, doubt,
    outage, step, step_done, more, forget, app_key_wait = unpack(outcome)
  local key = prefix .. incident_id
  -- A key of another type is no state: left alone here, its lease lapses and claim.lua
  -- dead-letters it (a settlement must not fail halfway through its batch).
  if redis.call('TYPE', key)['ok'] == 'hash' then
    local owned = redis.call('HGET', key, 'claim') == token
    local current = num(redis.call('HGET', key, 'version')) or 0
    local doubt_until = num(redis.call('HGET', key, 'doubt_until_ms')) or 0
    if verdict == 'delivered' or verdict == 'retry' then
      -- A request went out: Datadog may no longer hold the state a finish record described.
      redis.call('HDEL', key, 'remembered')
    end
    if verdict == 'delivered' and more ~= '1' then
      if version > (num(redis.call('HGET', key, 'sent')) or 0) then
        redis.call('HSET', key, 'sent', version)
      end
    end
    if (step == 'patch' or step == 'delete') and sent_at_ms ~= 0 then app_key_answered = true end
    if verdict == 'delivered' and (step == 'patch' or step == 'delete') then
      -- The application key works: whatever paused PATCH and DELETE is over.
      redis.call('HDEL', gate_key, 'app_key_closed_until_ms', 'app_key_detail')
    end
    if doubt == '1' or not owned then
      -- A request that may land late, or one that landed after another worker took over:
      -- what Datadog holds of each step is no longer known (every step owed goes again).
      redis.call('HDEL', key, 'done:post', 'done:patch', 'done:delete')
    end
    if not owned then
      counts.stale = counts.stale + 1
      if verdict == 'delivered' or doubt == '1' then
        if now > doubt_until then redis.call('HSET', key, 'doubt_until_ms', ms(now)) end
        -- A claim in flight now started before this landing: its settlement sees the doubt.
        if not redis.call('ZSCORE', inflight_key, incident_id) then
          redis.call('PERSIST', key)  -- to send again: it must not expire meanwhile
          redis.call('ZADD', due_key, 'LT', ms(now), incident_id)
        end
      end
    else
      local lease_end = tonumber(redis.call('ZSCORE', inflight_key, incident_id) or ms(now))
      redis.call('ZREM', inflight_key, incident_id)
      redis.call('HDEL', key, 'claim')
      if doubt == '1' and lease_end > doubt_until then
        doubt_until = lease_end
        redis.call('HSET', key, 'doubt_until_ms', ms(doubt_until))
      end
      counts[verdict] = counts[verdict] + 1
      if verdict == 'retry' or verdict == 'dead' then last_error = incident_id .. ': ' .. reason end
      if app_key_wait == '1' then
        redis.call('ZADD', app_key_waits_key, 'NX', ms(now), incident_id)
        -- Why they wait, for `status` (a refused key's pause below says it more precisely).
        redis.call('HSET', gate_key, 'app_key_detail', reason)
      else
        redis.call('ZREM', app_key_waits_key, incident_id)
      end
      if step ~= '' and verdict == 'delivered' then
        -- Datadog holds it: the same content costs no request again. (A dead-lettered step
        -- ends its version: the steps behind it are in the letter, and go with a new one.)
        redis.call('HSET', key, 'done:' .. step, step_done)
        if step == 'delete' then
          redis.call('HDEL', key, 'done:post', 'done:patch')
          if is_incident(incident_id) then redis.call('DEL', finished_prefix .. incident_id) end
        elseif step == 'post' then
          -- Whether a POST keeps what a PATCH set is not documented: after a POST, the PATCH
          -- goes again (once), so Datadog ends with both whatever it does.
          redis.call('HDEL', key, 'done:patch')
        end
      end
      if forget == '1' then
        redis.call('HDEL', key, 'done:post', 'done:patch', 'done:delete', 'doubt_until_ms')
        if (num(redis.call('HGET', key, 'sent')) or 0) >= version then
          redis.call('HSET', key, 'sent', version - 1)
        end
        doubt_until = 0
      end
      if breaker_open and sent_at_ms == 0 and doubt ~= '1'
          and redis.call('HGET', gate_key, 'breaker_probe') == incident_id then
        -- The breaker's probe sent nothing (already sent, waiting for its start, invalid):
        -- give the probe back, so that the next due incident probes now.
        local probes = num(redis.call('HGET', gate_key, 'breaker_probes')) or 1
        redis.call('HSET', gate_key, 'breaker_probe_at_ms', ms(now),
          'breaker_probes', ms(math.max(0, probes - 1)))
        redis.call('HDEL', gate_key, 'breaker_probe')
        add(stats_key, 'breaker_probes', -1)
      end
      if sent_at_ms == 0 and doubt ~= '1' and redis.call('HGET', gate_key, 'probe') == incident_id
      then
        -- The limits probe sent nothing either: give it back, or the fleet would wait
        -- probe_ms for an answer that never comes.
        redis.call('HDEL', gate_key, 'probe_until_ms', 'probe')
      end
      if verdict == 'wait' then
        -- A newer version folded while this one was claimed (fold.lua left its scheduling to
        -- this settlement) may owe a request that need not wait: a POST behind a PATCH that
        -- waits for the application key, a start behind its finish. Claimed, it is decided anew.
        if current > version then delay_ms = 0 end
        redis.call('ZADD', due_key, ms(now + delay_ms), incident_id)
      elseif verdict == 'retry' then
        add(key, 'attempt', 1)
        redis.call('HSETNX', key, 'failing_since_ms', ms(now))
        redis.call('HSET', key, 'last_error', reason)
        if outage == '1' and breaker_open then
          -- Held back by the breaker, not by a backoff of its own; but a resend owed after a
          -- request in doubt cannot go out before that request can no longer land.
          delay_ms = math.max(0, doubt_until - now)
        end
        redis.call('ZADD', due_key, ms(now + delay_ms), incident_id)
      else
        redis.call('HDEL', key, 'attempt', 'failing_since_ms', 'last_error')
        if verdict == 'dead' then
          redis.call('HSET', key, 'dead_version', version)
          redis.call('XADD', dead_key, '*', 'source', 'incident', 'incident_id', incident_id,
            'reason', reason, 'detail', detail, 'at_ms', ms(now))
        end
        if current > version or (more == '1' and verdict == 'delivered') then
          redis.call('ZADD', due_key, ms(now), incident_id)
        elseif verdict == 'delivered' and doubt_until > 0 and sent_at_ms < doubt_until then
          -- An earlier request may still land after this one: send the current version once
          -- more when it no longer can.
          redis.call('ZADD', due_key, ms(doubt_until), incident_id)
        else
          if verdict == 'delivered' and doubt_until > 0 then
            redis.call('HDEL', key, 'doubt_until_ms')
          end
          -- Quiet: from now on the state only serves dedupe (and a replay's merge).
          redis.call('PEXPIRE', key, retention_ms)
        end
        if verdict == 'delivered' then
          -- Only the state just delivered: a newer one (current > version) is sent next, and
          -- remembered when it is delivered.
          if current == version and more ~= '1' then remember_finish(key, incident_id, digest) end
        end
      end
    end
  end
end

-- The gate.
local newly_closed = 0
if close_ms > 0 then
  local closed_until = num(redis.call('HGET', gate_key, 'closed_until_ms')) or 0
  if closed_until <= now then newly_closed = 1 end
  if now + close_ms > closed_until then
    redis.call('HSET', gate_key, 'closed_until_ms', ms(now + close_ms), 'reason', close_reason,
      'detail', close_detail, 'closed_at_ms', ms(now))
  end
  if close_reason == 'auth' then
    redis.call('HDEL', gate_key, 'limit', 'remaining', 'window_end_ms', 'period_ms',
      'budget_ms', 'unlimited_ms', 'probe_until_ms', 'probe')
  end
end
if budget_limit > 0 and close_reason ~= 'auth' then
  -- reset_ms counts from when the answer came (gate.budget_of): new_end is its window's end
  -- however late it is settled, give or take the headers' whole seconds and the network.
  -- Windows are fixed and back to back, so with the period unchanged an end half a period
  -- or more from the known one is another window: a later one is taken as it is, an earlier
  -- one (settled after claim.lua rolled the fleet over to the next) says nothing of the
  -- current window. Taken, it would move the window back, and the next rollover would
  -- grant the whole limit again in a window already spent (429s).
  local new_end = now + reset_ms
  local known_end = num(redis.call('HGET', gate_key, 'window_end_ms')) or 0
  local known_at = num(redis.call('HGET', gate_key, 'budget_ms')) or 0
  local known_period = num(redis.call('HGET', gate_key, 'period_ms')) or 0
  local half_period = period_ms / 2
  local learnt = true
  if now - known_at >= KNOWLEDGE_MS or known_period ~= period_ms
      or new_end >= known_end + half_period then
    -- Nothing known (or long ago), another period, or a later window: the server's count.
    redis.call('HSET', gate_key, 'window_end_ms', ms(new_end), 'remaining', ms(remaining))
  elseif new_end > known_end - half_period then
    -- The same window: answers settle in any order; the smallest count is current.
    local known = count(redis.call('HGET', gate_key, 'remaining')) or remaining
    if remaining < known then redis.call('HSET', gate_key, 'remaining', ms(remaining)) end
  else
    learnt = false  -- an earlier window: nothing of it is kept
  end
  if learnt then
    redis.call('HSET', gate_key, 'limit', ms(budget_limit), 'period_ms', ms(period_ms),
      'budget_ms', ms(now))
  end
end
if app_key_works == '1' then
  -- Datadog looked past the key (a 404 of a PATCH too): the pause is over, and so is a probe.
  redis.call('HDEL', gate_key, 'app_key_closed_until_ms', 'app_key_detail')
  app_key_answered = true
end
if app_key_answered and redis.call('GET', app_key_probe_key) == token then
  redis.call('DEL', app_key_probe_key)
end
local app_key_newly_paused = 0
if app_key_close_ms > 0 then
  local paused_until = num(redis.call('HGET', gate_key, 'app_key_closed_until_ms')) or 0
  if paused_until <= now then app_key_newly_paused = 1 end
  if now + app_key_close_ms > paused_until then
    redis.call('HSET', gate_key, 'app_key_closed_until_ms', ms(now + app_key_close_ms),
      'app_key_detail', app_key_detail)
  end
end
if unlimited == '1' and close_reason ~= 'auth' then
  redis.call('HSET', gate_key, 'unlimited_ms', ms(now))
end
if answered == '1' and close_reason ~= 'auth' then
  redis.call('HDEL', gate_key, 'probe_until_ms', 'probe')
end

if counts.delivered > 0 then
  add(stats_key, 'delivered', counts.delivered)
  redis.call('HSET', stats_key, 'last_success_ms', ms(now))
end
if last_error then redis.call('HSET', stats_key, 'last_error', last_error, 'last_error_ms', ms(now)) end
if counts.retry > 0 then add(stats_key, 'retries', counts.retry) end
if counts.dead > 0 then add(stats_key, 'dead_letters', counts.dead) end
return {counts.delivered, counts.retry, counts.dead, counts.stale, newly_closed, breaker_change,
  app_key_newly_paused}
