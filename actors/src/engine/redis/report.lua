-- A node's report of the highest id it handed out, when its pub/sub connection (re)starts
-- on a master (after epoch.lua). Returns 1 when ids up to it were lost in a failover (the
-- node then closes its connections with 1013 so that they resume with recovered: false),
-- else 0.
--
-- KEYS[1] the sequence, KEYS[2] the first id, KEYS[3] the epoch, KEYS[4] the lost ranges
-- ARGV[1] the caller's clock in microseconds (where a new sequence starts)
-- ARGV[2] the highest id the node handed out
return epoch(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2])
