"""The fleet's Redis connection and the Lua scripts run on it: one client per instance, the scripts of
:mod:`bridge.fleet.keys` registered on it and sent in batches (loaded again after a Redis restart), the
instance's counters, and the one throttled log line a failing Redis gets.

Everything else in :mod:`bridge.fleet` (leases, action streams, hand-over, the outbox) reaches Redis
through one :class:`FleetRedis`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from bridge.fleet.keys import ACQUIRE, END, HANDOFF, MARK_APPLIED, OUTCOME, RENEW, ROUTE, SESSION, TAKEOVER, Keys
from bridge.settings import FleetSettings

log = structlog.get_logger("bridge.fleet")

# What a failing Redis raises, and what a reply of the wrong shape or bytes does (a URL that points
# at another service, a proxy in the way, a corrupted reply): redis-py decodes such a reply into a
# UnicodeDecodeError, or into a value the scripts' answers cannot be read from (IndexError,
# TypeError, ValueError). Each is one failed round trip, handled like Redis being down.
REDIS_FAILED: tuple[type[BaseException], ...] = (RedisError, OSError, ValueError, LookupError, TypeError)

ScriptCall = tuple[AsyncScript, list[str], list[Any]]  # a script, its keys, its arguments


@dataclass(slots=True)
class LogThrottle:
    """At most one log line per ``interval`` seconds for something that keeps happening, with how many
    were held back since the last one."""

    interval: float = 10.0
    logged_at: float = -1e9  # monotonic time of the last line
    suppressed: int = 0  # lines held back since then

    def due(self) -> int | None:
        """Call once per occurrence. Returns how many were held back (log this one now), or None (hold
        this one back too)."""
        now = time.monotonic()
        if now - self.logged_at < self.interval:
            self.suppressed += 1
            return None
        held, self.logged_at, self.suppressed = self.suppressed, now, 0
        return held


@dataclass(slots=True)
class FleetCounters:
    leases_taken: int = 0
    leases_lost: int = 0
    takeovers: int = 0
    actions_routed: int = 0
    actions_applied: int = 0
    redis_errors: int = 0
    redis_ops: int = 0  # commands sent (a pipeline or script counts one)


class FleetRedis:
    """This instance on the fleet's Redis: the client, who it is (``instance_id``, and ``token``, its
    hold on a lease), the key layout, the registered scripts and the counters."""

    def __init__(self, settings: FleetSettings, instance_id: str, client: aioredis.Redis | None = None) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.instance_id = instance_id
        self.token = f"{instance_id}:{secrets.token_hex(4)}"  # this process's hold on a lease
        self.keys = Keys(settings.key_prefix)
        poll = settings.action_poll_ms / 1000
        self.client: aioredis.Redis = client or aioredis.from_url(
            settings.redis_url.get_secret_value(),
            decode_responses=True,
            socket_timeout=max(5.0, 2 * poll + 1),  # above the blocking read (redis-py's 5 s default)
            socket_connect_timeout=5.0,
            health_check_interval=15,
        )
        self.counters = FleetCounters()
        self._scripts: list[AsyncScript] = []  # every script registered: loaded again after a Redis restart
        self._failures = LogThrottle()
        self.acquire = self.register(ACQUIRE)
        self.renew = self.register(RENEW)
        self.mark_applied = self.register(MARK_APPLIED)
        self.end = self.register(END)
        self.route = self.register(ROUTE)
        self.takeover = self.register(TAKEOVER)
        self.session = self.register(SESSION)
        self.handoff = self.register(HANDOFF)
        self.outcome = self.register(OUTCOME)

    def register(self, source: str) -> AsyncScript:
        """A script to run on this Redis (with :meth:`run_scripts`, or called with keys and args)."""
        script = self.client.register_script(source)
        self._scripts.append(script)
        return script

    async def run_scripts(
        self, calls: list[ScriptCall | None], before: Callable[[Any], None] | None = None
    ) -> list[Any]:
        """Several scripts in one round trip: a pipeline of ``EVALSHA`` (``None`` entries answer
        ``None``, to keep results aligned). redis-py would ask ``SCRIPT EXISTS`` before each pipeline
        holding scripts, a round trip more per batch; here a Redis that lost its script cache (a
        restart) answers ``NOSCRIPT``, and the scripts are loaded and the batch sent once more: every
        script the fleet runs is safe to run twice."""
        for attempt in (1, 2):
            async with self.client.pipeline(transaction=False) as pipe:
                if before is not None:
                    before(pipe)
                for call in calls:
                    if call is None:
                        pipe.echo("")
                    else:
                        script, keys, args = call
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                self.counters.redis_ops += 1
                try:
                    return list(await pipe.execute())
                except NoScriptError:
                    if attempt == 2:
                        raise
            for script in self._scripts:
                self.counters.redis_ops += 1
                await self.client.script_load(script.script)
        raise AssertionError("unreachable")

    def failed(self, doing: str, exc: BaseException) -> None:
        """One line per 10 s while Redis fails, with how many were not logged. A reply that could not
        be read (not a connection or Redis error) says so: check that the URL points at Redis."""
        self.counters.redis_errors += 1
        held = self._failures.due()
        if held is None:
            return
        unreadable = {} if isinstance(exc, (RedisError, OSError)) else {"detail": "Redis's reply could not be read"}
        log.warning(
            "fleet.redis_error", doing=doing, error=f"{type(exc).__name__}: {exc}"[:200], since=held, **unreadable
        )
