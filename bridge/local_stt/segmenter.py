"""Endpointing, pure: voice-activity probabilities per frame -> speech events and utterances.

Fed one VAD frame at a time (512 samples = 32 ms at 16 kHz, with its probability), it says when
speech starts, when it ends (``endpointing`` seconds of silence), and hands out each utterance's
audio with a little context before and after. An utterance longer than
``maximum_duration_without_endpointing`` is cut there (Gladia's rule), and never longer than 28 s
(the recogniser's 30 s window).

One segmenter follows one audio channel; every event it returns carries that ``channel`` (0-based).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

RATE = 16000
FRAME = 512
FRAME_S = FRAME / RATE
PRE_ROLL_S = 0.25
POST_ROLL_S = 0.15
MAX_WINDOW_S = 28.0


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    time: float
    channel: int = 0


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    time: float
    channel: int = 0


@dataclass(frozen=True, slots=True)
class UtteranceAudio:
    """One utterance: ``audio`` starts at ``audio_start`` (session seconds); ``start``/``end`` bound
    the speech itself; ``index`` counts the channel's utterances from 0."""

    index: int
    start: float
    end: float
    audio_start: float
    audio: np.ndarray
    channel: int = 0


SegmentEvent = SpeechStarted | SpeechEnded | UtteranceAudio


class Segmenter:
    def __init__(self, *, threshold: float, endpointing: float, max_duration: float, channel: int = 0) -> None:
        self.channel = channel
        self.threshold = threshold
        self.neg_threshold = max(0.05, threshold - 0.15)
        self.endpointing = endpointing
        self.max_duration = min(max_duration, MAX_WINDOW_S)
        self._frames = 0  # frames seen
        self._pre: deque[np.ndarray] = deque(maxlen=max(1, round(PRE_ROLL_S / FRAME_S)))
        self._in_speech = False
        self._utt: list[np.ndarray] = []
        self._utt_audio_start = 0.0
        self._speech_start = 0.0
        self._last_voiced_end = 0.0
        self._silence = 0.0
        self.utterances = 0

    @property
    def now(self) -> float:
        return self._frames * FRAME_S

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def current(self) -> tuple[float, np.ndarray] | None:
        """The utterance so far (audio start, audio), for partial transcripts."""
        if not self._in_speech or not self._utt:
            return None
        return self._utt_audio_start, np.concatenate(self._utt)

    def push(self, frame: np.ndarray, prob: float) -> list[SegmentEvent]:
        start = self.now
        self._frames += 1
        end = self.now
        events: list[SegmentEvent] = []
        if not self._in_speech:
            if prob >= self.threshold:
                self._in_speech = True
                self._utt = [*self._pre, frame]
                self._utt_audio_start = start - len(self._pre) * FRAME_S
                self._speech_start = start
                self._last_voiced_end = end
                self._silence = 0.0
                events.append(SpeechStarted(round(start, 3), self.channel))
            self._pre.append(frame)
            return events
        self._utt.append(frame)
        if prob >= self.neg_threshold:
            self._silence = 0.0
            self._last_voiced_end = end
        else:
            self._silence += FRAME_S
        if self._silence >= self.endpointing:
            events.append(SpeechEnded(round(self._last_voiced_end, 3), self.channel))
            events.append(self._cut(self._last_voiced_end))
            self._in_speech = False
            self._pre.clear()
        elif end - self._speech_start >= self.max_duration:
            events.append(self._cut(end))
            self._utt = []
            self._utt_audio_start = end
            self._speech_start = end
        return events

    def flush(self) -> list[SegmentEvent]:
        """End of audio: close an utterance in progress."""
        if not self._in_speech:
            return []
        self._in_speech = False
        end = max(self._last_voiced_end, self._speech_start)
        return [SpeechEnded(round(end, 3), self.channel), self._cut(end)]

    def _cut(self, speech_end: float) -> UtteranceAudio:
        audio = np.concatenate(self._utt) if self._utt else np.zeros(0, dtype=np.float32)
        keep = int((speech_end + POST_ROLL_S - self._utt_audio_start) * RATE)
        audio = audio[: max(0, keep)]
        utt = UtteranceAudio(
            self.utterances,
            round(self._speech_start, 3),
            round(speech_end, 3),
            self._utt_audio_start,
            audio,
            self.channel,
        )
        self.utterances += 1
        return utt
