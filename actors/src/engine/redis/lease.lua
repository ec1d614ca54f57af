-- A connection slot of an API key, counted across the cluster (PROTOCOL.md section 11).
--
-- KEYS[1]  the key's slots: a sorted set of connection ids scored by lease expiry (ms)
-- ARGV[1]  now, in Unix milliseconds (the caller's clock; nodes' clocks are assumed close)
-- ARGV[2]  the connection id (node id and connection number)
-- ARGV[3]  the lease's expiry, in Unix milliseconds (the set expires with it: PEXPIREAT)
-- ARGV[4]  the key's connection cap
--
-- Slots whose lease expired (a node that died stopped renewing) are dropped first. A
-- connection already holding a slot renews it; a new one takes a slot when fewer than
-- the cap are held. The set itself expires with its latest lease (all leases last as
-- long). Returns 1 when the connection holds a slot, 0 when the cap is full.

-- The set lives as long as its latest lease (never shortened by a node whose clock is behind).
local function extend()
  local t = redis.call('PEXPIRETIME', KEYS[1])
  if t < 0 or t < tonumber(ARGV[3]) then
    redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  end
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) ~= false then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  extend()
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
extend()
return 1
