-- One consistent read of the cluster's log (PROTOCOL.md sections 7 and 11), for a replay
-- and for a node's backfill after it reconnects. A script, so no append interleaves.
--
-- KEYS[1]        the sequence counter
-- KEYS[2]        the first sequence number issued
-- KEYS[3]        the head's timeline (stream of raises, field n)
-- KEYS[4]        the master's epoch (epoch.lua)
-- KEYS[5]        the ranges of ids lost in failovers (epoch.lua)
-- KEYS[5 + i]    channel i's history stream
-- ARGV[1]        the timeline is read after this sequence number ...
-- ARGV[2]        ... up to this one ('+': to the end)
-- ARGV[3]        most entries read per stream
-- ARGV[4]        a release's B to look up in the timeline ('' when none)
-- ARGV[4 + i]    channel i is read after this sequence number (up to ARGV[2])
--
-- Returns {last issued or '', first issued or '', B is a raise (0/1),
--          base raise {id, n} or {}, raises {{id, {'n', n}}...},
--          per channel {first kept entry id when older ones were trimmed, else '0-0',
--                       entries {{id, {'r', record}}...}},
--          the epoch {base, start} or {}, the lost ranges {'LO HI'...}}.

local function after(seq)
  return '(' .. seq .. '-0'
end
local hi = ARGV[2]
if hi ~= '+' then
  hi = hi .. '-0'
end
local count = ARGV[3]

-- Trimming removes the oldest entries; when any went, everything before the first kept
-- entry may be gone, so its id is returned ('0-0': nothing was removed).
local function kept_from(key)
  if redis.call('EXISTS', key) == 0 then
    return '0-0'
  end
  local info = redis.call('XINFO', 'STREAM', key)
  local f = {}
  for i = 1, #info, 2 do
    f[info[i]] = info[i + 1]
  end
  if tonumber(f['entries-added']) > tonumber(f['length']) then
    return f['recorded-first-entry-id']
  end
  return '0-0'
end

local last = redis.call('GET', KEYS[1]) or ''
local first = redis.call('GET', KEYS[2]) or ''
local known = 0
if ARGV[4] ~= '' then
  if #redis.call('XRANGE', KEYS[3], ARGV[4] .. '-0', ARGV[4] .. '-0') > 0 then
    known = 1
  end
end
local base = redis.call('XREVRANGE', KEYS[3], ARGV[1] .. '-0', '-', 'COUNT', 1)
local base_out = {}
if #base > 0 then
  base_out = {base[1][1], base[1][2][2]}
end
local raises = redis.call('XRANGE', KEYS[3], after(ARGV[1]), hi, 'COUNT', count)
local channels = {}
for i = 6, #KEYS do
  local key = KEYS[i]
  local entries = redis.call('XRANGE', key, after(ARGV[i - 1]), hi, 'COUNT', count)
  channels[i - 5] = {kept_from(key), entries}
end
local epoch = {}
local e_base = redis.call('HGET', KEYS[4], 'base')
local e_start = redis.call('HGET', KEYS[4], 'start')
if e_base and e_start then
  epoch = {e_base, e_start}
end
local lost = redis.call('ZRANGE', KEYS[5], 0, -1)
return {last, first, known, base_out, raises, channels, epoch, lost}
