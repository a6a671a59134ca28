"""One live session of the local server: offsets, acknowledgments, speech events, results.

Sans-I/O apart from the VAD call: the server feeds it audio and sends the messages it returns;
utterances to recognise are queued in ``to_decode`` and come back through :meth:`final_message`.

Resume. Every chunk is acknowledged as soon as it is processed, with session-wide ``byte_range``
(end exclusive, as the official SDKs read it) and ``time_range``. A client that reconnects resends
what it believes is unacknowledged; acknowledgments in flight when the socket dropped mean it may
resend bytes the session already has. The first audio on a new connection is therefore compared
with the session's recent audio at each recently acknowledged offset; where it matches, the
overlap is skipped, so the session's audio stays exactly the caller's (no duplicate). Audio that
is byte-identical at two offsets (e.g. digital silence) can make a few of those bytes be skipped.

Channels. As Gladia does with ``channels`` > 1, each channel of the interleaved input is decoded,
voice-detected, segmented and recognised on its own, and every message about it carries its 0-based
index: ``speech_start``/``speech_end`` ``data.channel``, each utterance's ``channel``, and transcript
ids ``CC_NNNNNNNN`` (two-digit channel, the channel's own utterance counter). Acknowledgments,
``recording_duration`` and resume stay on the interleaved byte stream. A mono session is channel 0.

Order across channels. The channels are scanned in lockstep, one VAD frame (32 ms) of every channel
at a time, lowest channel first, so speech events and utterances come out in the order they are
detected, whatever the chunking: a ``speech_end`` (and its utterance) ``endpointing`` seconds after
the speech ended, a cut at ``maximum_duration_without_endpointing`` at once. Finals are recognised
and sent in that order: by end time, up to that endpointing delay (utterances in progress at
``stop_recording`` are closed by end time). The post-session transcription lists the utterances by
the end of their speech, ties by channel (each channel's own utterances stay in their order).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, assert_never

import numpy as np

from bridge.local_stt.audio_in import InputDecoder
from bridge.local_stt.context import CallContext, vocabulary
from bridge.local_stt.engine import Recognition, VadStream
from bridge.local_stt.request import StreamingRequest
from bridge.local_stt.segmenter import Segmenter, SegmentEvent, SpeechEnded, SpeechStarted, UtteranceAudio

# Gladia's default speech_threshold (0.6) -> Silero 0.5. A weak, band-limited voice that stays under it is
# caught by the segmenter's sustained start (bridge.local_stt.segmenter) rather than a lower threshold here:
# 0.35 helped the corpus's Klatt call but cost the suite's sample 3.7 points (20.8% -> 24.5%) and the demo 4.
SILERO_OFFSET = 0.1
MIN_ENDPOINTING = 0.3  # seconds: below this, Whisper gets cut mid-word (Gladia's default is 0.05)
TAIL_SECONDS = 10.0  # recent audio kept to recognise a resend after a reconnect
MAX_RESEND_SECONDS = 2.0  # acknowledgments lost in flight at a drop cover well under this


def silero_threshold(speech_threshold: float) -> float:
    """Gladia's ``pre_processing.speech_threshold`` (0 to 1, default 0.6) as Silero's start threshold:
    Silero's probabilities sit lower than Gladia's scale, and much lower on a weak or band-limited
    voice, so Gladia's scale maps to :data:`SILERO_OFFSET` below it."""
    return max(0.2, min(0.9, speech_threshold - SILERO_OFFSET))


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Final:
    """A recognised utterance: ``end`` is where the segmenter saw its speech end (session seconds)."""

    channel: int
    index: int
    end: float
    utterance: dict[str, Any]


@dataclass(slots=True)
class Channel:
    """One input channel's own voice detection and endpointing."""

    index: int
    vad: VadStream
    segmenter: Segmenter
    last_partial_at: float = 0.0  # segmenter time of the last partial transcript


@dataclass
class LiveSession:
    id: str
    token: str
    request: StreamingRequest
    vad_stream: Callable[[], VadStream]  # a new VAD state, one per channel
    history_prompt: bool = False  # each channel's previous finals in Whisper's prompt (see local_stt.context)
    created_at: str = field(default_factory=now_iso)
    state: str = "created"  # created | connected | disconnected | stopping | done
    received_bytes: int = 0
    duplicate_bytes: int = 0
    connections: int = 0
    finals: list[Final] = field(default_factory=list)
    to_decode: deque[UtteranceAudio] = field(default_factory=deque)
    messages_log: list[str] = field(default_factory=list)
    completed_at: str | None = None

    def __post_init__(self) -> None:
        r = self.request
        self.decoder = InputDecoder(r.encoding, r.bit_depth, r.sample_rate, r.channels)
        self.bytes_per_second = r.sample_rate * r.sample_width * r.channels
        threshold = silero_threshold(r.pre_processing.speech_threshold if r.pre_processing else 0.6)
        self.channels = [
            Channel(
                c,
                self.vad_stream(),
                Segmenter(
                    threshold=threshold,
                    endpointing=max(r.endpointing, MIN_ENDPOINTING),
                    max_duration=r.maximum_duration_without_endpointing,
                    channel=c,
                ),
            )
            for c in range(r.channels)
        ]
        self.context = CallContext(r.channels, vocabulary(r.realtime_processing), history=self.history_prompt)
        self._tail = bytearray()
        self._ack_ends: deque[int] = deque(maxlen=32)
        self._resync = False
        self._skip = 0
        self.recording_started = False

    # -- helpers ----------------------------------------------------------------------------

    def envelope(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "session_id": self.id, "created_at": now_iso(), **fields}

    @property
    def duration(self) -> float:
        return self.received_bytes / self.bytes_per_second

    # -- connection lifecycle ---------------------------------------------------------------

    def connected(self) -> list[dict[str, Any]]:
        self.connections += 1
        self.state = "connected" if self.state != "stopping" else "stopping"
        self._resync = self.connections > 1
        out = []
        if self.connections == 1 and self.request.messages.receive_lifecycle_events:
            out.append(self.envelope("start_session"))
        return out

    # -- audio ----------------------------------------------------------------------------------

    def receive_audio(self, data: bytes) -> list[dict[str, Any]]:
        """Process one chunk; returns the messages to send now (ack, speech events)."""
        if self._resync and data:
            self._resync = False
            self._skip = self._overlap(data)
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            self.duplicate_bytes += n
            data = data[n:]
        if not data:
            return []
        out: list[dict[str, Any]] = []
        m = self.request.messages
        if not self.recording_started:
            self.recording_started = True
            if m.receive_lifecycle_events:
                out.append(self.envelope("start_recording"))
        start = self.received_bytes
        self.received_bytes += len(data)
        self._tail += data
        limit = int(TAIL_SECONDS * self.bytes_per_second)
        if len(self._tail) > limit:
            del self._tail[: len(self._tail) - limit]
        self._ack_ends.append(self.received_bytes)
        if m.receive_acknowledgments:
            bps = self.bytes_per_second
            out.append(
                self.envelope(
                    "audio_chunk",
                    acknowledged=True,
                    error=None,
                    data={
                        "byte_range": [start, self.received_bytes],
                        "time_range": [round(start / bps, 3), round(self.received_bytes / bps, 3)],
                    },
                )
            )
        out.extend(self._segment_events(self._scan(self.decoder.feed_channels(data))))
        return out

    def _scan(self, samples: list[np.ndarray]) -> list[SegmentEvent]:
        """Each channel's new samples through its VAD and segmenter, one frame of every channel at a
        time (the channels carry the same number of samples, so their frames line up)."""
        detected = [ch.vad.feed(x) for ch, x in zip(self.channels, samples, strict=True)]
        events: list[SegmentEvent] = []
        for frames in zip(*detected, strict=True):
            for ch, (frame, prob) in zip(self.channels, frames, strict=True):
                events.extend(ch.segmenter.push(frame, prob))
        return events

    def _overlap(self, data: bytes) -> int:
        """How many leading bytes of a reconnect's first audio the session already has.

        Candidates are the recently acknowledged offsets (at most ``MAX_RESEND_SECONDS`` back),
        smallest overlap first. Audio with no information (digital silence: one or two byte values)
        proves nothing, so such a comparison never counts as a match: in doubt, nothing is skipped.
        """
        total = self.received_bytes
        tail_start = total - len(self._tail)
        horizon = total - int(MAX_RESEND_SECONDS * self.bytes_per_second)
        for end in sorted(set(self._ack_ends), reverse=True):
            if end >= total or end < max(tail_start, horizon):
                continue
            overlap = total - end
            n = min(overlap, len(data))
            offset = end - tail_start
            probe = data[:n]
            if len(set(probe[:4096])) <= 2:
                continue
            if self._tail[offset : offset + n] == probe:
                return overlap
        return 0

    def _segment_events(self, events: list[SegmentEvent]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        speech = self.request.messages.receive_speech_events
        for event in events:
            match event:
                case SpeechStarted():
                    if speech:
                        out.append(self.envelope("speech_start", data={"time": event.time, "channel": event.channel}))
                case SpeechEnded():
                    if speech:
                        out.append(self.envelope("speech_end", data={"time": event.time, "channel": event.channel}))
                case UtteranceAudio():
                    self.to_decode.append(event)
                case _:
                    assert_never(event)
        return out

    def stop(self) -> list[dict[str, Any]]:
        """``stop_recording``: close the utterance in progress; returns the acknowledgment."""
        self.state = "stopping"
        out = self._segment_events(self._scan(self.decoder.flush_channels()))
        # utterances still open on several channels: closed in the order of their ends (stable: by channel)
        open_ones = sorted((ch.segmenter.flush() for ch in self.channels), key=_end_of)
        for events in open_ones:
            out.extend(self._segment_events(events))
        if self.request.messages.receive_acknowledgments:
            pending = sum(len(u.audio) for u in self.to_decode) / 16000
            out.insert(
                0,
                self.envelope(
                    "stop_recording",
                    acknowledged=True,
                    error=None,
                    data={
                        "recording_duration": round(self.duration, 3),
                        "recording_left_to_process": round(pending, 3),
                    },
                ),
            )
        return out

    # -- transcripts ------------------------------------------------------------------------------

    @staticmethod
    def utterance_json(channel: int, audio_start: float, start: float, end: float, rec: Recognition) -> dict[str, Any]:
        """Gladia's UtteranceDTO; word times are offset by ``audio_start``, and ``start``/``end``
        are used when no word was timed."""
        words: list[dict[str, Any]] = [
            {
                "word": w.word,
                "start": round(audio_start + w.start, 3),
                "end": round(audio_start + w.end, 3),
                "confidence": round(w.confidence, 3),
            }
            for w in rec.words
        ]
        if words:
            start, end = words[0]["start"], words[-1]["end"]
        return {
            "start": max(start, 0.0),
            "end": end,
            "confidence": rec.confidence,
            "channel": channel,
            "words": words,
            "text": (" " + rec.text) if rec.text else "",
            "language": rec.language,
        }

    def final_message(self, utt: UtteranceAudio, rec: Recognition) -> dict[str, Any] | None:
        """Record a recognised utterance; the final transcript message, if the client wants it."""
        rec = kept_words(rec, utt.audio_start, utt.keep_from, utt.keep_until)
        if not rec.text:
            return None
        utterance = self.utterance_json(utt.channel, utt.audio_start, utt.start, utt.end, rec)
        self.finals.append(Final(utt.channel, utt.index, utt.end, utterance))
        self.context.heard(utt.channel, rec.text)
        if not self.request.messages.receive_final_transcripts:
            return None
        return self.envelope(
            "transcript", data={"id": transcript_id(utt.channel, utt.index), "is_final": True, "utterance": utterance}
        )

    def partial_message(self, channel: int, index: int, audio_start: float, rec: Recognition) -> dict[str, Any] | None:
        """A partial transcript of ``channel``'s utterance ``index`` in progress (its audio from ``audio_start``)."""
        rec = kept_words(rec, audio_start, self.channels[channel].segmenter.keep_from, None)
        if not rec.text or not self.request.messages.receive_partial_transcripts:
            return None
        utterance = self.utterance_json(channel, audio_start, audio_start, audio_start, rec)
        return self.envelope(
            "transcript", data={"id": transcript_id(channel, index), "is_final": False, "utterance": utterance}
        )

    def transcription(self) -> dict[str, Any]:
        """Every channel's utterances, by the end of their speech (ties: lower channel first)."""
        by_channel = [
            sorted((f for f in self.finals if f.channel == ch.index), key=lambda f: f.index) for ch in self.channels
        ]
        utterances = [f.utterance for f in heapq.merge(*by_channel, key=lambda f: f.end)]
        return {
            "full_transcript": " ".join(u["text"].strip() for u in utterances),
            "languages": list(dict.fromkeys(u["language"] for u in utterances)),  # those used, in order
            "utterances": utterances,
        }

    def end_messages(self) -> list[dict[str, Any]]:
        """After the last final: end_recording, post-processing results, end_session."""
        m = self.request.messages
        out: list[dict[str, Any]] = []
        if m.receive_lifecycle_events:
            out.append(self.envelope("end_recording", data={"recording_duration": round(self.duration, 3)}))
        if m.receive_post_processing_events:
            out.append(self.envelope("post_transcript", data=self.transcription()))
            out.append(
                self.envelope(
                    "post_final_transcript", data={"metadata": self.metadata(), "transcription": self.transcription()}
                )
            )
        if m.receive_lifecycle_events:
            out.append(self.envelope("end_session"))
        return out

    def metadata(self) -> dict[str, Any]:
        channels = self.request.channels
        return {
            "audio_duration": round(self.duration, 3),
            "number_of_distinct_channels": channels,
            "billing_time": round(self.duration * channels, 3),
            "transcription_time": 0.0,
        }

    def result(self) -> dict[str, Any]:
        """``GET /v2/live/{id}`` (StreamingResponse)."""
        done = self.state == "done"
        return {
            "id": self.id,
            "request_id": "G-" + self.id[:8],
            "version": 2,
            "kind": "live",
            "status": "done" if done else "processing",
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "custom_metadata": self.request.custom_metadata,
            "error_code": None,
            "post_session_metadata": {},
            "file": {
                "id": self.id,
                "filename": None,
                "source": None,
                "audio_duration": round(self.duration, 3),
                "number_of_channels": self.request.channels,
            },
            "request_params": self.request.model_dump(mode="json"),
            "result": {
                "metadata": self.metadata(),
                "transcription": self.transcription(),
                "messages": list(self.messages_log),
            }
            if done
            else None,
        }


def kept_words(rec: Recognition, audio_start: float, keep_from: float | None, keep_until: float | None) -> Recognition:
    """``rec`` without the words that belong to a neighbouring piece of a forced cut: those whose middle
    (session time: ``audio_start`` + word time) lies before ``keep_from`` or after ``keep_until``."""
    if keep_from is None and keep_until is None:
        return rec
    lo = float("-inf") if keep_from is None else keep_from
    hi = float("inf") if keep_until is None else keep_until
    words = tuple(w for w in rec.words if lo <= audio_start + (w.start + w.end) / 2 <= hi)
    if len(words) == len(rec.words):
        return rec
    confidence = round(float(np.mean([w.confidence for w in words])), 3) if words else 0.0
    return Recognition("".join(w.word for w in words).strip(), words, rec.language, confidence)


def transcript_id(channel: int, index: int) -> str:
    """Gladia's transcript id: two-digit channel, eight-digit utterance counter (shared by partial and final)."""
    return f"{channel:02d}_{index:08d}"


def _end_of(events: list[SegmentEvent]) -> float:
    return max((e.end for e in events if isinstance(e, UtteranceAudio)), default=0.0)
