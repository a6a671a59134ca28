"""Fleet mode's Redis layout and the scripts that change it atomically (pure: names and Lua text).

Every key starts with ``fleet.key_prefix`` (``bridge``). One Redis primary (with a replica and Sentinel,
or a managed service); Redis 7.0 commands only, so Valkey works too. A call id in a key is one the
bridge made (:func:`bridge.ids.is_call_id`), never one from a URL unchecked: ``<id>:lease`` would
name another key.

=================================  =====================================================================
``{p}:inst:{instance}``            HASH ``started``, ``calls``, ``draining``; expires ``lease_ttl`` after
                                   the instance's last heartbeat (every ``renew_interval``)
``{p}:call:{call}``                HASH ``owner``, ``epoch``, ``state`` (``live``/``ended``), ``provider``,
                                   ``call_sid``, ``actions_applied`` (the last action entry applied),
                                   ``actions_bytes`` / ``actions_applied_bytes`` (bytes of actions
                                   accepted / applied: the call's budget); expires ``ended_ttl`` after
                                   the call ends
``{p}:call:{call}:lease``          STRING the owner's token, ``PX lease_ttl``, renewed by the owner
``{p}:leases``                     ZSET call -> lease deadline (ms): where a sweeper finds lapsed owners
``{p}:call:{call}:in``             STREAM the bot's actions for the call, in the order accepted; an
                                   entry is deleted once its owner applied it, and at most a budget
                                   of bytes (and of entries) waits there (ROUTE)
                                   ... and the carrier's word on a transfer (an entry ``transfer``:
                                   the person answered, or nobody did), for the owner only (OUTCOME)
``{p}:call:{call}:idem:{key}``     STRING the answer given to an ``Idempotency-Key``
``{p}:call:{call}:out``            STREAM the call's events not yet delivered, IDs ``{sequence}-1`` (a
                                   write repeated after a reconnect is refused: nothing twice)
``{p}:dead``                       STREAM events given up (the webhook refused them, or too old)
``{p}:sid:{provider}:{call sid}``  STRING the bridge call id of a carrier call (a restarted stream names
                                   only the carrier's id)
``{p}:call:{call}:adopt``          STRING an instance taking a restarted call over: no sweeper ends it
                                   as ``instance_lost`` meanwhile
``{p}:desk:{provider}:{sid}``      STRING the markup a transferring call left for its carrier's next
                                   fetch (``/twilio/after-stream``), ``EX`` the desk's ttl, taken once
                                   (``GETDEL``) by whichever instance the fetch reaches
=================================  =====================================================================

**The epoch is the fencing token.** Taking a call (:data:`ACQUIRE`) increments ``epoch``; every later
write of the owner (:data:`RENEW`, :data:`MARK_APPLIED`, :data:`END`) names the epoch it holds and is
refused when the call's epoch has moved on: an owner that was paused or cut off while another instance
took the call over can never write after it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "bridge"

    def instance(self, instance_id: str) -> str:
        return f"{self.prefix}:inst:{instance_id}"

    def call(self, call_id: str) -> str:
        return f"{self.prefix}:call:{call_id}"

    def lease(self, call_id: str) -> str:
        return f"{self.prefix}:call:{call_id}:lease"

    @property
    def leases(self) -> str:
        return f"{self.prefix}:leases"

    def actions(self, call_id: str) -> str:
        return f"{self.prefix}:call:{call_id}:in"

    def carrier_call(self, carrier: str, call_sid: str) -> str:
        """The bridge call id of a carrier's call (a restarted stream names only the carrier's id)."""
        return f"{self.prefix}:sid:{carrier}:{call_sid}"

    def adopting(self, call_id: str) -> str:
        return f"{self.prefix}:call:{call_id}:adopt"

    def outbox(self, call_id: str) -> str:
        return f"{self.prefix}:call:{call_id}:out"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    def idempotency(self, call_id: str, key: str) -> str:
        return f"{self.prefix}:call:{call_id}:idem:{key}"

    def desk(self, carrier: str, call_sid: str) -> str:
        """The answer a transferring call left for its carrier's next fetch."""
        return f"{self.prefix}:desk:{carrier}:{call_sid}"

    def call_of_actions(self, stream_key: str) -> str:
        """The call id of an action stream's key."""
        return stream_key[len(self.prefix) + len(":call:") : -len(":in")]


# KEYS: lease, call, leases, carrier call. ARGV: token, ttl ms, now ms, call id, provider, call sid.
# -> {1, epoch} taken; {0, holder} another instance holds it; {-1, "ended"} the call is over.
ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {0, holder} end
if redis.call('HGET', KEYS[2], 'state') == 'ended' then return {-1, 'ended'} end
redis.call('SET', KEYS[4], ARGV[4])
redis.call('PERSIST', KEYS[4])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
redis.call('HSET', KEYS[2], 'owner', ARGV[1], 'state', 'live', 'provider', ARGV[5], 'call_sid', ARGV[6])
redis.call('PERSIST', KEYS[2])
redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[4])
return {1, epoch}
"""

# KEYS: lease, call, leases. ARGV: token, epoch, ttl ms, now ms, call id. -> 1 renewed, 0 fenced out.
# A lease that lapsed while Redis was unreachable is taken back if the epoch is still ours: anyone
# else taking the call would have moved the epoch on.
RENEW = """
local holder = redis.call('GET', KEYS[1])
if (holder and holder ~= ARGV[1]) or redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]) + tonumber(ARGV[3]), ARGV[5])
return 1
"""

# KEYS: call, actions. ARGV: epoch, last action entry applied, its ``upto`` ("" when it has none).
# What was applied leaves the stream (every entry up to and including that one: the owner applies
# them in order, and a successor reads after ``actions_applied``) and no longer counts against the
# call's budget (ROUTE). Safe to run twice. -> 1 written, 0 fenced out.
MARK_APPLIED = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'actions_applied', ARGV[2])
if KEYS[2] then
  redis.call('XTRIM', KEYS[2], 'MINID', '=', ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
end
local upto = tonumber(ARGV[3] or '')
if upto and upto > tonumber(redis.call('HGET', KEYS[1], 'actions_applied_bytes') or '0') then
  redis.call('HSET', KEYS[1], 'actions_applied_bytes', ARGV[3])
end
return 1
"""

# KEYS: lease, call, leases, actions, out, carrier call. ARGV: token, epoch, ttl s, call id.
# -> 1 ended, 0 fenced out.
END = """
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'state', 'ended')
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[3])
redis.call('EXPIRE', KEYS[5], ARGV[3])
redis.call('EXPIRE', KEYS[6], ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[3], ARGV[4])
return 1
"""

# KEYS: call, actions, idempotency. ARGV: actions JSON, key ("" for none), idempotency ttl s, answer JSON,
# the bytes a call's waiting actions may hold, the entries they may number.
# The call's budget: ``actions_bytes`` counts the bytes ever accepted (each entry's ``upto`` is that
# count once it is in), ``actions_applied_bytes`` the ``upto`` of the last entry applied (MARK_APPLIED):
# the difference waits in the stream. Nothing accepted is ever trimmed before it is applied.
# -> {404} no such call; {409} ended; {200, answer} a repeated key (nothing added); {429, bytes waiting,
# entries waiting} over the call's budget (nothing added); {202, entry id}.
ROUTE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {404} end
if state == 'ended' then return {409} end
if ARGV[2] ~= '' then
  local earlier = redis.call('GET', KEYS[3])
  if earlier then return {200, earlier} end
end
local size = #ARGV[1] + #ARGV[2]
local total = tonumber(redis.call('HGET', KEYS[1], 'actions_bytes') or '0')
local waiting = total - tonumber(redis.call('HGET', KEYS[1], 'actions_applied_bytes') or '0')
local entries = redis.call('XLEN', KEYS[2])
if waiting + size > tonumber(ARGV[5]) or entries >= tonumber(ARGV[6]) then return {429, waiting, entries} end
total = redis.call('HINCRBY', KEYS[1], 'actions_bytes', size)
local id = redis.call('XADD', KEYS[2], '*', 'actions', ARGV[1], 'key', ARGV[2], 'upto', total)
if ARGV[2] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[3]) end
return {202, id}
"""

# KEYS: call, actions. ARGV: the outcome (JSON). The carrier's word on a call's transfer, reached by
# whichever instance its callback came to, for the call's owner: an entry of the call's action stream
# (read in order with the bot's actions, never applied as one). Nothing is written for a call that
# is unknown or has ended (no stream left behind without its expiry). -> 1 added, 0 no such live call.
OUTCOME = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'ended' then return 0 end
redis.call('XADD', KEYS[2], '*', 'transfer', ARGV[1])
return 1
"""


# -- the shared outbox: each call's undelivered events, in a stream with IDs {sequence}-1 -----------------

# KEYS: call, out. ARGV: epoch, sequence, webhook id, type, body, created.
# -> 1 stored; 2 already stored (a retried write); 0 fenced out.
OUT_ADD = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
local ok = redis.pcall('XADD', KEYS[2], ARGV[2] .. '-1', 'webhook_id', ARGV[3], 'type', ARGV[4],
                       'body', ARGV[5], 'created', ARGV[6])
local last = tonumber(redis.call('HGET', KEYS[1], 'last_sequence') or '0')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[1], 'last_sequence', ARGV[2]) end
if type(ok) == 'table' and ok.err then return 2 end
return 1
"""

# KEYS: call, out, dead. ARGV: epoch, sequence, error ("" when delivered). -> 1 done, 0 fenced out.
OUT_DONE = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
local id = ARGV[2] .. '-1'
if ARGV[3] ~= '' then
  local entry = redis.call('XRANGE', KEYS[2], id, id)
  if entry[1] then
    local fields = entry[1][2]
    table.insert(fields, 'error') table.insert(fields, ARGV[3])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', '100000', '*', unpack(fields))
  end
end
redis.call('XDEL', KEYS[2], id)
return 1
"""

# KEYS: call. ARGV: epoch, call JSON. -> 1, 0 fenced out.
CALL_JSON = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'call_json', ARGV[2])
return 1
"""

# KEYS: call. ARGV: epoch. The call is over for the bot (409 from now on); its lease is kept until its
# last events are delivered. -> 1, 0 fenced out.
CALL_OVER = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'ended')
return 1
"""

# KEYS: lease, call, leases, adopting. ARGV: token, ttl ms, now ms, call id.
# A lapsed lease taken over by a sweeper (not while an instance is adopting the call's restarted
# stream): -> {1, epoch, state, call JSON, last sequence, provider, call sid}; {0} someone renewed it
# or an instance is adopting the call; {-1} the call's record is gone (nothing to deliver).
TAKEOVER = """
if redis.call('GET', KEYS[1]) or redis.call('EXISTS', KEYS[4]) == 1 then return {0} end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('ZREM', KEYS[3], ARGV[4]) return {-1} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
redis.call('HSET', KEYS[2], 'owner', ARGV[1])
redis.call('PERSIST', KEYS[2])
redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[4])
return {1, epoch, redis.call('HGET', KEYS[2], 'state') or '', redis.call('HGET', KEYS[2], 'call_json') or '',
        redis.call('HGET', KEYS[2], 'last_sequence') or '0', redis.call('HGET', KEYS[2], 'provider') or '',
        redis.call('HGET', KEYS[2], 'call_sid') or ''}
"""


# KEYS: call. ARGV: epoch, then field, value pairs (the Gladia session, the acknowledged offset...).
# -> 1, 0 fenced out.
SESSION = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# KEYS: lease, call, leases. ARGV: token, epoch, call id, deadline ms, then field, value pairs (the
# session as the owner left it). The owner hands the call over to the instance that has its restarted
# stream: its last session state, state 'handover', its lease given back. The call stays in the
# sweepers' list: if the new owner never takes it (it died too), it is ended as instance_lost once the
# adopting mark lapses. -> 1, 0 fenced out.
HANDOFF = """
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return 0 end
if #ARGV > 4 then redis.call('HSET', KEYS[2], unpack(ARGV, 5)) end
redis.call('HSET', KEYS[2], 'state', 'handover')
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]), ARGV[3])
return 1
"""
