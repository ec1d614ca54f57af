-- One atomic append of a batch of events to the cluster's log (PROTOCOL.md section 11).
--
-- KEYS[1]        the one sequence counter (INCR)
-- KEYS[2]        the chain head: hash {number, by}
-- KEYS[2 + i]    event i's channel history stream
-- ARGV[1]        most entries kept per channel stream (approximate trim)
-- ARGV[2]        seconds a channel stream lives after its last append
-- ARGV[3]        the pub/sub channel that announces head raises
-- then per event i, four arguments starting at ARGV[4 + 4 * (i - 1)]:
--   the pub/sub channel that announces the event, its record (opaque text),
--   its block number ('' when it names none), '1' when it is a `blocks` event.
--
-- Per event: the next sequence number; a `blocks` event whose number is above the head
-- raises it; the record is appended to the channel's stream with the sequence number as
-- its entry id ("SEQ-0"); the announcement "SEQ RAISED RECORD" is published (RAISED is
-- the new head, or '-'). Returns {seq, raised} per event. Block numbers are compared as
-- decimal strings, so numbers past 2^53 keep their precision.

local function greater(a, b)
  if #a ~= #b then
    return #a > #b
  end
  return a > b
end

local max_len = ARGV[1]
local ttl = ARGV[2]
local head_channel = ARGV[3]
local out = {}
local n = #KEYS - 2
for i = 1, n do
  local base = 4 + 4 * (i - 1)
  local notify, record, block, is_block = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local seq = redis.call('INCR', KEYS[1])
  local raised = '-'
  if is_block == '1' and block ~= '' then
    local head = redis.call('HGET', KEYS[2], 'number')
    if head == false or greater(block, head) then
      redis.call('HSET', KEYS[2], 'number', block, 'by', seq)
      raised = block
      redis.call('PUBLISH', head_channel, seq .. ' ' .. block)
    end
  end
  local stream = KEYS[2 + i]
  redis.call('XADD', stream, 'MAXLEN', '~', max_len, seq .. '-0', 'r', record)
  redis.call('EXPIRE', stream, ttl)
  redis.call('PUBLISH', notify, seq .. ' ' .. raised .. ' ' .. record)
  out[i] = {seq, raised}
end
return out
