"""Typed keys for what the aiohttp application holds (no globals)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from bridge.clock import SYSTEM_CLOCK, Clock
from bridge.settings import Settings

if TYPE_CHECKING:
    from bridge.blocking import BlockingPool
    from bridge.call import Call
    from bridge.delivery import Delivery
    from bridge.fleet.fleet import Fleet
    from bridge.metrics import Metrics
    from bridge.outbox import OutboxWriter
    from bridge.phone_connection import PhoneConnection
    from bridge.phone_stream import PhoneStream
    from bridge.reply.tts import Speaker
    from bridge.stt.admission import Admission
    from bridge.suspended_calls import SuspendedCalls
    from bridge.transcripts import TranscriptStore

MAX_ENDED_REMEMBERED = 10_000


@dataclass
class BridgeState:
    """Mutable state of a running bridge (the app itself is frozen once started)."""

    http: aiohttp.ClientSession | None = None
    delivery: Delivery | None = None
    outbox: OutboxWriter | None = None
    transcripts: TranscriptStore | None = None  # None: transcripts off, or the file could not be opened
    calls: dict[PhoneStream, PhoneConnection] = field(default_factory=dict)  # open phone streams
    live_calls: dict[str, Call] = field(default_factory=dict)  # calls carried by one of them, by id
    draining: bool = False
    suspended: SuspendedCalls | None = None
    admission: Admission | None = None
    metrics: Metrics | None = None
    worker: tuple[int, int] | None = None  # (index, count) under bridge serve --workers
    resume_secret: bytes = b""  # key of the calls' resume tokens (BRIDGE_SECRET, or random per process)
    clock: Clock = SYSTEM_CLOCK  # webhook ages and retry sleeps (virtual in tests)
    speaker: Speaker | None = None  # speech for `say` (None: no engine installed or configured)
    fleet: Fleet | None = None  # fleet mode (BRIDGE_REDIS_URL): this instance's leases and routed actions
    ended_calls: OrderedDict[str, None] = field(default_factory=OrderedDict)  # recent ids: /v1/ answers 409
    blocking: BlockingPool | None = None  # client-driven blocking work (transcript reads), off the audio threads

    def call_ended(self, call_id: str) -> None:
        self.ended_calls[call_id] = None
        while len(self.ended_calls) > MAX_ENDED_REMEMBERED:
            self.ended_calls.popitem(last=False)


SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", BridgeState)
