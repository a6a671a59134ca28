"""Who answered an outbound call, told to the bot once (the shell around :mod:`bridge.dial.detector`).

Two sources, one verdict:

* the carrier's answering-machine detection (its callbacks, read by :mod:`bridge.dial.reports`), when the
  carrier has one: its verdict is ``call.answered_by`` (``source: "carrier"``), with the bridge's own
  opinion attached (``bridge_opinion``) when the bridge had one by then;
* the bridge's own detector on the callee's audio and first finals, which gives the verdict on
  platforms without detection (FreeSWITCH, Asterisk: ``source: "bridge"``).

``call.beep {after_ms}`` (only when the bot asked for ``detect_message_end``) says when the machine's
greeting is over, so the bot can leave its message: the carrier's word (a beep, or the greeting's end by
silence: ``tone`` false) or the bridge's beep detector, whichever comes first. A ``machine`` verdict under
``detect_message_end`` cuts what the bot is playing (``first_say``): ``playback.interrupted``, reason
``machine``; the greeting would talk over it. The bridge's own opinion cuts it too when it comes first
(Twilio's ``DetectMessageEnd`` says machine only once the greeting is over, when a short ``first_say``
has long played into it).

The detector runs on the audio path: fed only until it has nothing more to learn, and never waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from bridge.audio import (
    AudioFormat,
    audioop,  # the one import of it (stdlib or audioop-lts)
)
from bridge.dial.detector import Beep, MachineDetector, Verdict
from bridge.dial.reports import DialReport

log = structlog.get_logger("bridge.dial")

Post = Callable[[str, dict[str, Any]], object]  # an event's type and payload (the call adds ``call``)


class Answering:
    """One outbound call's answering-machine verdict and beep (see the module docstring)."""

    __slots__ = (
        "_clock", "_convert", "_cut", "_detector", "_post", "answered_at",
        "beep_sent", "carrier_detects", "cut", "mode", "opinion", "verdict_sent",
    )  # fmt: skip

    def __init__(
        self,
        *,
        mode: str,
        carrier_detects: bool,
        audio: AudioFormat,
        post: Post,
        cut: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``mode``: the order's ``machine_detection`` (``detect`` or ``detect_message_end``);
        ``carrier_detects``: the carrier's own detection was asked for; ``audio``: the format of what
        :meth:`hear` gets (the call's STT format, one channel); ``cut``: ends what the bot is playing."""
        self.mode = mode
        self.carrier_detects = carrier_detects
        self._post = post
        self._cut = cut
        self._clock = clock
        self.answered_at = clock()
        self.verdict_sent = False
        self.cut = False  # what the bot played was cut for a machine (once)
        self.opinion: Verdict | None = None  # the bridge's own verdict, once it has one
        self.beep_sent = False
        self._convert: Callable[[bytes], bytes] | None = _to_pcm16(audio)
        # at the call's own rate (8 or 16 kHz...): the detector reads any rate of whole 20 ms frames
        self._detector = MachineDetector(audio.sample_rate) if self._convert is not None else None

    # -- the callee's audio and words ------------------------------------------------------------

    def hear(self, audio: bytes) -> None:
        """The callee's audio, as the call sends it to STT (one frame)."""
        detector, convert = self._detector, self._convert
        if detector is None or convert is None:
            return
        self._learned(detector.feed(convert(audio)))
        if detector.done:
            self._detector = None  # nothing more to learn: the audio path is free of it
            ended = detector.message_end_ms
            verdict = detector.verdict
            if detector.beep is None and ended is not None and verdict is not None and verdict.answered_by == "machine":
                self._beep(ended, "bridge", tone=False)  # the greeting ended in silence: speak now

    def words(self, text: str) -> None:
        """A final of the callee's speech."""
        if self._detector is not None:
            self._learned(self._detector.words(text))

    def _learned(self, found: list[Verdict | Beep]) -> None:
        for item in found:
            if isinstance(item, Verdict):
                log.info("dial.bridge_verdict", answered_by=item.answered_by, detection_ms=item.detection_ms,
                         reason=item.reason)  # fmt: skip
                self.opinion = item
                if not self.carrier_detects:
                    self._verdict(item.answered_by, item.detection_ms, {"source": "bridge", "reason": item.reason})
                elif item.answered_by == "machine":
                    self._cut_once()  # Twilio's DetectMessageEnd says machine only once the greeting is over
            else:
                log.info("dial.bridge_beep", after_ms=item.after_ms, frequency=item.frequency)
                self._beep(item.after_ms, "bridge", tone=True)

    # -- the carrier's word ------------------------------------------------------------------------

    def carrier_said(self, report: DialReport) -> None:
        """The carrier's detection: a verdict, the greeting's end, or both (Twilio's ``machine_end_beep``)."""
        after_ms = round((self._clock() - self.answered_at) * 1000)
        if report.answered_by is not None:
            extra: dict[str, Any] = {"source": "carrier", "carrier_answered_by": report.carrier_answered_by or None}
            opinion = self.opinion
            if opinion is not None:
                extra["bridge_opinion"] = {
                    "answered_by": opinion.answered_by,
                    "detection_ms": opinion.detection_ms,
                    "reason": opinion.reason,
                }
            detection = report.detection_ms if report.detection_ms is not None else after_ms
            self._verdict(report.answered_by, detection, extra)
        if report.greeting_ended:
            self._beep(after_ms, "carrier", tone=report.beep)

    # -- what the bot is told ---------------------------------------------------------------------

    def _verdict(self, answered_by: str, detection_ms: int, extra: dict[str, Any]) -> None:
        if self.verdict_sent:
            return
        self.verdict_sent = True
        self._post("call.answered_by", {"answered_by": answered_by, "detection_ms": detection_ms, **extra})
        if answered_by == "machine" and not self.beep_sent:
            self._cut_once()

    def _cut_once(self) -> None:
        """A machine answered and the bot waits for its beep: what it plays ends (the greeting would talk
        over it; the bot speaks after ``call.beep``)."""
        if self.mode == "detect_message_end" and not self.cut:
            self.cut = True
            self._cut()

    def _beep(self, after_ms: int, source: str, *, tone: bool) -> None:
        if self.beep_sent or self.mode != "detect_message_end":
            return
        if not self.verdict_sent:  # a beep is a machine's
            self._verdict("machine", after_ms, {"source": source, "reason": "beep"})
        self.beep_sent = True
        self._post("call.beep", {"after_ms": after_ms, "source": source, "tone": tone})


def _to_pcm16(audio: AudioFormat) -> Callable[[bytes], bytes] | None:
    """How one frame of ``audio`` becomes 16-bit PCM (None: a format the detector does not read)."""
    if audio.channels != 1:
        return None
    if audio.codec == "ulaw":
        return lambda b: audioop.ulaw2lin(b, 2)
    if audio.codec == "alaw":
        return lambda b: audioop.alaw2lin(b, 2)
    if audio.codec == "pcm16":
        return lambda b: b
    return None
