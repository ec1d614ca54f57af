#!lua flags=no-writes
-- What the old master holds that its successor may lack (handover.rs, after a failover):
-- one consistent read, allowed on a master whose writes are paused and on a replica.
--
-- KEYS[1]        the sequence counter
-- KEYS[2]        the head's timeline (stream of raises, field n)
-- KEYS[3]        the chain head: hash {number, by}
-- KEYS[4]        the index of the history streams (append.lua)
-- KEYS[4 + i]    history stream i, as the caller read the index
-- ARGV[1]        entries are read after this sequence number ...
-- ARGV[2]        ... up to this one
-- ARGV[3]        most entries read per stream
--
-- Returns {this server's replication id, the sequence or '', 1 when every stream of the
-- index is among KEYS (else the caller read a stale index: 0), raises {{id, {'n', n}}...},
-- per stream {{id, {'r', record}}...}}.

local info = redis.call('INFO', 'replication')
local replid = string.match(info, 'master_replid:(%x+)') or ''
local seq = redis.call('GET', KEYS[1]) or ''
local asked = {}
for i = 5, #KEYS do
  asked[KEYS[i]] = true
end
local complete = 1
for _, key in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if not asked[key] then
    complete = 0
  end
end
local from = '(' .. ARGV[1] .. '-0'
local upto = ARGV[2] .. '-0'
local raises = redis.call('XRANGE', KEYS[2], from, upto, 'COUNT', ARGV[3])
local streams = {}
for i = 5, #KEYS do
  streams[i - 4] = redis.call('XRANGE', KEYS[i], from, upto, 'COUNT', ARGV[3])
end
return {replid, seq, complete, raises, streams}
