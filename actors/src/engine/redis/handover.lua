-- The handover's write on the new master (handover.rs, after epoch.lua): the events and
-- head raises the old master issued and this master lacks, copied with their ids, so that
-- a planned failover loses nothing that was acknowledged (docs/PROTOCOL.md decision 50).
--
-- KEYS[1]        the sequence counter
-- KEYS[2]        the first sequence number the cluster issued
-- KEYS[3]        the master's epoch (epoch.lua)
-- KEYS[4]        the ranges of ids lost in failovers (epoch.lua)
-- KEYS[5]        the head's timeline (stream of raises, field n)
-- KEYS[6]        the chain head: hash {number, by}
-- KEYS[7]        the index of the history streams (append.lua)
-- KEYS[7 + i]    history stream i
-- ARGV[1]        the caller's clock in microseconds (where a new sequence starts)
-- ARGV[2]        the old master's replication id: this master must have been promoted from
--                it (its master_replid2), else nothing is copied
-- ARGV[3]        the old master issued every id up to here that the arguments carry
-- ARGV[4]        most entries kept per stream (approximate trim)
-- ARGV[5]        seconds a stream lives after its last append
-- then triples from ARGV[6], in sequence order: stream number i (0: a head raise), the
-- sequence number, the record (for a raise: the block number).
--
-- An id is copied when this master lacks it and its stream has no later id (a node already
-- appended above it there: it stays lost). The epoch's base then moves up to the last id
-- below which nothing is missing, so that resumes across the copied ids are complete, and
-- the lost ranges below it are dropped. Returns {ids copied, the epoch's base}.

epoch(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], '0')
local info = redis.call('INFO', 'replication')
local replid2 = string.match(info, 'master_replid2:(%x+)') or ''
local base = redis.call('HGET', KEYS[3], 'base')
local start_at = redis.call('HGET', KEYS[3], 'start')
if replid2 ~= ARGV[2] or not base or not start_at then
  return {0, base or '0'}
end
local upto = ARGV[3]
if greater(upto, start_at) then
  upto = start_at
end
local max_len, ttl = ARGV[4], ARGV[5]
local now_s = string.format('%d', math.floor(tonumber(ARGV[1]) / 1000000))
local copied = 0
-- The first id that could not be copied: nothing from there is known complete.
local blocked = false
local function present(key, id)
  return #redis.call('XRANGE', key, id, id) > 0
end
for t = 6, #ARGV - 2, 3 do
  local i, seq, value = tonumber(ARGV[t]), ARGV[t + 1], ARGV[t + 2]
  if greater(seq, base) and not greater(seq, upto) then
    local id = seq .. '-0'
    local key = KEYS[5]
    if i > 0 then
      key = KEYS[7 + i]
    end
    if not present(key, id) then
      local ok
      if i == 0 then
        ok = redis.pcall('XADD', key, 'MAXLEN', '~', max_len, id, 'n', value)
      else
        ok = redis.pcall('XADD', key, 'MAXLEN', '~', max_len, id, 'r', value)
      end
      if type(ok) == 'table' and ok.err then
        if not blocked or greater(blocked, seq) then
          blocked = seq
        end
      else
        copied = copied + 1
        if i == 0 then
          local head = redis.call('HGET', KEYS[6], 'number')
          if head == false or greater(value, head) then
            redis.call('HSET', KEYS[6], 'number', value, 'by', seq)
          end
        else
          redis.call('EXPIRE', key, ttl)
          redis.call('ZADD', KEYS[7], now_s, key)
        end
      end
    end
  end
end
local new_base = upto
if blocked then
  new_base = string.format('%d', tonumber(blocked) - 1)
end
if greater(new_base, base) then
  redis.call('HSET', KEYS[3], 'base', new_base)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], base, base)) do
    redis.call('ZREM', KEYS[4], member)
    local hi = string.match(member, ' (%d+)$')
    if hi and greater(hi, new_base) then
      redis.call('ZADD', KEYS[4], new_base, new_base .. ' ' .. hi)
    end
  end
  base = new_base
end
return {copied, base}
