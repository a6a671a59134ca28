"""What describes one carrier to the bridge (pure): its route, its adapter factory and query options,
how it proves itself on the WebSocket upgrade, what its stream can do, and how it frames its side.

Each adapter module builds its carrier's :class:`Carrier`; :data:`bridge.adapters.CARRIERS` lists them.
The HTTP edge, the settings, the CLI and the tools read these descriptions instead of testing names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from bridge.adapters.base import PhoneAdapter
from bridge.adapters.stream_auth import Authenticate
from bridge.audio import AudioFormat

# A fresh adapter for one stream from the route's query and ``carriers.audiofork_sample_rate`` (the rate
# a fork that does not say its own is taken to stream at). Raises ValueError for a query value it refuses.
Factory = Callable[[Mapping[str, str], int], PhoneAdapter]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a carrier's stream can do, as its adapter implements it (later: transfer, outbound calls).

    ``two_tracks``: a stream can carry the other party too (a second track, or a second channel);
    ``marks``: the carrier reports when playback reaches a mark; ``clear``: the carrier drops the audio
    it holds (for an audio fork: with the subprotocol jambonz and mod_audio_fork negotiate).
    """

    two_tracks: bool
    marks: bool = True
    clear: bool = True
    # Call control (bridge.call.transfer): how a transfer is handed to the carrier ("markup": the
    # stream closes and the carrier fetches the bridge's next markup; "rest": its call-control API;
    # None: no documented way), whether the person can hear a briefing first, and whether a transfer
    # nobody answered can bring the caller back to the bot on the same call.
    transfer: Literal["markup", "rest"] | None = None
    announce: bool = False
    return_to_bot: bool = False
    gather: bool = True  # keys reach the bridge (DTMF events), so a gather works


@dataclass(frozen=True, slots=True)
class FrameRules:
    """How a carrier frames its own side of a stream (what ``bridge call`` imitates).

    ``native_format``: what it streams unless told otherwise; ``l16``: it can stream L16 at a chosen
    rate; ``frame_ms``: the audio one message carries; ``sends_stop``: it ends a stream with a message
    (else by closing the socket); ``own_stream_id``: the sender gives the stream an id of its own
    (else the stream goes by the call's id, or one the carrier's connection makes);
    ``call_sid_prefix``/``stream_sid_prefix``: how its ids begin; ``twilio_like``: Twilio's messages
    (the phone echoes marks, as ``bridge call --save-reply`` does); ``track_messages``: a two-track
    stream sends one message per track (else both channels in each message).
    """

    native_format: AudioFormat
    l16: bool = True
    frame_ms: int = 20
    sends_stop: bool = True
    own_stream_id: bool = True
    call_sid_prefix: str = ""
    stream_sid_prefix: str = ""
    twilio_like: bool = False
    track_messages: bool = True

    @property
    def frame_seconds(self) -> float:
        return self.frame_ms / 1000


@dataclass(frozen=True, slots=True)
class Carrier:
    """One carrier the bridge speaks, on ``/{name}/stream``.

    ``factory`` builds its adapter from the route's ``query_options`` (the names it reads);
    ``authenticate`` checks the upgrade (shared ``<NAME>_STREAM_TOKEN``, or its own signature scheme:
    ``shared_token`` False); ``capabilities`` and ``frames`` say what its stream does and how it looks.
    """

    name: str
    title: str
    adapter: type[PhoneAdapter]
    factory: Factory
    authenticate: Authenticate
    capabilities: Capabilities
    frames: FrameRules
    query_options: tuple[str, ...] = ()
    shared_token: bool = True  # False: the carrier signs its requests (Twilio)

    @property
    def token_variable(self) -> str:
        return f"{self.name.upper()}_STREAM_TOKEN"


def plain(adapter: Callable[[], PhoneAdapter]) -> Factory:
    """The factory of an adapter that reads nothing from the route."""

    def build(query: Mapping[str, str], default_rate: int) -> PhoneAdapter:
        return adapter()

    return build
