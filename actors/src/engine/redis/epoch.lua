-- The master's epoch, put ahead of append.lua and report.lua (PROTOCOL.md section 11,
-- docs/PROTOCOL.md "Failover"). Redis replicates asynchronously, so a promoted replica may
-- lack the last events the old master issued: its sequence is then behind ids that nodes
-- already handed out. Each master has its own replication id (`master_replid`, new on
-- every promotion); the first script on a master whose id is not the one recorded starts
-- an epoch: the sequence jumps past anything the old master can have issued (by GAP, or to
-- the caller's clock when that is later; a master with no sequence at all starts at the
-- clock, or GAP past the caller's highest id when the clock is not above it), and the
-- epoch records where the master's own
-- history ended (`base`) and where the jump went (`start`). Ids in (base, start] were
-- issued by an old master and are not in this one's history: lost.
--
-- A node reports the highest id it handed out (`floor`); one in (base, start] marks the
-- range (base, floor] lost, and one above everything this master issued marks
-- (sequence, floor] lost (a sorted set of "LO HI", at most MAX_LOST kept), which a
-- resume across it answers with recovered: false.

-- Fixed, not settings: GAP only has to exceed what an old master can issue between the
-- last write its replica received and the nodes moving on (10^9 events is days at any
-- rate one Redis takes), and ids are sparse anyway; MAX_LOST bounds a key that holds one
-- entry per failover that lost something, of which a resume window sees very few.
local GAP = 1000000000
local MAX_LOST = 64

-- Decimal strings compared as numbers (no leading zeros), so that large ones keep their
-- precision.
local function greater(a, b)
  if #a ~= #b then
    return #a > #b
  end
  return a > b
end

-- Returns 1 when `floor` lies in ids this master lost, else 0.
local function epoch(seq_key, first_key, epoch_key, lost_key, start, floor)
  local info = redis.call('INFO', 'replication')
  local replid = string.match(info, 'master_replid:(%x+)') or ''
  if redis.call('HGET', epoch_key, 'replid') ~= replid then
    local seq = redis.call('GET', seq_key)
    local base, from
    if seq == false then
      -- No history at all (a fresh cluster, a Redis that lost its data, or an empty
      -- server promoted). The clock is the start, unless the caller already handed out
      -- ids at or above it (they jumped past the clock in an earlier failover): then past
      -- them by GAP, as for a master that lost its last writes, so that they fall in
      -- (base, start] and read as lost, and no id repeats.
      base = '0'
      from = start
      if floor ~= '' and not greater(start, floor) then
        from = string.format('%d', floor + GAP)
      end
      redis.call('SET', first_key, string.format('%d', from + 1))
    else
      base = seq
      from = string.format('%d', seq + GAP)
      if greater(start, from) then
        from = start
      end
    end
    redis.call('SET', seq_key, from)
    redis.call('HSET', epoch_key, 'replid', replid, 'base', base, 'start', from)
  end
  if floor == '0' or floor == '' then
    return 0
  end
  local base = redis.call('HGET', epoch_key, 'base')
  local start_at = redis.call('HGET', epoch_key, 'start')
  if not greater(floor, base) then
    return 0
  end
  local lo = base
  if greater(floor, start_at) then
    -- Above the jump: issued by this master, unless it is above anything this master
    -- issued. Then it comes from a history this master lacks (a node that reached it
    -- after the one that started the epoch had handed out more): (sequence, floor] is
    -- lost, and the sequence goes past it so that none of those ids is issued again.
    local now = redis.call('GET', seq_key)
    if now == false or not greater(floor, now) then
      return 0
    end
    lo = now
    redis.call('SET', seq_key, floor)
  end
  local hi = floor
  local old = redis.call('ZRANGEBYSCORE', lost_key, lo, lo)
  for _, member in ipairs(old) do
    local old_hi = string.match(member, ' (%d+)$')
    if old_hi and greater(old_hi, hi) then
      hi = old_hi
    end
    redis.call('ZREM', lost_key, member)
  end
  redis.call('ZADD', lost_key, lo, lo .. ' ' .. hi)
  redis.call('ZREMRANGEBYRANK', lost_key, 0, -(MAX_LOST + 1))
  return 1
end
