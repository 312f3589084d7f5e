-- Settle and release one admitted request.
-- KEYS: per scope, the tokens hash and the concurrency counter.
-- ARGV[1]: tokens to give back (reserved - used; negative is debt).
-- ARGV[2..]: per scope, tpm and concurrency limit (0 = none).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local delta = tonumber(ARGV[1])
for i = 0, #KEYS / 2 - 1 do
  local tkey, ckey = KEYS[1 + i * 2], KEYS[2 + i * 2]
  local tpm = tonumber(ARGV[2 + i * 2])
  local conc = tonumber(ARGV[3 + i * 2])
  if tpm > 0 and delta ~= 0 then
    local h = redis.call('HMGET', tkey, 'level', 'at')
    local level = tonumber(h[1] or tpm)
    local at = tonumber(h[2] or now)
    level = math.min(tpm, level + math.max(0, now - at) * tpm / 60000 + delta)
    redis.call('HSET', tkey, 'level', tostring(level), 'at', tostring(now))
    redis.call('PEXPIRE', tkey, 120000)
  end
  if conc > 0 then
    if tonumber(redis.call('GET', ckey) or '0') > 0 then
      redis.call('DECR', ckey)
    end
  end
end
return 1
