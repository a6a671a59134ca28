"""One call's recording, on the event loop: the caller's audio and the other party's (or the bot's playout)
placed on one :class:`~bridge.recording.timeline.Timeline` and handed to the writer about once a second.

Where the audio comes from (so the recording holds what the transcript heard and the caller heard):

* channel 0: what the call sends to speech-to-text (:meth:`CallRecorder.heard`, one message at a time:
  a bytes append, no decoding), so a sensitive gather's silence is silence here too. On a both-tracks
  stream that audio already holds both parties aligned (:mod:`bridge.tracks`): channel 1 is its second
  channel and the playout is not recorded (the carrier's outbound track is what the caller heard);
* channel 1 of a one-track call: each chunk the playout sends (:meth:`played`, from
  :class:`bridge.reply.sender.Sender`), placed where the playout clock says the caller hears it: at
  ``max(now, the end of the previous chunk)`` (the playout paces at real time with a short lead, so a
  run is contiguous from its first chunk); a ``clear`` (:meth:`cleared`) drops what was placed from now
  on, not yet emitted: cleared audio is not in the recording.

Call time: samples at the recording's rate from the call's start (monotonic clock). The first stream's
caller audio starts at 0, contiguous (as speech-to-text counts it, so utterance times match); a restarted
stream's starts where the clock was when its first message came (a dropped stream leaves silence).
Emission (:meth:`_tick`, once a second of caller audio) takes up to ``min(now - settle, caller's end)``:
late clears still land in memory, and a caller stream that bursts ahead is not cut.

Rates: the recording's rate is the carrier's (8 kHz stays 8 kHz), or the speech-to-text rate when that
is lower; audio is decoded and resampled once a second (a batch), not per 20 ms frame.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from bridge.audio import AudioFormat, Codec, Transcoder, make_transcoder
from bridge.call.payloads import param
from bridge.recording.service import RecordingService
from bridge.recording.timeline import RATES, Timeline

if TYPE_CHECKING:
    from bridge.adapters.base import CallStarted
    from bridge.call.services import CallServices

log = structlog.get_logger("bridge.recording")

CLOSE_WAIT_S = 10.0  # how long a call's end waits for the writer to close its file (a stuck disk)
MAX_LAG_S = 10.0  # emission never lags the caller's audio by more than this (the timeline's buffer is 30 s)
PCM16: Codec = "pcm16"


class NoRecording:
    """A call that is not recorded: every hook is a no-op (one method call per message)."""

    def heard(self, audio: bytes) -> None:
        pass

    def played(self, data: bytes, fmt: AudioFormat) -> None:
        pass

    def cleared(self) -> None:
        pass

    def new_stream(self) -> None:
        pass

    def silence(self, start: float, end: float) -> None:
        pass

    async def finish(self, post: Callable[[str, dict[str, Any]], object]) -> None:
        pass


NO_RECORDING = NoRecording()


def recorder_for(
    services: CallServices, call_id: str, started: CallStarted, stt: AudioFormat, adopted: bool = False
) -> CallRecorder | NoRecording:
    """The call's recorder, or :data:`NO_RECORDING` when recordings are off (for the number it called).
    ``adopted``: fleet mode, a call another instance held; its audio goes after what the file holds."""
    service = services.recordings
    if service is None or not service.wanted(param(started, "to")):
        return NO_RECORDING
    return CallRecorder(service, call_id, started.audio_format, stt, adopted)


class CallRecorder:
    """See the module docstring."""

    def __init__(
        self, service: RecordingService, call_id: str, native: AudioFormat, stt: AudioFormat, adopted: bool = False
    ) -> None:
        self.service, self.call_id = service, call_id
        self.rate = 16000 if min(native.sample_rate, stt.sample_rate) >= 16000 else 8000
        assert self.rate in RATES
        self.stt = stt
        self.both = stt.channels == 2
        mono = AudioFormat(stt.codec, stt.sample_rate)
        self._decoders: list[Transcoder] = [
            make_transcoder(mono, AudioFormat(PCM16, self.rate)) for _ in range(stt.channels)
        ]
        self._out: tuple[AudioFormat, Transcoder] | None = None  # the playout's format and its decoder
        self._pending = bytearray()
        self._tick_bytes = stt.bytes_per_second  # one second of the call's audio
        self._t0 = time.monotonic()
        self.timeline = Timeline(self.rate, settle_s=service.settings.settle_s, max_buffered_s=3 * MAX_LAG_S)
        self._caller_end = 0  # where the caller's next sample goes
        self._anchored = True  # the first stream starts at 0
        self._first_at: int | None = None  # when a restarted stream's first audio came (call time)
        self._other_end = 0  # the end of the playout placed so far
        self.refused = 0  # appends the writer's queue refused
        self._closed = False
        service.open(call_id, self.rate, after_end=adopted)

    def _now(self) -> int:
        return round((time.monotonic() - self._t0) * self.rate)

    # -- the hooks (the event loop) ------------------------------------------------------------

    def heard(self, audio: bytes) -> None:
        """One message's audio as the call sends it to speech-to-text (its format, one or two channels)."""
        if not self._anchored and self._first_at is None:  # a restarted stream's first message: when it came
            self._first_at = self._now() - len(audio) // self.stt.frame_bytes * self.rate // self.stt.sample_rate
        self._pending += audio
        if len(self._pending) >= self._tick_bytes:
            self._tick()

    def new_stream(self) -> None:
        """A restarted stream carries the call: its audio starts where the clock is."""
        self._tick()
        self._anchored, self._first_at = False, None

    def played(self, data: bytes, fmt: AudioFormat) -> None:
        """A chunk of bot audio sent to the caller (``fmt``: the carrier's outbound format)."""
        if self.both or self._closed or not data:
            return
        if self._out is None or self._out[0] != fmt:
            self._out = (fmt, make_transcoder(fmt, AudioFormat(PCM16, self.rate)))
        pcm = self._out[1].feed(data)
        at = max(self._now(), self._other_end)
        self.timeline.other(pcm, at)
        self._other_end = at + len(pcm) // 2

    def cleared(self) -> None:
        """The playout cleared the carrier: what was placed from now on was never heard."""
        if self.both or self._closed:
            return
        now = self._now()
        self.timeline.other_clear(now)
        self._other_end = min(self._other_end, now)

    def silence(self, start: float, end: float) -> None:
        """Both channels silent over ``start``-``end`` (call seconds: a redacted span's word times). Audio not
        yet written is silenced in memory; what was written is patched in the file by the writer (a WAV
        exactly; an Opus file cannot be, and the writer counts the span as unpatched)."""
        if self._closed or end <= start:
            return
        lo, hi = max(0, round(start * self.rate)), round(end * self.rate)
        for a, b in self.timeline.silence(lo, hi):
            self.service.writer.silence(self.call_id, a, b)

    # -- emission --------------------------------------------------------------------------------

    def _tick(self, final: bool = False) -> None:
        if self._pending:
            self._place(bytes(self._pending))
            self._pending.clear()
        if final:  # to the last audio; playout sent ahead (the lead) past the end of the call was not heard
            upto = max(self._caller_end, min(self._other_end, self._now()), self.timeline.taken)
        else:
            upto = max(
                min(self._now() - self.timeline.settle, self._caller_end),
                self._caller_end - round(MAX_LAG_S * self.rate),
            )
        at = self.timeline.taken
        pcm = self.timeline.take(upto)
        if pcm and not self.service.writer.append(self.call_id, pcm, at):
            self.refused += 1

    def _place(self, audio: bytes) -> None:
        channels = self._split(audio)
        pcm = [d.feed(c) for d, c in zip(self._decoders, channels, strict=True)]
        n = min(len(p) for p in pcm) // 2
        if not n:
            return
        if not self._anchored:
            first = self._now() - n if self._first_at is None else self._first_at
            self._caller_end = max(self._caller_end, first)
            self._anchored = True
        at = self._caller_end
        self.timeline.caller(pcm[0], at)
        if self.both:
            self.timeline.other(pcm[1], at)
        self._caller_end = at + n

    def _split(self, audio: bytes) -> list[bytes]:
        if not self.both:
            return [audio]
        width = self.stt.sample_width
        frames = np.frombuffer(audio, dtype=np.uint8 if width == 1 else "<i2")
        frames = frames[: len(frames) // 2 * 2].reshape(-1, 2)
        return [frames[:, 0].tobytes(), frames[:, 1].tobytes()]

    # -- the end ---------------------------------------------------------------------------------

    async def finish(self, post: Callable[[str, dict[str, Any]], object]) -> None:
        """Write the rest, close the file and post ``recording.completed`` (after ``call.ended``). A writer
        that does not answer within :data:`CLOSE_WAIT_S` (a stuck disk) costs the event, never the call."""
        if self._closed:
            return
        self._tick(final=True)
        self._closed = True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict[str, Any]] = loop.create_future()

        def closed(info: dict[str, Any]) -> None:
            if not done.done():
                done.set_result(info)

        self.service.close(self.call_id, closed)
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                info = await done
        except TimeoutError:
            log.warning("recording.close_late", wait=CLOSE_WAIT_S, detail="no recording.completed for this call")
            return
        dropped = self.timeline.dropped_samples
        if info["degraded"] or dropped or self.refused:
            log.warning(
                "recording.incomplete", dropped_bytes=info["dropped_bytes"], late_samples=dropped, refused=self.refused
            )
        post(
            "recording.completed",
            {
                "duration_s": round(float(info["duration_s"]), 3),
                "bytes": info["bytes"],
                "format": info["format"],
                "channels": info["channels"],
                "sample_rate": info["rate"],
                "degraded": bool(info["degraded"] or dropped or self.refused),
            },
        )
