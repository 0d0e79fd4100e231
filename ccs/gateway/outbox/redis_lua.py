"""Lua scripts of the Redis outbox: each state change and its stream bookkeeping is one atomic
step, so a gateway killed between two commands never leaves a record and its queue entry apart.

Every script works inside one shard; P (ARGV[1]) is the shard's key prefix "{prefix:N}:", whose
hash tag puts all its keys in one cluster slot. KEYS[1] is always one key of that shard, so
redis-py's cluster client sends the script to the node owning the slot.
Keys: P:m:<id> hash per message, P:q:<lane> stream per lane (consumer group "gw"), P:counts
hash of per-state counts, P:lanes set, P:s:<kind> public streams (outcome, upstream, receipt,
token), P:e:<seq> event hashes, P:ep:<kind> zset of pending event seqs by next_at,
P:ek:<kind>:<key> -> seq (de-duplication, expiring after the horizon), P:eseq.
"""

# A record as one JSON string: one bulk reply per message is far cheaper for redis-py's
# Python parser than a nested array of fifteen.
_RECORD = """
local function record(key, kind, id)
  local flat = redis.call('HGETALL', key)
  local f = {}
  for j = 1, #flat, 2 do f[flat[j]] = flat[j + 1] end
  f['_kind'] = kind
  f['_id'] = id
  return cjson.encode(f)
end
"""

ADD = """
local p, now, n, maxlen = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local out, added = {}, 0
for i = 0, n - 1 do
  local b = 5 + i * 5
  local id, lane, payload, to, exp = ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4]
  local key = p .. 'm:' .. id
  if redis.call('EXISTS', key) == 1 then
    out[i + 1] = 0
  else
    local entry = redis.call('XADD', p .. 'q:' .. lane, '*', 'id', id)
    redis.call('HSET', key, 'lane', lane, 'payload', payload, 'state', 'queued',
               'attempts', 0, 'resent', 0, 'created_at', now, 'updated_at', now, 'entry', entry)
    if to ~= '' then redis.call('HSET', key, 'to', to) end
    if exp ~= '' then redis.call('HSET', key, 'expires_at', exp) end
    redis.call('SADD', p .. 'lanes', lane)
    added = added + 1
    out[i + 1] = 1
  end
end
if added > 0 then redis.call('HINCRBY', p .. 'counts', 'queued', added) end
return out
"""

# ARGV: prefix, now, group, maxlen, n, then (entry, id) pairs read from P:q:<lane> (KEYS[1]).
CLAIM = _RECORD + """
local p, now, group, maxlen, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local q, counts = KEYS[1], p .. 'counts'
local out = {}
local moved = {queued = 0, in_flight = 0, expired = 0, resent = 0}
for i = 0, n - 1 do
  local entry, id = ARGV[6 + i * 2], ARGV[7 + i * 2]
  local KEYS_M = p .. 'm:' .. id
  local st, cur, exp = unpack(redis.call('HMGET', KEYS_M, 'state', 'entry', 'expires_at'))
  local live = st == 'queued' or st == 'in_flight'
  if not live or cur ~= entry then
    -- finished meanwhile, or superseded by a newer entry (released): drop the stale one
    redis.call('XACK', q, group, entry)
    redis.call('XDEL', q, entry)
  elseif exp and tonumber(exp) <= now then
    redis.call('HSET', KEYS_M, 'state', 'expired', 'updated_at', ARGV[2],
               'error', 'time_to_live passed before it was sent')
    moved[st] = moved[st] - 1
    moved.expired = moved.expired + 1
    redis.call('XACK', q, group, entry)
    redis.call('XDEL', q, entry)
    local to = redis.call('HGET', KEYS_M, 'to')
    redis.call('XADD', p .. 's:outcome', 'MAXLEN', '~', maxlen, '*', 'id', id,
               'status', 'expired', 'via', 'outbox', 'to', to or '',
               'error', 'time_to_live passed before it was sent')
    table.insert(out, record(KEYS_M, 'x', id))
  else
    if st == 'queued' then
      moved.queued = moved.queued - 1
      moved.in_flight = moved.in_flight + 1
    else  -- taken over from a gateway that went silent: it may have been sent already
      redis.call('HINCRBY', KEYS_M, 'resent', 1)
      moved.resent = moved.resent + 1
    end
    redis.call('HSET', KEYS_M, 'state', 'in_flight', 'updated_at', ARGV[2])
    redis.call('HINCRBY', KEYS_M, 'attempts', 1)
    table.insert(out, record(KEYS_M, 'c', id))
  end
end
for k, v in pairs(moved) do
  if v ~= 0 then redis.call('HINCRBY', counts, k, v) end
end
return out
"""

# ARGV: prefix, now, group, maxlen, n, then per outcome: id, state, via, provider message id,
# error, description, canonical id ('' for none).
FINISH = """
local p, now, group, maxlen, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local counts = p .. 'counts'
local names = {'via', 'provider_message_id', 'error', 'description', 'canonical_id'}
local moved = {}
for i = 0, n - 1 do
  local b = 6 + i * 7
  local id, state = ARGV[b], ARGV[b + 1]
  local key = p .. 'm:' .. id
  local st, lane, entry, to = unpack(redis.call('HMGET', key, 'state', 'lane', 'entry', 'to'))
  if st == 'queued' or st == 'in_flight' then
    local set = {'state', state, 'updated_at', now}
    local fields = {'id', id, 'status', state}
    for j = 1, 5 do
      local v = ARGV[b + 1 + j]
      if v ~= '' then
        table.insert(set, names[j]); table.insert(set, v)
        table.insert(fields, names[j]); table.insert(fields, v)
      end
    end
    if to then table.insert(fields, 'to'); table.insert(fields, to) end
    redis.call('HSET', key, unpack(set))
    moved[st] = (moved[st] or 0) - 1
    moved[state] = (moved[state] or 0) + 1
    redis.call('XACK', p .. 'q:' .. lane, group, entry)
    redis.call('XDEL', p .. 'q:' .. lane, entry)
    redis.call('XADD', p .. 's:outcome', 'MAXLEN', '~', maxlen, '*', unpack(fields))
  end
end
for k, v in pairs(moved) do
  if v ~= 0 then redis.call('HINCRBY', counts, k, v) end
end
return n
"""

# Put in-flight messages back at the end of their lane (a new entry), resent + 1.
# ARGV: prefix, now, group, n, ids; returns how many went back.
REQUEUE = """
local p, now, group, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local counts, moved = p .. 'counts', 0
for i = 0, n - 1 do
  local id = ARGV[5 + i]
  local key = p .. 'm:' .. id
  if redis.call('HGET', key, 'state') == 'in_flight' then
    local lane, entry = unpack(redis.call('HMGET', key, 'lane', 'entry'))
    local q = p .. 'q:' .. lane
    redis.call('XACK', q, group, entry)
    redis.call('XDEL', q, entry)
    local new = redis.call('XADD', q, '*', 'id', id)
    redis.call('HSET', key, 'state', 'queued', 'updated_at', now, 'entry', new)
    redis.call('HINCRBY', key, 'resent', 1)
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('HINCRBY', counts, 'in_flight', -moved)
  redis.call('HINCRBY', counts, 'queued', moved)
  redis.call('HINCRBY', counts, 'resent', moved)
end
return moved
"""

# ARGV: prefix, kind, key, body, now, maxlen, horizon (seconds the key is remembered), shards,
# this shard; returns {seq, new (0/1)}. The public stream gets the global seq (see add_event).
ADD_EVENT = """
local p, kind, k, body, now, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local dedup = p .. 'ek:' .. kind .. ':' .. k
local seq = redis.call('GET', dedup)
if seq then return {tonumber(seq), 0} end
seq = redis.call('INCR', p .. 'eseq')
redis.call('SET', dedup, seq, 'EX', ARGV[7])
redis.call('HSET', p .. 'e:' .. seq, 'kind', kind, 'key', k, 'body', body, 'attempts', 0,
           'next_at', now, 'created_at', now)
redis.call('ZADD', p .. 'ep:' .. kind, now, seq)
redis.call('SADD', p .. 'ekinds', kind)
if kind ~= 'webhook' then
  local global = seq * tonumber(ARGV[8]) + tonumber(ARGV[9])
  redis.call('XADD', p .. 's:' .. kind, 'MAXLEN', '~', maxlen, '*', 'seq', global, 'body', body)
end
return {seq, 1}
"""

# Events whose time has come, each hidden from other gateways for `hold` seconds (a gateway
# that dies while handling them leaves them to another). ARGV: prefix, kind, now, limit, hold.
PENDING_EVENTS = """
local p, kind, now, limit, hold = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local z = p .. 'ep:' .. kind
local seqs = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, seq in ipairs(seqs) do
  redis.call('ZADD', z, now + tonumber(hold), seq)
  table.insert(out, {seq, redis.call('HMGET', p .. 'e:' .. seq, 'key', 'body', 'attempts',
                                     'next_at', 'error', 'created_at')})
end
return out
"""

EVENT_DONE = """
local p = ARGV[1]
for i = 2, #ARGV do
  local key = p .. 'e:' .. ARGV[i]
  local kind = redis.call('HGET', key, 'kind')
  if kind then
    redis.call('ZREM', p .. 'ep:' .. kind, ARGV[i])
    redis.call('DEL', key)
  end
end
return 0
"""

EVENT_RETRY = """
local p, seq, next_at, err = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p .. 'e:' .. seq
local kind = redis.call('HGET', key, 'kind')
if kind then
  redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'next_at', next_at, 'error', err)
  redis.call('ZADD', p .. 'ep:' .. kind, next_at, seq)
end
return 0
"""
