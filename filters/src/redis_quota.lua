-- Admit one request against every scope's limits, atomically.
-- KEYS: per scope, three keys: requests (GCRA TAT), tokens (bucket hash), concurrency (counter).
-- ARGV[1]: estimated tokens. Then per scope: rpm, tpm, concurrency (0 = no limit).
-- Returns {allowed, scope_index, limit_kind, retry_after_ms,
--          req_limit, req_remaining, req_reset_ms, tok_limit, tok_remaining, tok_reset_ms}
-- limit_kind: 1 requests, 2 tokens, 3 concurrency. Time is the Redis server's,
-- so every node shares one clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local estimate = tonumber(ARGV[1])
local scopes = #KEYS / 3
local plan = {}
local req_limit, req_remaining, req_reset = -1, -1, 0
local tok_limit, tok_remaining, tok_reset = -1, -1, 0
for i = 0, scopes - 1 do
  local rpm = tonumber(ARGV[2 + i * 3])
  local tpm = tonumber(ARGV[3 + i * 3])
  local conc = tonumber(ARGV[4 + i * 3])
  local rkey, tkey, ckey = KEYS[1 + i * 3], KEYS[2 + i * 3], KEYS[3 + i * 3]
  local p = {}
  if conc > 0 then
    local inflight = tonumber(redis.call('GET', ckey) or '0')
    if inflight >= conc then
      return {0, i, 3, 1000, req_limit, req_remaining, req_reset, tok_limit, tok_remaining, tok_reset}
    end
  end
  if tpm > 0 then
    local h = redis.call('HMGET', tkey, 'level', 'at')
    local level = tonumber(h[1] or tpm)
    local at = tonumber(h[2] or now)
    local rate = tpm / 60000
    level = math.min(tpm, level + math.max(0, now - at) * rate)
    if estimate > tpm then
      return {0, i, 2, 60000, req_limit, req_remaining, req_reset, tpm, math.max(0, math.floor(level)), 0}
    end
    if level < estimate then
      local wait = math.ceil((estimate - level) / rate)
      return {0, i, 2, wait, req_limit, req_remaining, req_reset, tpm, math.max(0, math.floor(level)), math.ceil((tpm - level) / rate)}
    end
    p.level = level - estimate
    local remaining = math.floor(p.level)
    if tok_remaining < 0 or remaining < tok_remaining then
      tok_limit, tok_remaining, tok_reset = tpm, remaining, math.ceil((tpm - p.level) / rate)
    end
  end
  if rpm > 0 then
    local interval = 60000 / rpm
    local tat = math.max(tonumber(redis.call('GET', rkey) or now), now)
    local new_tat = tat + interval
    local allow_at = new_tat - 60000
    if now < allow_at then
      return {0, i, 1, math.ceil(allow_at - now), rpm, 0, math.ceil(tat - now), tok_limit, tok_remaining, tok_reset}
    end
    p.tat = new_tat
    local remaining = math.floor((60000 - (new_tat - now)) / interval)
    if req_remaining < 0 or remaining < req_remaining then
      req_limit, req_remaining, req_reset = rpm, remaining, math.ceil(new_tat - now)
    end
  end
  p.rpm, p.tpm, p.conc = rpm, tpm, conc
  plan[i] = p
end
-- Every scope passed: apply.
for i = 0, scopes - 1 do
  local p = plan[i]
  local rkey, tkey, ckey = KEYS[1 + i * 3], KEYS[2 + i * 3], KEYS[3 + i * 3]
  if p.conc > 0 then
    redis.call('INCR', ckey)
    -- A node that dies holding slots must not block the scope forever.
    redis.call('PEXPIRE', ckey, 600000)
  end
  if p.tpm > 0 then
    redis.call('HSET', tkey, 'level', tostring(p.level), 'at', tostring(now))
    redis.call('PEXPIRE', tkey, 120000)
  end
  if p.rpm > 0 then
    redis.call('SET', rkey, tostring(p.tat), 'PX', math.ceil(p.tat - now) + 1000)
  end
end
return {1, -1, 0, 0, req_limit, req_remaining, req_reset, tok_limit, tok_remaining, tok_reset}
