"""What a call uses, as one typed bundle, and what the fleet asks of a call, as one typed protocol.

``CallServices`` is built once per application (the HTTP edge sets it up) and handed to every
:class:`bridge.call.Call`; a call reaches nothing else of the process. ``FleetCall`` is the whole of
what fleet mode (:mod:`bridge.fleet`) may ask of a call it owns; :class:`bridge.call.Call` implements
it, so the fleet holds the call itself, not closures over it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

if TYPE_CHECKING:
    import aiohttp

    from bridge.call.desk import TransferDesk
    from bridge.call.redacting import Redaction
    from bridge.delivery import Delivery
    from bridge.record_store import RecordStore
    from bridge.recording.service import RecordingService
    from bridge.reply.actions import Action
    from bridge.reply.tts import Speaker
    from bridge.settings import Settings
    from bridge.stt.admission import Admission


@dataclass(frozen=True, slots=True)
class CallServices:
    """Everything a call uses besides its own stream (one per application, shared by its calls)."""

    settings: Settings
    http: aiohttp.ClientSession
    delivery: Delivery
    resume_secret: bytes  # key of the calls' resume tokens (BRIDGE_SECRET, or random per process)
    admission: Admission | None = None  # gladia.max_sessions (None: no limit)
    speaker: Speaker | None = None  # speech for `say` (None: no engine installed or configured)
    transcripts: RecordStore | None = None  # the record kept after the call (None: off)
    desk: TransferDesk | None = None  # where a transfer leaves the markup its carrier fetches next
    # the live event tap (GET /v1/calls/{id}/events, GET /v1/events): never a sensitive event
    tap: LiveTap | None = None
    # set when the bridge starts to stop: a call's wait for Gladia's post-call analysis ends at once
    stopping: asyncio.Event | None = None
    recordings: RecordingService | None = None  # the calls' recordings (None: off for every number)
    # BRIDGE_REDACT (transcripts.redact): built from the settings; None: nothing is redacted
    redaction: Redaction | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        from bridge.call.redacting import Redaction

        object.__setattr__(self, "redaction", Redaction.from_settings(self.settings.transcripts))

    @property
    def live_redaction(self) -> Redaction | None:
        """The redaction of the live bot events too (``transcripts.redact_events``), else None."""
        return self.redaction if self.redaction is not None and self.redaction.events else None


class LiveTap(Protocol):
    """What a call needs of the live event tap (:class:`bridge.event_tap.EventTap`)."""

    def publish(self, call_id: str, sequence: int, type_: str, body: str) -> None:
        """A bot event of the call, as queued for the bot."""

    def hears(self, call_id: str) -> bool:
        """Whether a notice of the call would reach anybody now (its body is built only then)."""

    def notice(self, call_id: str, type_: str, body: str) -> None:
        """A notice (``speech.started``, ``utterance.partial``): live only, no sequence."""


class FleetCall(Protocol):
    """What fleet mode asks of a call this instance owns (fields go to and come from Redis as text)."""

    @property
    def id(self) -> str: ...

    def apply_actions(self, actions: list[Action], key: str) -> object:
        """Apply actions routed to this call (``key`` deduplicates a retried request)."""

    def session_fields(self) -> dict[str, str] | None:
        """Where its Gladia session stands plus its shape (streams, channels); None: no session yet."""

    async def hand_over(self) -> dict[str, str] | None:
        """Give the call up to the instance that has its restarted stream; None: its stream is live
        here (or it is over), nothing to hand over. Otherwise the same fields as :meth:`session_fields`."""

    def lost_to_another_instance(self) -> None:
        """Another instance took the call over (this one was cut off or paused): end it here, quietly."""


# The application's key for it (set up by bridge.app's cleanup_ctx).
CALL_SERVICES = web.AppKey("call_services", CallServices)  # what every call of the application uses
