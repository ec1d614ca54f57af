-- Claims parked subscriptions for a resume (PROTOCOL.md sections 7 and 11), each once in
-- the cluster.
--
-- KEYS[i]  a parked subscription: a hash of k (the API key's name) and r (its record)
-- ARGV[1]  the key name of the connection resuming
--
-- A subscription parked by the same key is taken (deleted) and its record returned; any
-- other answer is '' (missing, expired, or another key's).

local out = {}
for i = 1, #KEYS do
  out[i] = ''
  if redis.call('HGET', KEYS[i], 'k') == ARGV[1] then
    out[i] = redis.call('HGET', KEYS[i], 'r') or ''
    redis.call('DEL', KEYS[i])
  end
end
return out
