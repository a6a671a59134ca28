"""Endpointing, pure: voice-activity probabilities per frame -> speech events and utterances.

Fed one VAD frame at a time (512 samples = 32 ms at 16 kHz, with its probability), it says when
speech starts, when it ends (``endpointing`` seconds of silence), and hands out each utterance's
audio with a little context before and after.

Where it cuts, and why (measured on the telephone corpus, ``benchmarks/bench_wer.py``):

* Speech starts on one frame at ``threshold``, or on :data:`WEAK_FRAMES` frames in a row at
  ``threshold - WEAK_MARGIN``: a weak, band-limited voice (the corpus's Klatt call) stays at Silero
  probabilities of 0.2-0.5 and lost 80% of its words at 0.5 alone, 25% with the sustained rule. One
  frame at the lower threshold is what noise does, four in a row is not: the rule changed no other
  call's cuts. An utterance keeps going while the probability stays above its continuation threshold
  (hysteresis): 0.15 under the one-frame threshold, or half the weak one for a sustained start.
* An utterance ends after ``endpointing`` seconds under the continuation threshold; its audio runs
  :data:`PRE_ROLL_S` before the speech and :data:`POST_ROLL_S` after. The next utterance's pre-roll
  may reach back into that one's trailing silence (the audio is contiguous, never a gap).
* An utterance longer than ``maximum_duration_without_endpointing`` (Gladia's rule; never over 28 s,
  the recogniser's 30 s window) is cut at the quietest frame of its last :data:`QUIET_SEARCH_S`
  seconds, not where the count runs out, which is as likely to be inside a word. Both pieces carry
  :data:`OVERLAP_S` of audio past the cut, so a word at it is heard whole by at least one of them;
  ``keep_from``/``keep_until`` tell the engine which words are whose (by the middle of the word).

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
WEAK_MARGIN = 0.3  # a sustained start's threshold, under the one-frame threshold
WEAK_FRAMES = 4  # frames in a row (128 ms) at the weak threshold that start speech
HYSTERESIS = 0.15  # an utterance continues down to this much under the threshold it started on
OVERLAP_S = 0.2  # audio either side of a forced cut that both pieces hear
QUIET_SEARCH_S = 3.0  # a forced cut looks this far back for the quietest frame

_PRE = max(1, round(PRE_ROLL_S / FRAME_S))
_OVERLAP = max(1, round(OVERLAP_S / FRAME_S))
_QUIET = round(QUIET_SEARCH_S / FRAME_S)


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
    the speech itself; ``index`` counts the channel's utterances from 0. ``keep_from``/``keep_until``
    (session seconds, None: unbounded): a piece of a forced cut also holds audio of its neighbour;
    words whose middle lies outside these bounds are the neighbour's."""

    index: int
    start: float
    end: float
    audio_start: float
    audio: np.ndarray
    channel: int = 0
    keep_from: float | None = None
    keep_until: float | None = None


SegmentEvent = SpeechStarted | SpeechEnded | UtteranceAudio


class Segmenter:
    def __init__(self, *, threshold: float, endpointing: float, max_duration: float, channel: int = 0) -> None:
        self.channel = channel
        self.threshold = threshold
        self.weak_threshold = max(0.1, threshold - WEAK_MARGIN)
        self.neg_threshold = max(0.05, threshold - HYSTERESIS)
        self.endpointing = endpointing
        self.max_duration = min(max_duration, MAX_WINDOW_S)
        self._frames = 0  # frames seen
        # frames before speech: the pre-roll, plus the run of weak frames a sustained start reaches back over
        self._pre: deque[tuple[np.ndarray, float]] = deque(maxlen=_PRE + WEAK_FRAMES - 1)
        self._weak_run = 0
        self._in_speech = False
        self._utt: list[np.ndarray] = []
        self._probs: list[float] = []
        self._utt_audio_start = 0.0
        self._speech_start = 0.0
        self._last_voiced_end = 0.0
        self._silence = 0.0
        self._continue_at = self.neg_threshold
        self._keep_from: float | None = None
        self.utterances = 0

    @property
    def now(self) -> float:
        return self._frames * FRAME_S

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def keep_from(self) -> float | None:
        """The utterance in progress's ``keep_from`` (see :class:`UtteranceAudio`)."""
        return self._keep_from if self._in_speech else None

    def current(self) -> tuple[float, np.ndarray] | None:
        """The utterance so far (audio start, audio), for partial transcripts."""
        if not self._in_speech or not self._utt:
            return None
        return self._utt_audio_start, np.concatenate(self._utt)

    def push(self, frame: np.ndarray, prob: float) -> list[SegmentEvent]:
        start = self.now
        self._frames += 1
        end = self.now
        if not self._in_speech:
            return self._idle(frame, prob, start, end)
        events: list[SegmentEvent] = []
        self._utt.append(frame)
        self._probs.append(prob)
        if prob >= self._continue_at:
            self._silence = 0.0
            self._last_voiced_end = end
        else:
            self._silence += FRAME_S
        if self._silence >= self.endpointing:
            events.append(SpeechEnded(round(self._last_voiced_end, 3), self.channel))
            events.append(self._cut(self._last_voiced_end))
            self._in_speech = False
            # the next utterance's pre-roll may reach back into this one's trailing silence
            self._pre.clear()
            self._pre.extend(zip(self._utt[-_PRE:], self._probs[-_PRE:], strict=True))
            self._weak_run = 0
        elif end - self._speech_start >= self.max_duration:
            events.append(self._forced_cut())
        return events

    def _idle(self, frame: np.ndarray, prob: float, start: float, end: float) -> list[SegmentEvent]:
        self._weak_run = self._weak_run + 1 if prob >= self.weak_threshold else 0
        strong = prob >= self.threshold
        if not strong and self._weak_run < WEAK_FRAMES:
            self._pre.append((frame, prob))
            return []
        lead = 0 if strong else min(WEAK_FRAMES - 1, len(self._pre))  # the weak run's earlier frames
        take = min(len(self._pre), _PRE + lead)
        before = list(self._pre)[len(self._pre) - take :]
        self._in_speech = True
        self._utt = [f for f, _ in before] + [frame]
        self._probs = [p for _, p in before] + [prob]
        self._utt_audio_start = start - take * FRAME_S
        self._speech_start = start - lead * FRAME_S
        self._last_voiced_end = end
        self._silence = 0.0
        self._keep_from = None
        # hysteresis under the threshold the speech started on
        self._continue_at = self.neg_threshold if strong else self.weak_threshold / 2
        return [SpeechStarted(round(self._speech_start, 3), self.channel)]

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
        return self._emit(audio[: max(0, keep)], speech_end, None)

    def _forced_cut(self) -> UtteranceAudio:
        """Cut the utterance at its recent quietest frame; the rest (and :data:`OVERLAP_S` before the
        cut) starts the next piece, which goes on as the same speech."""
        n = len(self._utt)
        first_speech = round((self._speech_start - self._utt_audio_start) / FRAME_S)
        lo = max(first_speech + 1, n - _QUIET)
        hi = n - _OVERLAP  # the first piece needs its overlap after the cut
        if hi <= lo:
            k = hi - 1  # no room to choose (a very short maximum): cut as late as the overlap allows
        else:
            window = self._probs[lo:hi]
            k = lo + max(range(len(window)), key=lambda i: (-window[i], i))  # the latest of the quietest
        boundary = k + 1  # the cut falls after the quietest frame
        cut = self._utt_audio_start + boundary * FRAME_S
        piece = self._emit(np.concatenate(self._utt[: boundary + _OVERLAP]), cut, cut)
        keep = max(0, boundary - _OVERLAP)
        self._utt = self._utt[keep:]
        self._probs = self._probs[keep:]
        self._utt_audio_start += keep * FRAME_S
        self._speech_start = cut
        self._keep_from = cut
        return piece

    def _emit(self, audio: np.ndarray, speech_end: float, keep_until: float | None) -> UtteranceAudio:
        utt = UtteranceAudio(
            self.utterances,
            round(self._speech_start, 3),
            round(speech_end, 3),
            self._utt_audio_start,
            audio,
            self.channel,
            self._keep_from,
            keep_until,
        )
        self.utterances += 1
        return utt
