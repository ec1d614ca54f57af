-- One atomic append of a batch of events to the cluster's log (PROTOCOL.md section 11).
--
-- KEYS[1]        the one sequence counter (INCR)
-- KEYS[2]        the chain head: hash {number, by}
-- KEYS[3]        the head's timeline: a stream of raises, entry id SEQ-0, field n = block
-- KEYS[4]        the first sequence number the cluster issued
-- KEYS[5]        the master's epoch (epoch.lua)
-- KEYS[6]        the ranges of ids lost in failovers (epoch.lua)
-- KEYS[7]        the index of the history streams: a sorted set of their key names, scored
--                by the second of their last append (handover.lua reads it)
-- KEYS[7 + i]    event i's channel history stream
-- ARGV[1]        most entries kept per stream (approximate trim)
-- ARGV[2]        seconds a stream lives after its last append
-- ARGV[3]        the pub/sub channel that announces head raises
-- ARGV[4]        where a new sequence starts (the caller's clock in microseconds), so that
--                ids keep increasing when Redis lost its data
-- ARGV[5]        the highest id the caller handed out (epoch.lua), '0' when none
-- then per event i, four arguments starting at ARGV[6 + 4 * (i - 1)]:
--   the pub/sub channel that announces the event, its record (opaque text),
--   its block number ('' when it names none), '1' when it is a `blocks` event.
--
-- Per event: the next sequence number; a `blocks` event whose number is above the head
-- raises it (recorded in the timeline); the record is appended to the channel's stream
-- with the sequence number as its entry id ("SEQ-0"); the announcement
-- "SEQ RAISED RECORD" is published (RAISED is the new head, or '-'), then, for a raise,
-- "SEQ BLOCK" on the heads channel. Returns {seq, raised} per event. Block numbers are
-- compared as decimal strings, so numbers past 2^53 keep their precision.

local max_len = ARGV[1]
local ttl = ARGV[2]
local head_channel = ARGV[3]
epoch(KEYS[1], KEYS[4], KEYS[5], KEYS[6], ARGV[4], ARGV[5])
-- Never at or below an id the caller handed out.
if greater(ARGV[5], redis.call('GET', KEYS[1])) then
  redis.call('SET', KEYS[1], ARGV[5])
end
local out = {}
local n = #KEYS - 7
-- The index: this batch's streams, and none whose stream expired (no append for ttl).
local now_s = math.floor(tonumber(ARGV[4]) / 1000000)
local indexed = {}
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. string.format('%d', now_s - tonumber(ttl)))
for i = 1, n do
  local base = 6 + 4 * (i - 1)
  local notify, record, block, is_block = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  -- As text: Lua numbers are doubles, which would print large ones as 1.7e+15.
  local seq = string.format('%d', redis.call('INCR', KEYS[1]))
  local raised = '-'
  if is_block == '1' and block ~= '' then
    local head = redis.call('HGET', KEYS[2], 'number')
    if head == false or greater(block, head) then
      redis.call('HSET', KEYS[2], 'number', block, 'by', seq)
      raised = block
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', max_len, seq .. '-0', 'n', block)
    end
  end
  local stream = KEYS[7 + i]
  redis.call('XADD', stream, 'MAXLEN', '~', max_len, seq .. '-0', 'r', record)
  redis.call('EXPIRE', stream, ttl)
  if not indexed[stream] then
    indexed[stream] = true
    redis.call('ZADD', KEYS[7], string.format('%d', now_s), stream)
  end
  redis.call('PUBLISH', notify, seq .. ' ' .. raised .. ' ' .. record)
  if raised ~= '-' then
    redis.call('PUBLISH', head_channel, seq .. ' ' .. block)
  end
  out[i] = {tonumber(seq), raised}
end
return out
