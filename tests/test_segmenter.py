"""The segmenter's cutting rules (bridge.local_stt.segmenter), pure: probabilities in, events out.

Every frame's samples hold its own number, so a test can say exactly which frames an utterance's
audio holds (contiguity, pre-roll, overlap) without any recogniser."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.local_stt.engine import Recognition, Word
from bridge.local_stt.live import kept_words
from bridge.local_stt.segmenter import (
    FRAME,
    FRAME_S,
    OVERLAP_S,
    WEAK_FRAMES,
    Segmenter,
    SegmentEvent,
    SpeechStarted,
    UtteranceAudio,
)


def play(seg: Segmenter, probs: list[float], first: int = 0) -> list[SegmentEvent]:
    events: list[SegmentEvent] = []
    for i, p in enumerate(probs, start=first):
        events += seg.push(np.full(FRAME, float(i), dtype=np.float32), p)
    return events


def frames_of(utt: UtteranceAudio) -> list[int]:
    """Which frames an utterance's audio holds (a partial last frame counts)."""
    return [int(utt.audio[i]) for i in range(0, len(utt.audio), FRAME)]


def utterances(events: list[SegmentEvent]) -> list[UtteranceAudio]:
    return [e for e in events if isinstance(e, UtteranceAudio)]


def test_a_weak_voice_starts_speech_when_it_is_sustained() -> None:
    """Four frames in a row at threshold - 0.3 start speech, dated from the run's first frame; three do not,
    and neither do single frames just under the threshold between quiet ones (what noise does)."""
    seg = Segmenter(threshold=0.5, endpointing=0.3, max_duration=15)
    blips = [0.45, 0.0] * 10
    short_run = [0.0] * 5 + [0.3] * (WEAK_FRAMES - 1) + [0.0] * 5
    assert play(seg, blips + short_run) == []
    n = len(blips + short_run)
    events = play(seg, [0.3] * WEAK_FRAMES + [0.3] * 30 + [0.0] * 12, first=n)
    start = events[0]
    assert isinstance(start, SpeechStarted) and start.time == pytest.approx(n * FRAME_S)
    (utt,) = utterances(events)
    assert utt.start == pytest.approx(n * FRAME_S)
    assert frames_of(utt)[0] < n  # the pre-roll before the weak run is there too


def test_an_utterance_that_started_weak_continues_while_the_voice_stays_weak() -> None:
    """Hysteresis under the threshold the speech started on: a weak voice's 0.15-0.25 frames are speech,
    not the silence that ends it (at the strong start's continuation of 0.35 it would be cut in three)."""
    seg = Segmenter(threshold=0.5, endpointing=0.3, max_duration=15)
    voice = ([0.3] * 8 + [0.15] * 12) * 3
    events = play(seg, [0.0] * 10 + voice + [0.0] * 15)
    (utt,) = utterances(events)
    assert utt.start == pytest.approx(10 * FRAME_S) and utt.end == pytest.approx((10 + len(voice)) * FRAME_S)


def test_the_next_pre_roll_reaches_back_into_the_last_utterances_silence() -> None:
    """Two utterances 0.35 s apart: the second one's audio starts a full pre-roll before its speech,
    inside the first one's trailing silence, and every utterance's frames are contiguous."""
    seg = Segmenter(threshold=0.5, endpointing=0.3, max_duration=15)
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 11 + [0.9] * 20 + [0.0] * 12
    first, second = utterances(play(seg, probs))
    assert second.start == pytest.approx(41 * FRAME_S)
    assert frames_of(second)[0] == 41 - 8  # 8 frames of pre-roll (0.25 s), 2 of them before the cut
    for utt in (first, second):
        f = frames_of(utt)
        assert f == list(range(f[0], f[0] + len(f)))
        assert utt.audio_start == pytest.approx(f[0] * FRAME_S)


def test_a_forced_cut_falls_at_the_quietest_frame_with_overlap_both_ways() -> None:
    """Speech with no pause of `endpointing` for 8 s, max 5 s: cut after the quietest frame of the last 3 s
    (a dip at 3.5 s that is still speech), not at 5 s; each piece hears the other's first or last 0.2 s,
    and says where its own words start or stop."""
    seg = Segmenter(threshold=0.5, endpointing=0.3, max_duration=5)
    dip = 10 + round(3.5 / FRAME_S)
    probs = [0.0] * 10 + [0.9] * 250 + [0.0] * 12
    probs[dip] = 0.4
    probs[dip - 60] = 0.38  # quieter, but more than 3 s before the maximum: not looked at
    a, b = utterances(play(seg, probs))
    cut = (dip + 1) * FRAME_S
    assert a.end == pytest.approx(cut) and a.keep_until == pytest.approx(cut) and a.keep_from is None
    assert b.start == pytest.approx(cut) and b.keep_from == pytest.approx(cut) and b.keep_until is None
    overlap = round(OVERLAP_S / FRAME_S)
    assert frames_of(a)[-1] == dip + overlap
    assert frames_of(b)[0] == dip + 1 - overlap
    assert b.audio_start == pytest.approx((dip + 1 - overlap) * FRAME_S)
    assert b.end == pytest.approx(260 * FRAME_S)


def test_words_are_kept_by_their_middle_on_their_own_side_of_a_cut() -> None:
    """A piece of a forced cut drops the words that belong to its neighbour; text and confidence follow."""
    words = (Word(" one", 0.0, 0.4, 0.9), Word(" two", 0.5, 0.9, 0.5), Word(" three", 1.0, 1.3, 0.7))
    rec = Recognition("one two three", words, "en", 0.7)
    assert kept_words(rec, 10.0, None, None) is rec
    before = kept_words(rec, 10.0, None, 10.75)  # "two" ends past the cut, its middle is before it
    assert before.text == "one two" and before.confidence == pytest.approx(0.7)
    after = kept_words(rec, 10.0, 10.75, None)
    assert after.text == "three" and [w.word for w in after.words] == [" three"]
    assert kept_words(rec, 10.0, 20.0, None).text == ""
