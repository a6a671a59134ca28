"""Telnyx media streaming, sans-I/O: snake_case JSON with base64 RTP payloads, reordered by chunk.

Messages: ``connected``, ``start`` (``stream_id`` top-level; ``start.call_control_id``, ``from``,
``to``, ``custom_parameters``, ``media_format{encoding, sample_rate, channels}``), ``media``
(``media{track, chunk, timestamp, payload}``), ``dtmf``, ``mark``, ``error`` and ``stop``.

Encodings (any case): ``PCMU``/``audio/x-mulaw``, ``PCMA``/``audio/x-alaw`` and ``L16``/``audio/x-l16``.
Payloads are RTP payloads, so L16 is in network byte order (RFC 3551 section 4.5.11): it is swapped to
the bridge's little-endian PCM on the way in. G722, OPUS and AMR-WB (which a ``default`` stream gets
on an HD leg) are refused with the setting that avoids them.

Telnyx does not guarantee order: media is re-ordered by ``chunk`` within a bounded window
(``REORDER_WINDOW`` chunks, 100 ms at 20 ms per chunk); a chunk that never comes within the window is
counted as a gap and the audio after it goes on. At ``stop`` (or when the socket closes without it)
the chunks still held come out in order, each jump reported as a gap. With ``both_tracks`` the
numbers seen on the outbound track count as present (not lost) for the inbound one, so one counter
shared by both tracks does not look like a gap per chunk (the first wait tells a shared counter from
one per track; after it the inbound audio flows without waiting).

Both parties as two channels: when the stream was started with ``stream_track=both_tracks`` and the
bridge is told so (the stream URL's ``?tracks=both``, since Telnyx's ``start`` does not list its
tracks; or ``media_format.channels`` 2), each track's media becomes its own channel, placed by
``timestamp`` (taken as milliseconds, as in Twilio's dialect that Telnyx's follows: UNVERIFIED) and
put back in order by the interleaver (:mod:`bridge.tracks`) rather than by ``chunk``.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Mapping
from typing import Any

from bridge.adapters.base import CallStarted, Dtmf, Gap, MarkReached, PhoneEvent
from bridge.adapters.carrier import Capabilities, Carrier, FrameRules
from bridge.adapters.common import b64_payload, int_field, require
from bridge.adapters.json_dialect import JsonDialectAdapter
from bridge.adapters.stream_auth import stream_token
from bridge.audio import ALAW_8K, ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError

REORDER_WINDOW = 5
_ENCODINGS = {
    "PCMU": "ulaw",
    "AUDIO/X-MULAW": "ulaw",
    "PCMA": "alaw",
    "AUDIO/X-ALAW": "alaw",
    "L16": "pcm16",
    "AUDIO/X-L16": "pcm16",
}
# Short enough for a WebSocket close reason (123 bytes) with the codec's name in front.
_CODEC_ADVICE = "set stream_codec, or TeXML <Stream codec>, to PCMU, PCMA or L16"
_INBOUND_TRACKS = ("inbound", "inbound_track")
_RECENT = 64  # how far back the reorderer remembers numbers, to tell shared chunk counters from separate ones
_OTHER_CAP = 1024  # at most this many other-track numbers remembered

Released = tuple[bytes, tuple[int, int] | None]  # a payload, and the (expected, received) jump before it


class ChunkReorderer:
    """Puts numbered chunks back in order, holding at most ``window`` early ones (pure).

    Numbering may start at 1 or 0. Numbers seen on the other track (:meth:`other`) are present but not
    ours, so skipping them is not a gap: both tracks may share one counter. Whether they do is learnt
    from the stream: a number seen on both tracks means a counter each (the other track is no longer
    consulted); a wait that ends with only the other track's numbers skipped means one shared counter
    (from then on those numbers are skipped without waiting). Until then nothing is skipped early.
    """

    def __init__(self, window: int = REORDER_WINDOW) -> None:
        self.window = window
        self.expected: int | None = None
        self.shared_counter: bool | None = None  # None: not known yet
        self._held: dict[int, bytes] = {}
        self._other: set[int] = set()
        self._ours: deque[int] = deque(maxlen=_RECENT)
        self._emitted = False
        self.late = 0
        self.missing = 0

    @property
    def held(self) -> int:
        return len(self._held)

    def push(self, chunk: int, payload: bytes) -> list[Released]:
        """Our chunk ``chunk``: the payloads now in order, each with the jump before it (if any)."""
        if chunk in self._other:
            self._separate()
        if self.expected is None:
            # Numbering starts at 1 or 0 (Telnyx does not say which); a chunk a little later than that may
            # simply have overtaken the first ones.
            self.expected = min(chunk, 1) if chunk <= self.window else chunk
        elif chunk < self.expected and not self._emitted and self.expected - chunk <= self.window:
            self.expected = chunk  # nothing came out yet: an earlier first chunk (e.g. 0) is still in time
        if chunk < self.expected or chunk in self._held:
            self.late += 1  # too late (or a duplicate): its place in the stream has passed
            return []
        self._held[chunk] = payload
        self._ours.append(chunk)
        return self._drain()

    def other(self, chunk: int) -> list[Released]:
        """Chunk ``chunk`` of the other track: not ours, and not lost either if the tracks share a counter."""
        if self.shared_counter is False:
            return []
        if chunk in self._held or chunk in self._ours:
            self._separate()
            return []
        if self.expected is not None and chunk < self.expected:
            return []  # its place has passed already
        self._other.add(chunk)
        if len(self._other) > _OTHER_CAP:
            self._other = set(sorted(self._other)[: _OTHER_CAP // 2])  # the nearest ones matter
        return self._drain() if self.shared_counter and self.expected is not None else []

    def flush(self) -> list[Released]:
        """The end of the stream: every chunk still held, in order, with the jumps before them."""
        out: list[Released] = []
        while self._held:
            out.append(self._jump(min(self._held)))
        self._other.clear()
        return out

    def _separate(self) -> None:
        self.shared_counter = False
        self._other.clear()

    def _drain(self) -> list[Released]:
        out: list[Released] = []
        while self._held:
            assert self.expected is not None
            if self.expected in self._held:
                out.append(self._jump(self.expected))
                continue
            first = min(self._held)
            if len(self._held) > self.window or (
                self.shared_counter and self._others_between(self.expected, first) == first - self.expected
            ):
                out.append(self._jump(first))  # waited enough, or only the other track's numbers in between
            else:
                break
        if out and self._other:
            self._forget_passed()
        return out

    def _forget_passed(self) -> None:
        expected = self.expected
        if expected is not None:
            self._other = {n for n in self._other if n >= expected}

    def _jump(self, chunk: int) -> Released:
        """Take held ``chunk`` out, counting the numbers skipped to reach it that no track had."""
        assert self.expected is not None
        skipped = max(chunk - self.expected, 0)
        while self.expected < chunk and self.expected in self._other:
            self.expected += 1  # the other track's: the gap (if any) starts after them
        lost = max(chunk - self.expected, 0) - self._others_between(self.expected, chunk)
        if self.shared_counter is None and skipped and not lost:
            self.shared_counter = True  # everything skipped was the other track's
        gap = (self.expected, chunk) if lost > 0 else None
        self.missing += lost
        self.expected = chunk + 1
        self._emitted = True
        return self._held.pop(chunk), gap

    def _others_between(self, start: int, stop: int) -> int:
        """How many numbers in ``[start, stop)`` the other track had (cheap whatever the distance)."""
        if stop <= start:
            return 0
        if stop - start <= len(self._other):
            return sum(1 for n in range(start, stop) if n in self._other)
        return sum(1 for n in self._other if start <= n < stop)


class _NetworkOrder:
    """L16 in network byte order to little-endian, keeping an odd trailing byte for the next payload."""

    def __init__(self) -> None:
        self._odd = b""

    def feed(self, data: bytes) -> bytes:
        if self._odd:
            data, self._odd = self._odd + data, b""
        n = len(data) & ~1
        if n != len(data):
            self._odd = data[n:]
        return swap16(data[:n])


def swap16(data: bytes) -> bytes:
    """Swap the two bytes of each 16-bit sample (``len(data)`` must be even)."""
    out = bytearray(len(data))
    out[0::2] = data[1::2]
    out[1::2] = data[0::2]
    return bytes(out)


def codec_of(encoding: Any) -> str | None:
    """The bridge codec for a ``media_format.encoding``: any case, MIME parameters ignored."""
    if not isinstance(encoding, str):
        return None
    return _ENCODINGS.get(encoding.split(";", 1)[0].strip().upper())


def _parameters(value: Any) -> dict[str, str]:
    """``start.custom_parameters`` as name -> value: an object, or Call Control's list of ``{name, value}``.

    Anything malformed (another type, an entry without a string name, a non-scalar value) is dropped:
    parameters are extras, not a reason to refuse the stream.
    """
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = [(p.get("name"), p.get("value")) for p in value if isinstance(p, dict)]
    else:
        return {}
    return {
        name: "" if v is None else str(v)
        for name, v in pairs
        if isinstance(name, str) and name and (v is None or isinstance(v, (str, int, float, bool)))
    }


class TelnyxAdapter(JsonDialectAdapter):
    carrier = "telnyx"
    dialect = "Telnyx"
    stream_key = "stream_id"
    stream_events = frozenset({"media", "dtmf", "mark", "stop"})
    passive_events = frozenset({"connected", "error"})  # errors are Telnyx telling us about our messages

    def __init__(self, both_parties: bool = False) -> None:
        super().__init__()
        self._reorder = ChunkReorderer()
        self._swap: _NetworkOrder | None = None  # L16 only
        self._swap_other: _NetworkOrder | None = None  # the outbound track's, on a both-parties stream
        self.both_parties = both_parties

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        start = require(msg, "start", dict, "start")
        stream_id = msg.get("stream_id") or start.get("stream_id")
        if not isinstance(stream_id, str) or not stream_id:
            raise PhoneProtocolError("stream_id missing")
        call_id = start.get("call_control_id") or start.get("call_session_id")
        if not isinstance(call_id, str) or not call_id:
            raise PhoneProtocolError("start.call_control_id missing")
        fmt = start.get("media_format") or {}
        if not isinstance(fmt, dict):
            raise PhoneProtocolError("start.media_format is not an object")
        encoding = fmt.get("encoding", "PCMU")
        codec = codec_of(encoding)
        if codec is None:
            raise PhoneProtocolError(f"Telnyx codec {str(encoding)[:40]} is not supported: {_CODEC_ADVICE}", 1003)
        rate = int_field(fmt, "sample_rate", "start.media_format") or 8000
        channels = fmt.get("channels", 1)
        if channels not in (1, 2) or isinstance(channels, bool) or (codec != "pcm16" and rate != 8000):
            raise PhoneProtocolError(f"unsupported media_format {fmt}", 1003)
        # UNVERIFIED whether a both_tracks stream says channels 2; each media message is one track.
        self.both_parties = self.both_parties or channels == 2
        audio_format = {"ulaw": ULAW_8K, "alaw": ALAW_8K}.get(codec) or AudioFormat("pcm16", rate)
        self._swap = _NetworkOrder() if codec == "pcm16" else None
        self._swap_other = _NetworkOrder() if codec == "pcm16" else None
        caller, called, user = start.get("from"), start.get("to"), start.get("user_id")
        return CallStarted(
            carrier=self.carrier,
            call_sid=call_id,
            stream_sid=stream_id,
            account_sid=user if isinstance(user, str) else None,
            parameters=_parameters(start.get("custom_parameters")),
            audio_format=audio_format,
            caller=caller if isinstance(caller, str) else None,
            called=called if isinstance(called, str) else None,
            tracks=("inbound", "outbound") if self.both_parties else ("inbound",),
            channels=2 if self.both_parties else 1,
        )

    def _stream_event(self, event: str, msg: dict[str, Any]) -> list[PhoneEvent]:
        if event == "dtmf":
            return [Dtmf(require(require(msg, "dtmf", dict, "dtmf"), "digit", str, "dtmf"))]
        if event == "mark":
            return [MarkReached(require(require(msg, "mark", dict, "mark"), "name", str, "mark"))]
        if event == "stop":
            events = self._released(self._reorder.flush())
            events.append(self._stopped())
            return events
        media = require(msg, "media", dict, "media")
        payload = b64_payload(media.get("payload"), "media.payload")
        inbound = media.get("track", "inbound") in _INBOUND_TRACKS
        if self.both_parties:
            swap = self._swap if inbound else self._swap_other
            return [self._track_audio(swap.feed(payload) if swap is not None else payload, media, inbound)]
        chunk = int_field(media, "chunk", "media")
        if not inbound:
            released = [] if chunk is None else self._reorder.other(chunk)
            return [*self._released(released), self._ignored("outbound_media")]
        return self._released([(payload, None)] if chunk is None else self._reorder.push(chunk, payload))

    def _released(self, released: list[Released]) -> list[PhoneEvent]:
        events: list[PhoneEvent] = []
        for data, gap in released:
            if gap is not None:
                self.counters.gaps += 1
                events.append(Gap(*gap))
            pcm = self._swap.feed(data) if self._swap is not None else data
            if pcm:
                events.append(self._audio(pcm))
        return events

    def close(self) -> list[PhoneEvent]:
        """The chunks still waiting for a missing one (the socket closed without ``stop``), in order."""
        return self._released(self._reorder.flush())

    @property
    def outbound_format(self) -> AudioFormat:
        # Telnyx plays back in the stream's bidirectional codec, PCMU unless the application chose
        # another with stream_bidirectional_codec, whatever the inbound codec is.
        return ULAW_8K

    def _audio_chunk_message(self, chunk: bytes) -> str:
        return json.dumps({"event": "media", "media": {"payload": base64.b64encode(chunk).decode()}})

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "mark", "mark": {"name": name}})

    def clear_message(self) -> str:
        self._drop_held_audio()
        return json.dumps({"event": "clear"})


def adapter_for(query: Mapping[str, str], default_rate: int) -> TelnyxAdapter:
    """Telnyx's start does not list its tracks: a stream_track=both_tracks stream says so in its URL
    (``?tracks=both``).

    Raises:
        ValueError: a ``tracks`` value other than inbound or both.
    """
    tracks = query.get("tracks", "inbound")
    if tracks not in ("inbound", "inbound_track", "both", "both_tracks"):
        raise ValueError(f"tracks={tracks!r}: inbound or both")
    return TelnyxAdapter(both_parties=tracks.startswith("both"))


CARRIER = Carrier(
    "telnyx",
    "Telnyx media streaming",
    TelnyxAdapter,
    adapter_for,
    stream_token("telnyx"),
    # transfer: Call Control actions/transfer, briefing by audio_url, the caller stays on the stream when
    # nobody answers (https://developers.telnyx.com/api-reference/call-commands/transfer-call)
    Capabilities(two_tracks=True, transfer="rest", announce=True, return_to_bot=True),
    FrameRules(ULAW_8K),
    query_options=("tracks",),
)
