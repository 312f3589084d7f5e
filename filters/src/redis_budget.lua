-- Reserve a request's worst-case cost on every budget, atomically.
-- KEYS: per scope, one hash {spent, reserved} named for the scope and period.
-- ARGV[1]: worst-case micro-dollars. Then per scope: limit, soft limit (-1 = none), ttl seconds.
-- Returns {allowed, failing_index, soft_crossed, then per scope: spent, reserved}.
local worst = tonumber(ARGV[1])
local n = #KEYS
local out = {1, -1, 0}
for i = 1, n do
  local h = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local spent = tonumber(h[1] or '0')
  local reserved = tonumber(h[2] or '0')
  local limit = tonumber(ARGV[2 + (i - 1) * 3])
  local soft = tonumber(ARGV[3 + (i - 1) * 3])
  if spent + reserved + worst > limit then
    return {0, i - 1, 0, spent, reserved}
  end
  if soft >= 0 and spent + reserved + worst > soft then
    out[3] = 1
  end
  table.insert(out, spent)
  table.insert(out, reserved)
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], 'reserved', worst)
  local ttl = tonumber(ARGV[4 + (i - 1) * 3])
  if ttl > 0 then
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
return out
