-- Claims parked subscriptions for a resume (PROTOCOL.md sections 7 and 11), each once in
-- the cluster.
--
-- KEYS[i]  a subscription's record: a hash of k (the API key's name) and r (its record)
-- ARGV[1]  the key name of the connection resuming
-- ARGV[2]  milliseconds the record lives from now: it is live again, on the claiming node,
--          which renews it from here on
--
-- A subscription of the same key is taken: its record is returned, and kept (so that a
-- client that moves on again before the claiming node's next renewal still finds it);
-- any other answer is '' (missing, expired, or another key's).

local out = {}
for i = 1, #KEYS do
  out[i] = ''
  if redis.call('HGET', KEYS[i], 'k') == ARGV[1] then
    out[i] = redis.call('HGET', KEYS[i], 'r') or ''
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return out
