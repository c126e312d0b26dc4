"""``RedisStore``: streams in Redis Streams, shared by every replica.

One Redis stream per ssegate stream (``<prefix>{<name>}:log``) holds the events,
and a hash (``<prefix>{<name>}:meta``) the last number, the epoch, the outcome
and the producer's lease deadline. Every mutation is one Lua script, so "is it
ended?" and "append" cannot interleave with another replica's end or lease
expiry, and a stream is created with its epoch in one step:

- create (also done by the first append or lease): ``last`` 0 and the epoch
  (chosen by the caller, so the script stays deterministic), only if the hash
  does not exist yet; the epoch never changes afterwards.
- append: per stream, ``HMGET meta`` (last, epoch, outcome, lease), one
  ``XADD log <n>-<epoch> ...`` per event numbered after ``last`` (the last one
  with ``MAXLEN <max_len>``), then ``HINCRBY meta last``. The entry id is the
  event id (see ``_store``) with the number first, so ``XRANGE``/``XREAD``
  address events by number alone, and every reply carries the epoch it was
  written under (an 8-hex-digit epoch is stored as the decimal entry-id part).
- end: ``XADD`` an end marker (``end=<outcome>``, number ``last + 1``) to the
  log itself, so readers blocked in ``XREAD`` wake up and see the end in order
  after the last event; no separate "done" message that could be lost. Then
  ``PEXPIRE`` both keys.
- leases: a deadline in the hash, compared with Redis's own clock (``TIME``),
  so replicas with skewed clocks agree on when a producer is gone.

Appends are written by group commit (``_batch``): they queue, and one Lua call
carries everything queued, across all streams, while the previous call was in
flight (or over ``append_window`` seconds, if given; and no sooner than
``append_interval`` after the previous call went out, if given); one call is in flight at
a time, so a stream's events are numbered in the order of its ``append()``
calls. The call has six arguments whatever it carries: the batch is one string
(``Batch.blob()``) and the script makes the streams' keys from their names
(redis-py's cost is per argument; the client's CPU per append fell about 3x
when the batch stopped being three arguments per event and two keys per stream),
and it is sent and read on the writer's own connection, packed by hiredis, not
through redis-py's per-command machinery (``_call_held``: ~40 % of a call's client
CPU); a stream's own calls are pipelined the same way (``_pipelining``).
On Redis Cluster the batch is split by hash slot, one call per slot naming its
streams' keys (the script still reads the batch string). Each ``append()`` still returns
its own event's id once Redis has it, or raises its own error: a stream that
has ended fails only its own appends, Redis going away fails the appends of
the call in flight (and of later calls while it is away). An appender
cancelled while its event waits in the queue takes it back (it is not
written); once the call carrying it is sent it is written like the others in
it. ``aclose()`` writes what is queued before closing.

History is ``XRANGE``; a reader of its own blocks in ``XREAD`` on its stream.
A ``Hub`` serves every reader of a process with one task, and does not block on
the thousands of streams it may follow: every write (the append call, an end,
a lease running out) also adds one entry to a notification stream (trimmed to
about ``NOTIFY_LEN`` entries) naming the streams it advanced and their new last
number, in one string: an append call or an end to its store's own
(``<prefix>notify:w:<id>``, listed in the writers' set ``<prefix>notify:writers``),
a lease running out to the shared one (``<prefix>notify``). The hub blocks on those of
the other writers and the shared one, and then reads only the streams it
follows that advanced past its cursors, in one script call whose reply is a
flat list of strings. (A blocking ``XREAD`` naming every stream cost a thousand
keys per call on both sides, and Redis wakes it with one stream's entries, so
it read about twice per write.) Streams the hub newly follows are read
directly, and every ``poll_interval`` all of them are (the sweep), so a
notification trimmed before the hub got to it delays what it announced, never
loses it.

What a process writes, its own hubs need not read back at all: once a write's
reply is in, the store hands each hub the events it stored, or the end
(``Waker.deliver``; a stream's lone event to the process's one hub as the
event, ``Waker.deliver_event``, as ``MemoryStore`` does), which the hub takes
if they follow on from its cursor; and they are not woken by its announcements,
which go to the stream of its own that they do not block on (woken by each
write, a hub paid a round trip and a parse per write for nothing: ~6 us of
client CPU per token at 1 000 streams x 20 tokens/s). A write
the hub is behind on (another replica wrote the events before it, and they are
not read yet), or whose reply was lost, has the hub read its streams at once.

Redis Cluster (a ``redis+cluster://`` URL naming any node, or a
``redis.asyncio.cluster.RedisCluster``): a stream's keys share its name as their
hash tag, so every script about one stream stays in one slot; a write (or a
hub's read, or a lease check) of many streams becomes one call per slot, sent
side by side, each stream's appends still in one call. The notification streams
(``<prefix>{notify}``, the writers' set and streams and the hubs' wake-up keys
in its slot) live on one master: as no script may name them beside a stream's
keys, the client announces what a write advanced right after it, and a process
that dies in between leaves that write to the hubs' sweep (``poll_interval``),
as a trimmed notification would.

Redis errors are translated at this edge: cannot connect, timeouts and refusals
to write become ``StoreUnavailable``. The client this store creates does not
retry commands by itself: retrying an append whose reply was lost could store
it twice, so the caller decides (every error is raised, nothing is swallowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from .._exceptions import StoreUnavailable, StreamEnded, StreamNotFound
from .._extras import require
from ..protocol import Event
from ._batch import Batch, GroupCommit, StreamRun, encode_append
from ._store import (
    EPOCH_WIDTH,
    ID_WIDTH,
    Appender,
    Page,
    StreamInfo,
    StreamStore,
    Waker,
    check_event,
    check_stream_name,
    format_id,
    new_epoch,
)

require("redis", "ssegate.streams.redis")

from redis.asyncio import BlockingConnectionPool, Redis  # noqa: E402
from redis.asyncio.cluster import RedisCluster  # noqa: E402
from redis.asyncio.connection import Connection, SSLConnection  # noqa: E402
from redis.asyncio.retry import Retry  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.commands.core import AsyncScript  # noqa: E402
from redis.crc import key_slot  # noqa: E402
from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: E402
from redis.exceptions import NoScriptError, RedisError  # noqa: E402
from redis.exceptions import ResponseError as RedisResponseError  # noqa: E402

from ._pipelining import ScriptCalls, pack_commands, resolve  # noqa: E402

try:  # redis-py >= 7
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py checks idle connections anyway
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

__all__ = ["RedisStore"]

#: Entries kept on a store's notification stream (about: trimmed by whole
#: nodes). A hub that falls further behind misses some, and its sweep (every
#: ``poll_interval``) finds what they announced.
NOTIFY_LEN = 4096

_LIB = """
-- every script names the log and meta of its streams, then the store's
-- notification stream, except on Redis Cluster, where a script names one
-- stream's keys (one hash slot) and the client announces (see _announce_many)
local notify = (#KEYS % 2 == 1) and KEYS[#KEYS]
local now
-- Redis's clock in ms (read once per script: it is one atomic step anyway)
local function now_ms()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
-- the entry id of event number seq (Lua 5.1 numbers are doubles: format as integers)
local function entry_id(meta, seq)
  return string.format('%d-%s', seq, redis.call('HGET', meta, 'epoch'))
end
local function create(meta, epoch)
  if redis.call('HSETNX', meta, 'last', '0') == 1 then
    redis.call('HSET', meta, 'epoch', epoch)
  end
end
-- the name of the stream whose log this is (the prefix has no braces)
local function name_of(log)
  return string.match(log, '{(.*)}:log$')
end
-- tell the hubs which streams advanced, and to which number: one entry on the
-- notification stream, a single field 's' of "<writer> <name> <number> ..."
-- (no spaces in any), so a hub parses one string per write. The writer is the
-- appending store's id ('-' for the other scripts): its own hubs skip the entry
local function announce(advanced, ttl)
  if not notify then return end
  redis.call('XADD', notify, 'MAXLEN', '~', NOTIFY_LEN, '*', 's', table.concat(advanced, ' '))
  redis.call('PEXPIRE', notify, ttl)
end
-- an append's announcement ("<writer> <name> <number> ..."), on the writer's own
-- notification stream: the writer's hubs have what it wrote (handed over) and do
-- not block on it, so its writes do not wake them. The stream is listed in the
-- writers' set (scored by its last write, Redis's clock), which every hub reads
-- to know which streams to block on; the write that lists it anew also puts a
-- marker ('w': the stream's key) on the shared stream, so every hub reads the
-- set again at once. Streams idle for ttl leave the set (and expire).
local function announce_writes(own, writers, shared, text, ttl)
  redis.call('XADD', own, 'MAXLEN', '~', NOTIFY_LEN, '*', 's', text)
  redis.call('PEXPIRE', own, ttl)
  if redis.call('ZADD', writers, now_ms(), own) == 1 then
    redis.call('XADD', shared, 'MAXLEN', '~', NOTIFY_LEN, '*', 's', '-', 'w', own)
    redis.call('PEXPIRE', shared, ttl)
    redis.call('ZREMRANGEBYSCORE', writers, '-inf', now_ms() - tonumber(ttl))
  end
  redis.call('PEXPIRE', writers, ttl)
end
-- ends the stream; its end's number. Announced by nobody in particular, or
-- (own: the writer's stream, the writers' set and the writer's id) as a write
-- of that writer's, whose hubs are handed the end (see RedisStore._end)
local function finish(log, meta, outcome, ttl, own)
  local last = tonumber(redis.call('HGET', meta, 'last'))
  redis.call('XADD', log, entry_id(meta, last + 1), 'end', outcome)
  redis.call('HSET', meta, 'outcome', outcome)
  redis.call('HDEL', meta, 'lease')
  redis.call('PEXPIRE', log, ttl)
  redis.call('PEXPIRE', meta, ttl)
  local number = string.format('%d', last + 1)
  if own and notify then
    announce_writes(own[1], own[2], notify, own[3] .. ' ' .. name_of(log) .. ' ' .. number, ttl)
  else
    announce({'-', name_of(log), number}, ttl)
  end
  return last + 1
end
-- whether a stream with this outcome and lease deadline has ended (or just
-- ended as failed, its lease having run out): the outcome, or false
local function ended_as(log, meta, outcome, lease, ttl)
  if outcome then return outcome end
  if lease and tonumber(lease) <= now_ms() then
    finish(log, meta, 'failed', ttl)
    return 'failed'
  end
  return false
end
local function ended(log, meta, ttl)
  local m = redis.call('HMGET', meta, 'outcome', 'lease')
  return ended_as(log, meta, m[1], m[2], ttl)
end
""".replace("NOTIFY_LEN", str(NOTIFY_LEN))

# KEYS: the store's own notification stream, the writers' set, the shared
# notification stream (or the shared one alone: the announcement goes there);
# ARGV: ttl_ms, max_len, the store's id (for the notification),
# the epoch for the streams this call creates, the key prefix, and the batch
# (``_batch.Batch.blob()``: per stream its name, the number n of its appends
# and their size, then n times data, event type or '', retry or '', each string
# after its length) -> per stream two values: the number of its first event,
# then its epoch (as the entry ids carry it) if all n were written, else
# {written, epoch or false, error}.
# The streams' keys are made here from the prefix and the names the batch
# carries, not passed as KEYS: redis-py's cost is per argument, and the call
# names hundreds of streams (fine on one Redis, with or without replicas; Redis
# Cluster would need the batch split by hash slot anyway).
# Each stream runs under pcall: an error (its end, a key of the wrong type)
# stops that stream's appends, not the others'. Three commands per stream
# (HMGET, the XADDs, HINCRBY), the last XADD trimming to max_len.
# Redis runs this for every token of every stream, so its own work per stream
# is kept small (it was ~3/4 of the call: ~11 of ~14 us per event, the XADD
# itself ~3): the XADD forms spelled out (no table and unpack() per event),
# no number given to redis.call (Lua formats it with %.14g: HINCRBY's count is
# a string), the event's number formatted once for its id and the
# announcement, and a reply of two values per stream (each value costs Redis
# a conversion and the client a parse).
_APPEND_MANY = (
    _LIB
    + """
local ttl, max_len, epoch, prefix, blob = ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6]
local call, unpack_struct, format = redis.call, struct.unpack, string.format
-- of the stream run() is on: last number before, epoch, appends written, and
-- the last number formatted (that of the last written, unless run() failed)
local last, ep, written, number
local function xadd(log, id, d, e, r)
  if e == '' then
    if r == '' then call('XADD', log, id, 'd', d)
    else call('XADD', log, id, 'd', d, 'r', r) end
  elseif r == '' then call('XADD', log, id, 'd', d, 'e', e)
  else call('XADD', log, id, 'd', d, 'e', e, 'r', r) end
end
local function run(log, meta, n, at)
  local m = call('HMGET', meta, 'last', 'epoch', 'outcome', 'lease')
  if m[3] or m[4] then
    local o = ended_as(log, meta, m[3], m[4], ttl)
    if o then error('SSEGATE_ENDED ' .. o, 0) end
  end
  last, ep = tonumber(m[1]), m[2]
  if not last then
    last, ep = 0, epoch
    call('HSET', meta, 'last', '0', 'epoch', epoch)
  end
  local tail = '-' .. ep
  local d, e, r
  for i = 1, n - 1 do
    d, e, r, at = unpack_struct('>I4c0I4c0I4c0', blob, at)
    number = format('%d', last + i)
    xadd(log, number .. tail, d, e, r)
    written = i
  end
  -- the last one trims the log
  d, e, r = unpack_struct('>I4c0I4c0I4c0', blob, at)
  number = format('%d', last + n)
  local id = number .. tail
  if e == '' then
    if r == '' then call('XADD', log, 'MAXLEN', max_len, id, 'd', d)
    else call('XADD', log, 'MAXLEN', max_len, id, 'd', d, 'r', r) end
  elseif r == '' then call('XADD', log, 'MAXLEN', max_len, id, 'd', d, 'e', e)
  else call('XADD', log, 'MAXLEN', max_len, id, 'd', d, 'e', e, 'r', r) end
  written = n
  call('HINCRBY', meta, 'last', n == 1 and '1' or format('%d', n))
end
local reply, advanced = {}, {ARGV[3]}
local k, a = 0, 1
local at, size_all = 1, #blob
while at <= size_all do
  local name, n, size
  name, n, size, at = unpack_struct('>I4c0I4I4', blob, at)
  local key = prefix .. '{' .. name .. '}'
  local log, meta = key .. ':log', key .. ':meta'
  last, ep, written, number = 0, false, 0, false
  local ok, err = pcall(run, log, meta, n, at)
  reply[k + 1] = last + 1
  if ok then
    reply[k + 2] = ep
  else
    if type(err) == 'table' then err = err.err end
    if written > 0 and written < n then
      -- keep the numbering whole: count what was written before the error
      pcall(call, 'HINCRBY', meta, 'last', format('%d', written))
      pcall(call, 'XTRIM', log, 'MAXLEN', max_len)
    end
    if written > 0 then number = format('%d', last + written) end
    reply[k + 2] = {written, ep, tostring(err)}
  end
  k = k + 2
  if written > 0 then
    advanced[a + 1] = name
    advanced[a + 2] = number
    a = a + 2
  end
  at = at + size
end
if a > 1 then
  if #KEYS == 3 then
    announce_writes(KEYS[1], KEYS[2], notify, table.concat(advanced, ' '), ttl)
  else
    announce(advanced, ttl)
  end
end
return reply
"""
)

# Redis Cluster: an append's announcement, from the client (see _announce_many).
# KEYS: the store's own notification stream, the writers' set, the shared
# notification stream (all in its slot); ARGV: ttl_ms, the announcement.
_ANNOUNCE = (
    _LIB
    + """
announce_writes(KEYS[1], KEYS[2], KEYS[3], ARGV[2], ARGV[1])
return 1
"""
)

# KEYS: log, meta, notify; ARGV: new epoch
_CREATE = (
    _LIB
    + """
create(KEYS[2], ARGV[1])
return 1
"""
)

# KEYS: log, meta, then the store's own notification stream, the writers' set and
# the shared notification stream (none on Redis Cluster); ARGV: ttl_ms, outcome,
# the store's id -> the end's number and the epoch part of the ids.
_END = (
    _LIB
    + """
if not redis.call('HGET', KEYS[2], 'last') then return redis.error_reply('SSEGATE_NOTFOUND') end
local o = ended(KEYS[1], KEYS[2], ARGV[1])
if o then return redis.error_reply('SSEGATE_ENDED ' .. o) end
local n = finish(KEYS[1], KEYS[2], ARGV[2], ARGV[1], {KEYS[3], KEYS[4], ARGV[3]})
return {n, redis.call('HGET', KEYS[2], 'epoch')}
"""
)

# KEYS: log, meta, notify; ARGV: ttl_ms, lease_ms, new epoch
_LEASE = (
    _LIB
    + """
local o = ended(KEYS[1], KEYS[2], ARGV[1])
if o then return redis.error_reply('SSEGATE_ENDED ' .. o) end
create(KEYS[2], ARGV[3])
redis.call('HSET', KEYS[2], 'lease', now_ms() + tonumber(ARGV[2]))
return 1
"""
)

# KEYS: notify (on Redis Cluster instead: log and meta of each stream, all in one
# slot); ARGV: ttl_ms, lease_ms, the epoch for the streams this call creates,
# the key prefix, the streams' names (one string, space-separated: redis-py's
# cost is per argument) -> the positions (1-based) of the streams that have
# ended (or just ended as failed): their leases are not renewed.
# Each stream as _LEASE, in two commands (HMGET, HSET) when it exists.
_LEASE_MANY = (
    _LIB
    + """
local ttl, epoch, prefix = ARGV[1], ARGV[3], ARGV[4]
local deadline = now_ms() + tonumber(ARGV[2])
local reply = {}
local k = 0
for name in string.gmatch(ARGV[5], '%S+') do
  k = k + 1
  local key = prefix .. '{' .. name .. '}'
  local log, meta = key .. ':log', key .. ':meta'
  local m = redis.call('HMGET', meta, 'outcome', 'lease', 'last')
  if ended_as(log, meta, m[1], m[2], ttl) then
    reply[#reply + 1] = k
  else
    if not m[3] then create(meta, epoch) end
    redis.call('HSET', meta, 'lease', deadline)
  end
end
return reply
"""
)

# KEYS: log and meta of each stream, then notify; ARGV: ttl_ms -> per stream, 1 if this call
# ended it as failed (its lease ran out), else 0
_EXPIRE = (
    _LIB
    + """
local reply = {}
for k = 1, #KEYS - 1, 2 do
  local m = redis.call('HMGET', KEYS[k + 1], 'outcome', 'lease')
  if not m[1] and m[2] and ended_as(KEYS[k], KEYS[k + 1], m[1], m[2], ARGV[1]) then
    reply[#reply + 1] = 1
  else
    reply[#reply + 1] = 0
  end
end
return reply
"""
)

# KEYS: logs; ARGV: count, the first number to read of each log (one string,
# space-separated: redis-py's cost is per argument) -> flat, per
# log with entries: its index (1-based), the first number, the epoch part of the
# ids, the entries read, the events n among them, the outcome ('' if the end is
# not among them), then n times data, event type ('' for message), retry (or '').
# A hub's read of the streams that advanced: one reply of plain strings, which
# the client takes apart in one loop (XREAD's reply costs a dict per entry).
# Appends the events of XRANGE ``entries`` to ``reply`` as data, event type,
# retry each; returns how many, and the end's outcome if the entries reached
# the end marker (else false). What a reader's scripts share.
_FLATTEN = """
local function flatten(entries, reply)
  local n = 0
  for i = 1, #entries do
    local f = entries[i][2]
    local d, e, r, o = '', '', '', false
    for j = 1, #f, 2 do
      local name = f[j]
      if name == 'd' then d = f[j + 1]
      elseif name == 'e' then e = f[j + 1]
      elseif name == 'r' then r = f[j + 1]
      elseif name == 'end' then o = f[j + 1] end
    end
    if o then return n, o end
    reply[#reply + 1] = d
    reply[#reply + 1] = e
    reply[#reply + 1] = r
    n = n + 1
  end
  return n, false
end
"""

_READ = (
    _FLATTEN
    + """
local count = ARGV[1]
local starts = {}
for start in string.gmatch(ARGV[2], '%d+') do starts[#starts + 1] = start end
local reply = {}
for k = 1, #KEYS do
  local entries = redis.call('XRANGE', KEYS[k], starts[k], '+', 'COUNT', count)
  if #entries > 0 then
    local id = entries[1][1]
    local dash = string.find(id, '-', 1, true)
    reply[#reply + 1] = k
    reply[#reply + 1] = string.sub(id, 1, dash - 1)
    reply[#reply + 1] = string.sub(id, dash + 1)
    reply[#reply + 1] = #entries
    local at = #reply + 1
    reply[at] = 0
    reply[at + 1] = ''
    local n, o = flatten(entries, reply)
    reply[at] = n
    if o then reply[at + 1] = o end
  end
end
return reply
"""
)

# Reads of one stream, each one command (a MULTI of several costs the client
# as much per command, and a script is what a pipeline of calls can carry).
# KEYS: log, meta. Reply: {} if the stream does not exist, else last, outcome
# ('' while it runs), epoch part, XLEN, and the first entry's id ('' if none,
# or if the first entry is the end marker).
_INFO = """
local m = redis.call('HMGET', KEYS[2], 'last', 'outcome', 'epoch')
if not m[1] then return {} end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first = ''
if #head > 0 then
  first = head[1][1]
  local f = head[1][2]
  for j = 1, #f, 2 do
    if f[j] == 'end' then first = '' end
  end
end
return {m[1], m[2] or '', m[3], redis.call('XLEN', KEYS[1]), first}
"""

# KEYS: log, meta; ARGV: first number to read, most entries. Reply: {} if the
# stream does not exist, else last, outcome ('' while it runs), epoch part,
# the first entry's number ('' if none), the end's outcome if the entries
# reached it (else ''), then data, type, retry of each event.
_PAGE = (
    _FLATTEN
    + """
local m = redis.call('HMGET', KEYS[2], 'last', 'outcome', 'epoch')
if not m[1] then return {} end
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local reply = {m[1], m[2] or '', m[3], '', ''}
if #entries > 0 then
  local id = entries[1][1]
  reply[4] = string.sub(id, 1, string.find(id, '-', 1, true) - 1)
end
local _, o = flatten(entries, reply)
if o then reply[5] = o end
return reply
"""
)

#: XREAD returns entries after the id given: "after every entry numbered n",
#: whatever its epoch, is n followed by the largest sequence part.
_AFTER = b"-18446744073709551615"

#: ``encode_append``'s pieces (``_batch``), for the appenders' fast path
#: (``RedisStore._queue_checked``): a length, and the length of an empty retry.
_length = struct.Struct(">I").pack
_NO_RETRY = bytes(4)
#: What follows an event's data on the wire, by event type: its type and an
#: empty retry (a producer's events are mostly of one or two types).
_TAILS: dict[str, bytes] = {"message": bytes(8)}


def _tail(kind: str) -> bytes:
    """``_TAILS[kind]``, made (and kept, for the first few dozen types)."""
    name = kind.encode()
    tail = _length(len(name)) + name + _NO_RETRY
    if len(_TAILS) < 64:
        _TAILS[kind] = tail
    return tail


#: Notifications a hub takes per read (each lists the streams one write advanced).
NOTIFY_BATCH = 256

#: Where an announcement's number is unknown (an end, told by the client): any
#: hub following the stream reads it.
_ANY = 1 << 62

#: Streams per lease renewal call (the script blocks Redis while it runs: a
#: few hundred streams take about a millisecond).
LEASE_BATCH = 500

#: URL schemes of a Redis Cluster (any one node's address).
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")

#: What makes redis-py's pool look at an idle connection before lending it:
#: one the server closed (Redis restarted, ``CLIENT KILL``, its idle timeout)
#: is opened again instead of failing the request it is lent for. redis-py 8
#: skips that look when "maintenance notifications" are on, which they are by
#: default on RESP3 ("auto"): off, as they are for Redis Enterprise's
#: failovers only. (Commands themselves are never retried: see the module doc.)
_CHECKED_ON_CHECKOUT: dict[str, Any] = (
    {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}
    if MaintNotificationsConfig is not None
    else {}
)


class _LookFirst:
    """A Redis Cluster node's connection that is looked at before each use, as a
    pool looks at its connections before lending them: redis-py's cluster lends a
    node's connections as they are, so one the node closed while it sat idle
    (a restart, ``CLIENT KILL``, Redis's idle ``timeout``) failed the request it
    was lent for. One that the server closed, or that holds unread bytes, is
    closed here and opened again by the send."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # Not while connecting (its handshake is sent without a health check).
        if check_health:
            await _look_at(self)
        await super().send_packed_command(command, check_health)  # type: ignore[misc]


async def _look_at(connection: Any) -> None:
    """Close ``connection`` if it is open but the server closed it, or it holds
    unread bytes (redis-py's pool's look at a connection before lending it):
    its next use opens it again."""
    if not connection.is_connected:
        return
    # redis-py 8's name for it; before 8, can_read_destructive (the same look).
    look = getattr(connection, "can_read", None) or connection.can_read_destructive
    try:
        stale = await look()
    except (RedisConnectionError, OSError):
        stale = True
    if stale:
        await connection.disconnect()


class _LookedAt(_LookFirst, Connection):
    pass


class _LookedAtSSL(_LookFirst, SSLConnection):
    pass


_LOOKED_AT: dict[Any, type] = {Connection: _LookedAt, SSLConnection: _LookedAtSSL}


def _look_before_use(cluster: RedisCluster) -> bool:
    """Make the node connections ``cluster`` opens look before each use (``_LookFirst``).

    redis-py's cluster takes no connection class of its own: it is set where its
    node manager and nodes keep it. Only where they are as expected (redis-py 8):
    else ``False``, and the client is left as it is.
    """
    manager = getattr(cluster, "nodes_manager", None)
    kwargs = getattr(manager, "connection_kwargs", None)
    nodes = getattr(manager, "startup_nodes", None)
    if not isinstance(kwargs, dict) or not isinstance(nodes, dict):
        return False
    looked = _LOOKED_AT.get(kwargs.get("connection_class", Connection))
    if looked is None or not all(
        _LOOKED_AT.get(getattr(node, "connection_class", None)) is looked for node in nodes.values()
    ):
        return False
    kwargs["connection_class"] = looked
    for node in nodes.values():
        node.connection_class = looked
    return True


#: History reads a hub may run at once where they are pipelined (``concurrent_reads``):
#: a burst's reads go out a loop turn's worth at a time, each turn's on one connection.
PIPELINED_READS = 256

#: An append call no longer than this is sent without a write timeout (see
#: ``RedisStore._call_held``): well under a transport's buffer limit (64 KiB), so
#: sending it never waits for the socket.
_UNBLOCKED_WRITE = 16 * 1024

#: Connections a store made from a URL may open; the pool waits for a free one
#: beyond that, so load never multiplies connections (a Hub needs one or two).
DEFAULT_MAX_CONNECTIONS = 32


class _RedisWaker(Waker):
    """A hub's wake-up key, and where the hub is on the notification stream."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        # On Redis Cluster in the notification stream's slot: one XREAD names both.
        self.key = f"{store._notify}hub:{uuid.uuid4().hex}"
        self.last_id: bytes | str = "0-0"
        #: The notification streams the hub blocks on (the shared one, and the
        #: other writers' own), each with the last entry read (None: not
        #: positioned yet).
        self.positions: dict[bytes | str, bytes | str] | None = None
        #: A writer was newly listed in the writers' set: read the set again.
        self.relist = False
        #: The streams the previous wait followed (any other is new: read it directly).
        self.known: set[str] = set()
        #: Streams whose last read was a full page: read on without waiting.
        self.pending: set[str] = set()
        self.next_sweep = 0.0
        #: A wake-up sent by a write (kept: a task nobody holds may vanish).
        self.waking: asyncio.Task[None] | None = None
        #: The client of the hub's waits and reads (not of ``wake()``, which
        #: others call while the hub waits).
        self.client = store._connection_of_its_own()

    async def wake(self) -> None:
        redis = self.store.redis
        async with self.store._errors(), redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.pexpire(self.key, 60_000)
            await pipe.execute()

    async def aclose(self) -> None:
        self.store._hubs.discard(self)
        try:
            async with self.store._errors():
                await self.store.redis.delete(self.key)
        finally:
            if self.client is not self.store.redis:
                await self.client.aclose()  # its connection back to the pool


class RedisStore(StreamStore):
    """Streams kept in Redis Streams, shared by every process using the same Redis.

    ``redis`` is a URL (the store then owns its client and closes it) or a
    ``redis.asyncio.Redis`` client you manage (give it a ``socket_timeout``
    longer than ``poll_interval``: readers block that long in ``XREAD``).
    Keys start with ``prefix``; ``max_len`` events are kept per stream and a
    stream is deleted ``ttl`` seconds after it ends.

    Appends are group-committed (see the module doc): ``append_window`` is how
    long the first queued append waits for others before the call goes out.
    The default, ``0``, sends at once whatever is queued when the previous
    call returns, which batches by itself under load and adds no delay when idle.
    ``append_interval`` is the least time from one call going out to the next
    (a full batch goes at once): the faster Redis answers, the more calls the
    default makes, each costing the client ~100 us of CPU whatever it carries,
    so an interval of a few milliseconds trades that much added latency (under
    load only: after an idle interval an append goes at once) for fewer, fuller
    calls (1 000 streams x 20 tokens/s relayed: ~8 % less CPU per token with
    2 ms, p50 +0.5 ms; ~11 % with 5 ms, p50 +4 ms).

    ``read()`` on the store itself blocks in ``XREAD`` on a connection of its
    own, and a store made from a URL opens at most ``max_connections``: fine for
    a few readers. Serve many through a ``Hub``, which needs a handful of
    connections whatever the number of readers.
    """

    #: Most appends one write carries (the Lua call blocks Redis while it runs).
    append_batch: ClassVar[int] = 512

    def __init__(
        self,
        redis: Redis | RedisCluster | str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "ssegate:",
        max_len: int = 10_000,
        ttl: float = 3600.0,
        poll_interval: float = 1.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        append_window: float = 0.0,
        append_interval: float = 0.0,
    ) -> None:
        super().__init__(max_len=max_len, ttl=ttl, poll_interval=poll_interval)
        self._commit: GroupCommit[asyncio.Future[str]] = GroupCommit(
            window=append_window, max_events=self.append_batch, interval=append_interval
        )
        # Who writes: the writer task, or an appender writing its own append
        # when the store was idle (resolved when it is done). Never both.
        self._flusher: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        self._due: asyncio.Future[None] | None = None
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must be a str without braces, not {prefix!r}")
        self.prefix = prefix
        self.redis: Redis | RedisCluster
        dedicated = False
        if isinstance(redis, str) and redis.startswith(CLUSTER_SCHEMES):
            # Any one node's address: the client learns the others from it.
            self.redis = RedisCluster.from_url(
                redis.replace("+cluster://", "://", 1),
                max_connections=4 * max_connections,  # per node, and it fails beyond
                socket_timeout=poll_interval + 10.0,
                socket_connect_timeout=5.0,
                retry=Retry(NoBackoff(), 0),
            )
            _look_before_use(self.redis)
            self._owns = True
        elif isinstance(redis, str):
            if not redis.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(
                    f"not a Redis URL: {redis!r} (try redis://host:6379/0, or "
                    "redis+cluster://host:7000 for Redis Cluster)"
                )
            pool = BlockingConnectionPool.from_url(
                redis,
                max_connections=max_connections,
                timeout=10,
                socket_timeout=poll_interval + 10.0,
                socket_connect_timeout=5.0,
                retry=Retry(NoBackoff(), 0),
                **_CHECKED_ON_CHECKOUT,
            )
            self.redis = Redis(connection_pool=pool)
            self._owns = True
            dedicated = True
        elif isinstance(redis, Redis):
            if redis.connection_pool.connection_kwargs.get("decode_responses"):
                raise ValueError("give RedisStore a client without decode_responses=True")
            self.redis = redis
            self._owns = False
        elif isinstance(redis, RedisCluster):
            if redis.get_encoder().decode_responses:
                raise ValueError("give RedisStore a client without decode_responses=True")
            self.redis = redis
            self._owns = False
        else:
            raise TypeError(
                f"redis must be a URL or a redis.asyncio.Redis (or RedisCluster), not {redis!r}"
            )
        #: Redis Cluster: every script names one stream's keys (one hash slot),
        #: a write of many streams is a call per slot, and the client announces.
        self.cluster = isinstance(self.redis, RedisCluster)
        #: Whether the writer and each hub hold a connection of their own (see
        #: ``_connection_of_its_own``).
        self._dedicated = dedicated
        #: The client of the appends' calls.
        self._writer = self._connection_of_its_own()
        # How many per-slot calls one write or read sends at once.
        self._fan_out = asyncio.Semaphore(max(max_connections // 2, 1))
        self._announcing: set[asyncio.Task[None]] = set()
        self._append_script = self.redis.register_script(_APPEND_MANY)
        self._create_script = self.redis.register_script(_CREATE)
        self._end_script = self.redis.register_script(_END)
        self._lease_script = self.redis.register_script(_LEASE)
        self._lease_many_script = self.redis.register_script(_LEASE_MANY)
        self._expire_script = self.redis.register_script(_EXPIRE)
        self._read_script = self.redis.register_script(_READ)
        self._info_script = self.redis.register_script(_INFO)
        self._page_script = self.redis.register_script(_PAGE)
        self._announce_script = self.redis.register_script(_ANNOUNCE)
        # A stream's own calls (lease, end, a reader's first reads), pipelined
        # per loop turn; on Redis Cluster each goes to its node alone.
        self._pipelined = None if self.cluster else ScriptCalls(self.redis)  # type: ignore[arg-type]
        if self._pipelined is not None:
            # A hub's history reads of one loop turn go out as one pipeline on one
            # connection: a burst of joins need not queue four at a time (1 000
            # streams starting within a second waited ~2 s for their first token).
            self.concurrent_reads = PIPELINED_READS
        self._ttl_ms = max(int(self.ttl * 1000), 1)
        # No stream's key looks like it: theirs end in "}:log" or "}:meta". On
        # Redis Cluster its braces pin it (and the hubs' wake-up keys) to one slot.
        self._notify = f"{prefix}{{notify}}" if self.cluster else f"{prefix}notify"
        self._notify_key = self._notify.encode()
        self._prefix = prefix.encode()
        #: The hubs on this store: each write hands them what it stored.
        self._hubs: set[_RedisWaker] = set()
        self._id = uuid.uuid4().hex.encode()
        # Appends are announced on a notification stream of the store's own,
        # which its hubs do not block on (they are handed what it wrote: each
        # write woke them for nothing, a round trip and a parse per write), listed
        # in the writers' set that the hubs read (see announce_writes). Same slot.
        self._writers_key = self._notify_key + b":writers"
        self._own_notify_key = self._notify_key + b":w:" + self._id
        self._announce_keys = [self._own_notify_key, self._writers_key, self._notify_key]

    def __repr__(self) -> str:
        return f"<RedisStore prefix={self.prefix!r} {self.redis!r}>"

    def _connection_of_its_own(self) -> Redis | RedisCluster:
        """A client holding one of the pool's connections, for a task whose calls
        follow one another (the writer's appends, a hub's waits and reads); else
        the store's client.

        A call through the pool costs the client about 50 us more (taking a
        connection and giving it back: a condition, a timeout, redis-py's
        bookkeeping), as much as the call itself; the writer makes one per write
        and a hub one or two per wait. A connection held is not looked at by the
        pool before each use: ``_held`` looks (one Redis closed while it sat
        idle is opened again, not failing the call it is used for). Only with
        the pool the store made (and where redis-py's single-connection client
        shows its connection): a caller's pool lends no connection for good.
        """
        if not self._dedicated:
            return self.redis
        assert isinstance(self.redis, Redis)
        client = self.redis.client()
        if not hasattr(client, "connection"):  # pragma: no cover - not redis-py 5 to 8
            return self.redis
        return client

    async def _held(self, client: Redis | RedisCluster) -> Redis | RedisCluster:
        """``client``, its connection looked at first if it holds one (see above)."""
        if client is not self.redis and (connection := client.connection) is not None:  # type: ignore[union-attr]
            with contextlib.suppress(Exception):  # not as expected: used as it is
                await _look_at(connection)
        return client

    async def aclose(self) -> None:
        """Write the appends still queued (each awaiter gets its outcome), then close."""
        try:
            await self._write_and_wait()
        finally:
            if self._writer is not self.redis:
                await self._writer.aclose()  # its connection back to the pool
        if self._owns:
            if isinstance(self.redis, RedisCluster):
                await self.redis.aclose()
            else:
                await self.redis.aclose(close_connection_pool=True)

    async def _write_and_wait(self) -> None:
        """What ``aclose`` waits for: the queued appends written, the calls sent."""
        if self._pipelined is not None:
            await self._pipelined.aclose()
        self._commit.drain()
        self._wake_flusher()
        # Shielded: cancelling aclose() must not cancel the others' writes.
        while True:
            if self._writing is not None:
                await asyncio.shield(self._writing)  # then it hands over to the writer task
            elif self._flusher is not None and not self._flusher.done():
                await asyncio.shield(self._flusher)
            else:
                break
        if self._announcing:  # the notifications of what was written
            await asyncio.gather(*self._announcing, return_exceptions=True)

    # -- helpers ----------------------------------------------------------

    def _keys(self, stream: str) -> list[str]:
        base = f"{self.prefix}{{{stream}}}"
        return [base + ":log", base + ":meta"]

    def _script_keys(self, stream: str) -> list[str]:
        """The keys of a script about one stream: its log and meta, then the notifications
        (not on Redis Cluster: see ``_announce_many``)."""
        if self.cluster:
            return self._keys(stream)
        return [*self._keys(stream), self._notify]

    def _many_keys(self, streams: Sequence[str]) -> list[bytes]:
        """The keys of a script about many streams: log and meta of each, then notify
        (not on Redis Cluster, where the streams share a slot the notifications may not).

        Bytes, for calls naming hundreds of streams: redis-py packs bytes without its
        per-value type checks, most of the client's cost for such a call.
        """
        base = self.prefix.encode()
        keys: list[bytes] = []
        for stream in streams:
            key = b"%s{%s}" % (base, stream.encode())
            keys += (key + b":log", key + b":meta")
        if not self.cluster:
            keys.append(self._notify.encode())
        return keys

    def _slot(self, stream: str) -> int:
        """The Redis Cluster hash slot of a stream's keys (its name is their hash tag)."""
        return key_slot(b"%s{%s}:log" % (self.prefix.encode(), stream.encode()))

    def _by_slot(self, streams: Iterable[str]) -> list[list[str]]:
        """``streams`` grouped by hash slot (one group, all of them, off Redis Cluster)."""
        if not self.cluster:
            return [list(streams)]
        groups: dict[int, list[str]] = {}
        for stream in streams:
            groups.setdefault(self._slot(stream), []).append(stream)
        return list(groups.values())

    async def _call_each(
        self, script: AsyncScript, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """Each (keys, args) call of ``script``, side by side: its reply or its exception."""

        async def call(keys: Sequence[Any], args: Sequence[Any]) -> Any:
            async with self._fan_out:
                try:
                    return await script(keys=keys, args=args)
                except Exception as exc:
                    return exc

        return list(await asyncio.gather(*(call(keys, args) for keys, args in calls)))

    def _announce_soon(self, advanced: Sequence[tuple[str, int]], writer: bytes) -> None:
        """``_announce_many`` in a task of its own: the write's caller does not wait
        for a second round trip (to another master). Failing, the sweep finds them."""
        if not advanced:
            return
        task = asyncio.get_running_loop().create_task(self._announce_many(advanced, writer))
        self._announcing.add(task)
        task.add_done_callback(self._announced)

    def _announced(self, task: asyncio.Task[None]) -> None:
        self._announcing.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: StoreUnavailable leaves it to the sweep

    async def _announce_many(self, advanced: Sequence[tuple[str, int]], writer: bytes) -> None:
        """Redis Cluster: tell the hubs which streams advanced, after the writes.

        (Elsewhere each script announces its own writes, in the same step.) A
        process gone between a write and its notification delays what it wrote
        until the hubs' next sweep, as a trimmed notification does.
        """
        if not advanced:
            return
        parts = [writer]
        for stream, number in advanced:
            parts += (stream.encode(), b"%d" % number)
        text = b" ".join(parts)
        if writer == self._id:  # appends: on the store's own stream (see announce_writes)
            async with self._errors():
                await self._announce_script(keys=self._announce_keys, args=[self._ttl_ms, text])
            return
        async with self._errors(), self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self._notify, {"s": text}, maxlen=NOTIFY_LEN, approximate=True)
            pipe.pexpire(self._notify, self._ttl_ms)
            await pipe.execute()

    @asynccontextmanager
    async def _errors(self, stream: str | None = None) -> AsyncIterator[None]:
        """Translate redis-py's errors into ssegate's, at the edge."""
        try:
            yield
        except RedisResponseError as exc:
            raise _refused(stream, str(exc)) from None
        except RedisError as exc:
            if isinstance(exc, RedisConnectionError):
                await self._forget_idle_connections()
            raise _unreachable(exc) from exc

    async def _forget_idle_connections(self) -> None:
        """Redis went away: the pool's idle connections are all to the server
        that went (a restarted one never saw them). Closed now, each reconnects
        on its next use, instead of failing one request each after Redis is back."""
        pool = getattr(self.redis, "connection_pool", None)  # RedisCluster: per node
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.disconnect(inuse_connections=False)

    @staticmethod
    def _values(event: Event) -> tuple[bytes, bytes, bytes]:
        """An event as the append script takes it: data, type ("" for message), retry."""
        try:
            return (
                event.data.encode(),
                b"" if event.event == "message" else event.event.encode(),
                b"" if event.retry is None else str(event.retry).encode(),
            )
        except UnicodeEncodeError:
            raise ValueError(
                "event data and type must be valid Unicode (no lone surrogates)"
            ) from None

    @staticmethod
    def _entries(
        entries: Sequence[tuple[bytes, Mapping[bytes, bytes]]],
    ) -> tuple[int, list[Event], str | None, str]:
        """(first number, events, outcome, epoch) of XRANGE/XREAD entries (not empty)."""
        events: list[Event] = []
        outcome = None
        number, _, epoch_part = entries[0][0].partition(b"-")
        first = int(number)
        # One stream, one epoch: read it from the first entry id.
        epoch = _epoch(epoch_part)
        prefix = epoch + "-"
        new = tuple.__new__
        for entry_id, fields in entries:
            end = fields.get(b"end")
            if end is not None:
                outcome = end.decode()
                break
            event = fields.get(b"e")
            retry = fields.get(b"r")
            # Built like the decoder builds them: every field was validated by
            # Event() before it was appended.
            events.append(
                new(
                    Event,
                    (
                        fields[b"d"].decode(),
                        "message" if event is None else event.decode(),
                        prefix + entry_id[: entry_id.index(b"-")].decode().zfill(ID_WIDTH),
                        None if retry is None else int(retry),
                    ),
                )
            )
        return first, events, outcome, epoch

    # -- primitives -------------------------------------------------------

    def appender(self, stream: str) -> Appender:
        return _BehindAppender(self, check_stream_name(stream))

    async def _append(self, stream: str, event: Event) -> str:
        if not self._idle():
            waiter = self._queue(stream, event)
        else:  # nobody writes, so nothing else is queued
            loop = asyncio.get_running_loop()
            waiter = self._enqueue(stream, event, loop)
            if self._commit.due(loop.time()) == 0:
                # No window to wait for: write it from this task, as one call,
                # sparing the hand-off to a writer task (one writer's case).
                return await self._write_here(self._commit.take(loop.time()), waiter)
            self._flusher = loop.create_task(self._flush())
        try:
            return await waiter
        except asyncio.CancelledError:
            # Still queued: take it back, it is not written. Already sent: it
            # is written with the rest of its call, this appender just leaves.
            self._commit.discard(waiter)
            raise

    def _call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any] = ()) -> Any:
        """``script``'s call for one stream (pipelined with the others of this loop turn)."""
        if self._pipelined is None:
            return script(keys=keys, args=args)
        return self._pipelined(script, keys, args)

    def _idle(self) -> bool:
        """Nobody writes: neither the writer task nor an appender its own append."""
        return self._writing is None and (self._flusher is None or self._flusher.done())

    def _enqueue(
        self, stream: str, event: Event, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[str]:
        """Queue ``event``'s append; resolved with its id once written."""
        waiter: asyncio.Future[str] = loop.create_future()
        self._commit.add(waiter, stream, encode_append(*self._values(event)), loop.time(), event)
        return waiter

    def _queue(self, stream: str, event: Event) -> asyncio.Future[str]:
        """Queue ``event``'s append for the writer task (started if need be)."""
        loop = asyncio.get_running_loop()
        waiter = self._enqueue(stream, event, loop)
        self._queued(loop)
        return waiter

    def _queued(self, loop: asyncio.AbstractEventLoop) -> None:
        """An append was queued: start the writer task, or wake it if a window waits."""
        if self._writing is None and (self._flusher is None or self._flusher.done()):  # _idle()
            self._flusher = loop.create_task(self._flush())
        elif self._due is not None and self._commit.due(loop.time()) == 0:
            self._wake_flusher()

    def _queue_checked(
        self, stream: str, event: Event, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Future[str]:
        """``_queue(stream, check_event(event))``, once per token (an appender's add;
        ``loop``: the running loop, if the caller knows it).

        The usual event (an ``Event`` without id or retry, ASCII text: nothing
        to check) in one frame instead of six: ``check_event``'s, ``_values``'s
        and ``_enqueue``'s work inlined, the wire as ``encode_append`` makes it.
        """
        if type(event) is not Event:
            return self._queue(stream, check_event(event))
        data, kind, event_id, retry = event
        if event_id is not None or retry is not None or not (data.isascii() and kind.isascii()):
            return self._queue(stream, check_event(event))
        if loop is None:
            loop = asyncio.get_running_loop()
        waiter: asyncio.Future[str] = loop.create_future()
        body = data.encode()
        tail = _TAILS.get(kind)  # encode_append(body, kind.encode())'s, after the data
        if tail is None:
            tail = _tail(kind)
        self._commit.add(waiter, stream, _length(len(body)) + body + tail, loop.time(), event)
        self._queued(loop)
        return waiter

    async def _write_here(
        self, batch: Batch[asyncio.Future[str]], waiter: asyncio.Future[str]
    ) -> str:
        """Write ``batch`` (this appender's own append) from the appender's task.

        What is queued meanwhile goes to the writer task once this call is done
        (one call in flight at a time). Cancelled mid-call, the append may or
        may not be written, as any single Redis call; nobody else's is affected.
        """
        loop = asyncio.get_running_loop()
        self._writing = writing = loop.create_future()
        try:
            await self._write(batch)
        finally:
            self._writing = None
            writing.set_result(None)
            if len(self._commit) and (self._flusher is None or self._flusher.done()):
                self._flusher = loop.create_task(self._flush())
        return waiter.result()

    def _wake_flusher(self) -> None:
        if self._due is not None and not self._due.done():
            self._due.set_result(None)

    async def _flush(self) -> None:
        """Write batches until the queue is empty (one task at a time, one call in flight)."""
        loop = asyncio.get_running_loop()
        commit = self._commit
        batch: Batch[asyncio.Future[str]] | None = None
        try:
            while (delay := commit.due(loop.time())) is not None:
                if delay > 0:
                    self._due = due = loop.create_future()
                    timer = loop.call_later(delay, _resolve, due)
                    try:
                        await due
                    finally:
                        timer.cancel()
                        self._due = None
                    continue
                batch = commit.take(loop.time())
                await self._write(batch)
                batch = None
        except BaseException:
            # Cancelled (the event loop is shutting down): nobody may wait forever.
            lost = [] if batch is None else list(batch.waiters())
            while len(commit):
                lost += commit.take().waiters()
            for waiter in lost:
                if not waiter.done():
                    waiter.set_exception(
                        StoreUnavailable("the store's writer was stopped before the append's reply")
                    )
            _failures_seen(lost)
            raise
        finally:
            self._flusher = None

    async def _write(self, batch: Batch[asyncio.Future[str]]) -> None:
        """One Lua call for the batch, of six arguments whatever its size (the
        batch is one of them); on Redis Cluster one per hash slot, naming its
        streams' keys. Each waiter gets its own id or error."""
        parts = [batch] if not self.cluster else self._split(batch)
        calls: list[tuple[list[bytes], list[Any]]] = [
            (
                self._many_keys(part.streams) if self.cluster else self._announce_keys,
                [
                    self._ttl_ms,
                    self.max_len,
                    self._id,
                    _epoch_bytes(),
                    self._prefix,
                    part.blob(),
                ],
            )
            for part in parts
        ]
        try:
            if len(calls) == 1:
                try:
                    replies: list[Any] = [await self._call_held(*calls[0])]
                except Exception as exc:  # settled below, each waiter its own
                    replies = [exc]
            else:
                replies = await self._call_each(self._append_script, calls)
        except asyncio.CancelledError:  # the appender writing its own, mid-call
            self._read_back(batch.streams)
            raise
        advanced: list[tuple[str, int]] = []
        for part, reply in zip(parts, replies, strict=True):
            advanced += self._settle(part, reply)
        if any(isinstance(reply, RedisConnectionError) for reply in replies):
            await self._forget_idle_connections()
        if self.cluster and advanced:
            self._announce_soon(advanced, self._id)

    async def _call_held(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The append script's call on the writer's connection (see ``_connection_of_its_own``).

        Sent and read on the connection itself (redis-py's sending and reading,
        packed by hiredis as redis-py's synchronous client packs: its asyncio
        connection packs in Python, ~70 bytecodes per argument): the client's
        way round each command (its lock, retry wrapper, event dispatch, timing,
        parsing options and more) cost as much client CPU as the rest of the
        call, and the writer's connection is used by one call at a time, its own.
        A connection not made yet (the first call), a script Redis does not
        know (it restarted) or a stand-in for the script (tests count calls
        with one) take the client's way.
        """
        client = await self._held(self._writer)
        connection = client.connection if client is not self.redis else None  # type: ignore[union-attr]
        script = self._append_script
        if connection is None or not connection.is_connected or type(script) is not AsyncScript:
            return await script(keys=keys, args=args, client=client)
        try:
            # Errors as the client's way: a connection that fails or times out is
            # closed by redis-py (and opened again by the next call).
            packed = pack_commands(connection, [("EVALSHA", script.sha, len(keys), *keys, *args)])
            timeout = connection.socket_timeout
            if timeout and sum(map(len, packed)) <= _UNBLOCKED_WRITE:
                # Sent without redis-py's write timeout, which runs the send in a
                # task of its own (asyncio.wait_for) every call: the previous
                # call's reply being in, Redis has read all that was sent before,
                # so a command this small goes to the socket at once, and the
                # read that follows keeps its timeout.
                connection.socket_timeout = None
                try:
                    await connection.send_packed_command(packed)
                finally:
                    connection.socket_timeout = timeout
            else:
                await connection.send_packed_command(packed)
            return await connection.read_response()
        except NoScriptError:  # loaded, then called again
            script.sha = await client.script_load(script.script)
            return await script(keys=keys, args=args, client=client)

    def _split(self, batch: Batch[asyncio.Future[str]]) -> list[Batch[asyncio.Future[str]]]:
        """A batch's runs grouped by hash slot (Redis Cluster), each group a batch."""
        groups: dict[int, list[StreamRun[asyncio.Future[str]]]] = {}
        for run in batch.runs:
            groups.setdefault(self._slot(run.stream), []).append(run)
        return [Batch(runs, sum(len(r.entries) for r in runs)) for runs in groups.values()]

    def _settle(self, batch: Batch[asyncio.Future[str]], reply: Any) -> list[tuple[str, int]]:
        """Each waiter's outcome from the write's reply (or its RedisError), the
        hubs handed what it stored; what advanced (or ended), with its new last number."""
        outcomes: list[str | BaseException]  # in the order of batch.waiters()
        written: Sequence[Any] = ()  # the reply, once checked
        if isinstance(reply, RedisResponseError):  # the whole call was refused: nothing ran
            message = str(reply)
            outcomes = [_refused(r.stream, message) for r in batch.runs for _ in r.entries]
        elif isinstance(reply, RedisError):
            outcomes = [_unreachable(reply) for _ in batch.waiters()]
            self._read_back(batch.streams)
        elif isinstance(reply, Exception):  # not Redis's doing
            text = f"the append failed: {reply!r}"
            outcomes = [_unavailable(text, reply) for _ in batch.waiters()]
            self._read_back(batch.streams)
        else:
            try:
                outcomes = batch.outcomes(reply, _refused)
                written = reply
            except (
                Exception
            ) as exc:  # not Redis's doing (an unexpected reply): still each one's own
                text = f"the append failed: {exc!r}"
                outcomes = [_unavailable(text, exc) for _ in batch.waiters()]
                self._read_back(batch.streams)
        waiters = batch.waiters()
        resolve(waiters, outcomes)  # an appender cancelled meanwhile gets nothing
        if not written or batch.failed:
            _failures_seen(waiters)
        if not written:
            return []
        if self._hubs:
            self._hand_over(batch, written)
        if not self.cluster:
            return []  # the script announced them
        advanced = []
        for run, first, state in zip(batch.runs, written[0::2], written[1::2], strict=True):
            if run.ids:  # those written (see Batch.outcomes)
                advanced.append((run.stream, first + len(run.ids) - 1))
            elif bytes(state[2]).startswith(b"SSEGATE_ENDED"):  # maybe just now (lease ran out)
                advanced.append((run.stream, _ANY))
        return advanced

    def _hand_over(self, batch: Batch[asyncio.Future[str]], reply: Sequence[Any]) -> None:
        """Give this process's hubs what the write stored (checked by ``outcomes()``).

        Their subscribers get it now, without the round trips of a read.
        """
        hubs = [(waker, waker.deliver) for waker in self._hubs if waker.deliver is not None]
        if not hubs:
            return
        # The usual: the process's one hub, which takes a lone event without its
        # page being made (``deliver_event``, as MemoryStore hands it over).
        lone = hubs[0][0].deliver_event if len(hubs) == 1 else None
        new = tuple.__new__
        for run, first in zip(batch.runs, reply[0::2], strict=True):
            if not (ids := run.ids):
                continue
            # The appended events, with the ids outcomes() made for their appenders
            # (an Event is the tuple (data, event, id, retry)).
            if len(ids) == 1:
                data, kind, _, retry = run.entries[0][3]
                event = new(Event, (data, kind, ids[0], retry))
                if lone is not None and lone(run.stream, first, event, ids[0][:EPOCH_WIDTH]):
                    continue
                events = [event]
            else:
                events = [
                    new(Event, (event[0], event[1], id_, event[3]))
                    for event, id_ in zip(run.items, ids, strict=False)  # the written ones
                ]
            page = new(Page, (first, events, None, 0, True, ids[0][:EPOCH_WIDTH]))
            self._deliver_each(run.stream, page, hubs)

    def _deliver_each(
        self,
        stream: str,
        page: Page,
        hubs: Sequence[tuple[_RedisWaker, Callable[[str, Page], bool]]] | None = None,
    ) -> None:
        """Hand ``page``, just written, to each hub (``hubs``: those with a ``deliver``)."""
        if hubs is None:
            hubs = [(waker, waker.deliver) for waker in self._hubs if waker.deliver is not None]
        for waker, deliver in hubs:
            if not deliver(stream, page) and stream not in waker.pending:
                # Its hub is behind on the stream (and is not woken by this
                # write's notification): it reads it at once.
                waker.pending.add(stream)
                self._wake_soon(waker)

    def _read_back(self, streams: Iterable[str]) -> None:
        """A write without its reply may be stored: the hubs read its streams themselves."""
        streams = list(streams)
        for waker in self._hubs:
            waker.pending.update(streams)
            self._wake_soon(waker)

    def _wake_soon(self, waker: _RedisWaker) -> None:
        """Interrupt the hub's wait (from a write, which cannot wait for it)."""
        if waker.waking is None or waker.waking.done():
            waker.waking = asyncio.get_running_loop().create_task(_wake(waker))

    async def _create(self, stream: str) -> None:
        async with self._errors(stream):
            await self._create_script(keys=self._script_keys(stream), args=[_epoch_arg()])

    async def _end(self, stream: str, outcome: str) -> None:
        """End ``stream``, announced as this store's write: its hubs are handed the
        end (a page of no events and the outcome) and not woken to read it."""
        keys = self._keys(stream) if self.cluster else [*self._keys(stream), *self._announce_keys]
        try:
            async with self._errors(stream):
                reply = await self._call(self._end_script, keys, (self._ttl_ms, outcome, self._id))
        except StoreUnavailable:  # maybe ended, the reply lost: its hubs read it themselves
            self._read_back([stream])
            raise
        except asyncio.CancelledError:
            self._read_back([stream])
            raise
        except StreamEnded:
            if self.cluster:  # maybe just now, its lease having run out
                self._announce_soon([(stream, _ANY)], b"-")
            raise
        number, epoch_part = int(reply[0]), reply[1]
        if self.cluster:
            self._announce_soon([(stream, number)], self._id)
        if self._hubs:
            self._deliver_each(stream, Page(number, [], outcome, 0, True, _epoch(epoch_part)))

    async def _info(self, stream: str) -> StreamInfo:
        async with self._errors(stream):
            reply = await self._call(self._info_script, self._keys(stream))
        if not reply:
            return StreamInfo(exists=False)
        last, outcome, epoch_part, length, head = reply
        if outcome:
            length -= 1  # the end marker
        epoch = _epoch(epoch_part)
        return StreamInfo(
            exists=True,
            ended=bool(outcome),
            outcome=outcome.decode() or None,
            first_id=format_id(epoch, int(head.partition(b"-")[0])) if head else None,
            last_id=format_id(epoch, int(last)) if int(last) else None,
            length=length,
            epoch=epoch,
        )

    async def _page(self, stream: str, after: int, limit: int) -> Page:
        async with self._errors(stream):
            reply = await self._call(self._page_script, self._keys(stream), (after + 1, limit))
        if not reply:
            return Page(after + 1, [], None, 0, False)
        last, outcome, epoch_part, first_part, end = reply[:5]
        epoch = _epoch(epoch_part)
        if not first_part:
            # Nothing after ``after``: if the stream has ended, the reader is at
            # (or after) its end, which is number last + 1.
            if outcome:
                return Page(int(last) + 1, [], outcome.decode(), int(last), True, epoch)
            return Page(after + 1, [], None, int(last), True, epoch)
        first = int(first_part)
        values = zip(reply[5::3], reply[6::3], reply[7::3], strict=True)
        return Page(
            first, _events(epoch, first, values), end.decode() or None, int(last), True, epoch
        )

    async def _wait(
        self, cursors: Mapping[str, int], max_wait: float, waker: Waker | None
    ) -> dict[str, Page]:
        if waker is not None:
            assert isinstance(waker, _RedisWaker)
            return await self._hub_wait(cursors, max_wait, waker)
        # A reader of its own: block on its stream's log.
        names: dict[bytes, str] = {}
        after: dict[bytes | str, bytes | str] = {}
        for stream, cursor in cursors.items():
            key = self._keys(stream)[0].encode()
            names[key] = stream
            after[key] = b"%d%s" % (cursor, _AFTER)
        async with self._errors():
            reply: Any = await self.redis.xread(
                after,  # type: ignore[arg-type]
                count=self.batch,
                block=max(int(max_wait * 1000), 1),
            )
        pages: dict[str, Page] = {}
        for key, entries in _streams(reply):
            if entries:
                first, events, outcome, epoch = self._entries(entries)
                pages[names[key]] = Page(first, events, outcome, epoch=epoch)
        return pages

    async def _hub_wait(
        self, cursors: Mapping[str, int], max_wait: float, waker: _RedisWaker
    ) -> dict[str, Page]:
        """A hub's wait: on the notification streams, then a read of what advanced.

        Every write announces the logs it advanced on a notification stream:
        appends and ends on their store's own (``<prefix>notify:w:<id>``),
        leases run out on the shared one (``<prefix>notify``). A hub following
        thousands of streams blocks on a few keys: the shared stream, the other
        writers' (as the writers' set lists them: ``_list_writers``) and its
        wake-up key, and then reads only the streams that advanced past its
        cursors, in one call (``_READ``): Redis never blocks a client on every
        followed key, nor replies with one stream at a time. What this process
        wrote the hub has mostly taken already (see ``_hand_over``): it is not
        read back, and its announcements do not wake the hub.

        Streams the previous wait did not follow are read directly (their
        notifications may have gone by before they were followed), and so,
        every ``poll_interval``, after an error and when a writer is newly
        listed, is every stream (the sweep: what a notification trimmed off
        before the hub read it announced, or a writer's before the hub blocked
        on its stream, is found).
        """
        try:
            return await self._hub_read(cursors, max_wait, waker)
        except StoreUnavailable:
            waker.next_sweep = 0.0  # back: read everything once
            raise

    async def _hub_read(
        self, cursors: Mapping[str, int], max_wait: float, waker: _RedisWaker
    ) -> dict[str, Page]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        sweep = now >= waker.next_sweep
        if (sweep or waker.relist or waker.positions is None) and await self._list_writers(waker):
            sweep = True
        if sweep:
            waker.next_sweep = now + self.poll_interval
            direct: set[str] = set(cursors)
        else:
            direct = {s for s in cursors if s not in waker.known}
            waker.pending = {s for s in waker.pending if s in cursors}  # the rest left
            direct |= waker.pending
        waker.known = set(cursors)
        if not direct:
            positions = waker.positions
            assert positions is not None
            streams = dict(positions)
            streams[waker.key] = waker.last_id
            async with self._errors():
                client = await self._held(waker.client)
                reply: Any = await client.xread(
                    streams,  # type: ignore[arg-type]
                    count=NOTIFY_BATCH,
                    block=max(int(max_wait * 1000), 1),
                )
            for key, entries in _streams(reply):
                if not entries:
                    continue
                if key not in positions:  # the wake-up key
                    waker.last_id = entries[-1][0]
                    continue
                positions[key] = entries[-1][0]
                for _, fields in entries:
                    if b"w" in fields:  # a writer newly listed: block on its stream too
                        waker.relist = True
                    announced = fields[b"s"].split()
                    for i in range(1, len(announced), 2):
                        stream = announced[i].decode()
                        cursor = cursors.get(stream)
                        if cursor is not None and cursor < int(announced[i + 1]):
                            direct.add(stream)
            if not direct:
                return {}
        return await self._read_many(cursors, direct, waker)

    async def _list_writers(self, waker: _RedisWaker) -> bool:
        """Block on the notification streams of the writers the set lists (but
        this store's own) from now on; whether any is new (then sweep: what it
        announced before the hub was positioned on it was not seen).

        Positioned first, then read directly: whatever is written afterwards is
        announced after the position. The shared stream is positioned before
        the set is read, so a writer listed after the read has its marker after
        the position (announce_writes lists it and puts the marker in one step).
        """
        waker.relist = False
        first = waker.positions is None
        async with self._errors(), self.redis.pipeline(transaction=False) as pipe:
            if first:
                pipe.xrevrange(self._notify, count=1)
            pipe.zrange(self._writers_key, 0, -1)
            replies: list[Any] = await pipe.execute()
        positions = waker.positions
        if positions is None:
            newest = replies[0]
            positions = {self._notify_key: newest[0][0] if newest else b"0-0"}
        listed = set(replies[-1])
        listed.discard(self._own_notify_key)
        for key in [key for key in positions if key not in listed and key != self._notify_key]:
            del positions[key]  # idle for ttl: it expired (listed again when it writes)
        new = [key for key in listed if key not in positions]
        if new:
            async with self._errors(), self.redis.pipeline(transaction=False) as pipe:
                for key in new:
                    pipe.xrevrange(key, count=1)
                for key, newest in zip(new, await pipe.execute(), strict=True):
                    positions[key] = newest[0][0] if newest else b"0-0"
        waker.positions = positions
        return bool(new)

    async def _read_many(
        self, cursors: Mapping[str, int], streams: Iterable[str], waker: _RedisWaker
    ) -> dict[str, Page]:
        """What follows the cursors of ``streams``, in one call (``_READ``; one per
        hash slot on Redis Cluster), without waiting.

        Streams whose page was full go to ``waker.pending`` (more may follow).
        """
        names = list(streams)
        # Read now; what a write finds its hub behind on meanwhile stays pending.
        waker.pending.difference_update(names)
        groups = self._by_slot(names)
        calls = [self._read_call(group, cursors) for group in groups]
        async with self._errors():
            if len(calls) == 1:
                replies: list[Any] = [
                    await self._read_script(
                        keys=calls[0][0], args=calls[0][1], client=await self._held(waker.client)
                    )
                ]
            else:
                replies = await self._call_each(self._read_script, calls)
                for reply in replies:
                    if isinstance(reply, BaseException):
                        raise reply
        pages: dict[str, Page] = {}
        pending: set[str] = set()
        for group, reply in zip(groups, replies, strict=True):
            self._parse_read(group, reply, pages, pending)
        waker.pending |= pending
        return pages

    def _read_call(
        self, names: Sequence[str], cursors: Mapping[str, int]
    ) -> tuple[list[bytes], list[Any]]:
        """The keys and args of a ``_READ`` of ``names`` after their cursors."""
        base = self.prefix.encode()
        keys = [b"%s{%s}:log" % (base, stream.encode()) for stream in names]
        starts = b" ".join([b"%d" % (cursors[stream] + 1) for stream in names])
        return keys, [self.batch, starts]

    def _parse_read(
        self, names: Sequence[str], reply: Any, pages: dict[str, Page], pending: set[str]
    ) -> None:
        """A ``_READ`` reply's pages (into ``pages``; full ones' streams into ``pending``)."""
        i, size = 0, len(reply)
        while i < size:
            k, first_part, epoch_part, read, n, outcome = reply[i : i + 6]
            i += 6
            stream = names[k - 1]
            first = int(first_part)
            epoch = _epoch(epoch_part)
            end = i + 3 * n
            values = zip(
                reply[i:end:3], reply[i + 1 : end : 3], reply[i + 2 : end : 3], strict=True
            )
            i = end
            pages[stream] = Page(
                first, _events(epoch, first, values), outcome.decode() or None, epoch=epoch
            )
            if read >= self.batch:
                pending.add(stream)

    async def _lease(self, stream: str, ttl: float) -> None:
        try:
            async with self._errors(stream):
                await self._call(
                    self._lease_script,
                    self._script_keys(stream),
                    (self._ttl_ms, max(int(ttl * 1000), 1), _epoch_arg()),
                )
        except StreamEnded:
            if self.cluster:  # maybe just now, its lease having run out
                self._announce_soon([(stream, _ANY)], b"-")
            raise

    async def _renew_leases(self, streams: Sequence[str], ttl: float) -> list[str]:
        """One script call per ``LEASE_BATCH`` streams (per hash slot on Redis
        Cluster), sent side by side: a replica's every lease in one round trip."""
        groups: list[list[str]] = []
        for start in range(0, len(streams), LEASE_BATCH):
            groups += self._by_slot(streams[start : start + LEASE_BATCH])
        common: list[Any] = [self._ttl_ms, max(int(ttl * 1000), 1), _epoch_bytes(), self._prefix]
        calls: list[tuple[list[bytes] | list[str], list[Any]]] = [
            (
                self._many_keys(group) if self.cluster else [self._notify_key],
                [*common, " ".join(group).encode()],
            )
            for group in groups
        ]
        async with self._errors():
            if len(calls) == 1:
                replies: list[Any] = [
                    await self._lease_many_script(keys=calls[0][0], args=calls[0][1])
                ]
            else:
                replies = await self._call_each(self._lease_many_script, calls)
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
        ended = [group[k - 1] for group, reply in zip(groups, replies, strict=True) for k in reply]
        if self.cluster:  # maybe just now, their leases having run out
            self._announce_soon([(stream, _ANY) for stream in ended], b"-")
        return ended

    async def _expire_leases(self, streams: Sequence[str] | None) -> list[str]:
        async with self._errors():
            if streams is None:
                found = []
                pattern = f"{self.prefix}{{*}}:meta"
                async for key in self.redis.scan_iter(match=pattern, count=500):
                    name = key.decode()[len(self.prefix) + 1 : -len("}:meta")]
                    found.append(name)
                streams = found
            expired = []
            # One call per few hundred streams (per hash slot on Redis Cluster):
            # a hub checks every stream it follows once per poll_interval.
            for start in range(0, len(streams), 500):
                groups = self._by_slot(streams[start : start + 500])
                replies = await self._call_each(
                    self._expire_script, [(self._many_keys(g), [self._ttl_ms]) for g in groups]
                )
                for group, results in zip(groups, replies, strict=True):
                    if isinstance(results, BaseException):
                        raise results
                    expired += [s for s, ended in zip(group, results, strict=True) if ended]
        if self.cluster:
            self._announce_soon([(stream, _ANY) for stream in expired], b"-")
        return expired

    def _waker(self) -> Waker:
        waker = _RedisWaker(self)
        self._hubs.add(waker)
        return waker


class _BehindAppender(Appender):
    """Redis's appender: ``add()`` queues the append for the next group-committed
    write and returns; ``settle()`` waits only for what is more than ``behind``
    appends behind. A producer then costs no wake-up per token (its task is not
    resumed per write reply), and the store's order is the order of ``add()``:
    one write in flight at a time, a stream's appends in it in queue order."""

    __slots__ = ("_loop", "_unwritten")
    _store: RedisStore
    immediate = True  # queued at add(), written by the store's writer task

    def __init__(self, store: RedisStore, stream: str) -> None:
        super().__init__(store, stream)
        self._unwritten: deque[asyncio.Future[str]] = deque()
        # The producer's loop, looked up once: CPython 3.11's get_running_loop()
        # makes a getpid() system call each time, and add() is once per token.
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, event: Event) -> None:
        unwritten = self._unwritten
        while unwritten and unwritten[0].done():
            written = unwritten.popleft()
            if not written.cancelled() and written.exception() is not None:
                self._check(written)  # raises
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        unwritten.append(self._store._queue_checked(self._stream, event, loop))

    async def settle(self, behind: int = 0) -> None:
        unwritten = self._unwritten
        while unwritten:
            first = unwritten[0]
            if not first.done():
                if len(unwritten) <= behind:
                    return
                # Not ``await first``: cancelling the producer leaves the append
                # queued (written, in order, before whatever the stream gets next).
                await asyncio.wait((first,))
            self._check(unwritten.popleft())

    def _check(self, written: asyncio.Future[str]) -> None:
        if written.cancelled() or written.exception() is None:
            return
        # Failed: so do the rest (a stream ended or the store is gone); they are
        # seen to (no "exception never retrieved" warnings), and this one raises.
        for later in self._unwritten:
            later.add_done_callback(_seen)
        self._unwritten.clear()
        written.result()


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _failures_seen(waiters: Iterable[asyncio.Future[Any]]) -> None:
    """Mark the appends that failed as seen to. A failure reaches its producer
    through its appender (``add()`` and ``settle()`` check every reply they hold);
    one whose producer has gone (its generation stopped, its lease lost, while its
    appends were queued) has nobody left to tell, and asyncio would log each one
    as "never retrieved": thousands of lines when an overloaded gateway loses
    leases, at the worst time. An awaited one still raises."""
    for waiter in waiters:
        if waiter.done() and not waiter.cancelled():
            waiter.exception()


def _events(epoch: str, first: int, values: Iterable[tuple[bytes, bytes, bytes]]) -> list[Event]:
    """Events numbered from ``first``, from their stored values (data, type, retry; b"": none)."""
    prefix = epoch + "-"
    new = tuple.__new__
    # Built like the decoder builds them: every field was validated by Event()
    # before it was appended.
    return [
        new(
            Event,
            (
                data.decode(),
                event.decode() if event else "message",
                f"{prefix}{seq:0{ID_WIDTH}d}",
                int(retry) if retry else None,
            ),
        )
        for seq, (data, event, retry) in enumerate(values, first)
    ]


async def _wake(waker: _RedisWaker) -> None:
    # If Redis is away the hub's wait fails too, and sweeps once it is back.
    with contextlib.suppress(StoreUnavailable):
        await waker.wake()


def _streams(reply: Any) -> Iterable[tuple[bytes, Any]]:
    """(key, entries) of an ``XREAD`` reply: RESP2 replies [[key, entries], ...], RESP3 a dict."""
    if isinstance(reply, dict):
        return reply.items()
    return reply or ()


def _refused(stream: str | None, message: str) -> Exception:
    """The exception for an error reply (ours, ``SSEGATE_...``, or Redis's own)."""
    if message.startswith("SSEGATE_ENDED"):
        outcome = message.split(None, 1)[1] if " " in message else "?"
        return StreamEnded(f"stream {stream!r} has ended ({outcome})")
    if message.startswith("SSEGATE_NOTFOUND"):
        return StreamNotFound(f"no stream named {stream!r} (or it has expired)")
    return StoreUnavailable(f"Redis refused the command: {message}")


def _unreachable(exc: RedisError) -> StoreUnavailable:
    return _unavailable(f"Redis cannot be reached: {exc}", exc)


def _unavailable(message: str, cause: BaseException) -> StoreUnavailable:
    """A ``StoreUnavailable`` for one awaiter (each gets its own: tracebacks are per raise)."""
    error = StoreUnavailable(message)
    error.__cause__ = cause
    return error


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _epoch_arg() -> str:
    """A new epoch as the scripts store it: the decimal entry-id part."""
    return str(int(new_epoch(), 16))


def _epoch_bytes() -> bytes:
    return _epoch_arg().encode()


def _epoch(part: bytes) -> str:
    """The epoch of an entry id's second part (or of the meta hash)."""
    return f"{int(part):0{EPOCH_WIDTH}x}"
