"""The playout clock, without an event loop: pacing with a lead, marks, clear accounting, pause and
resume, heard text, hang-up after playback. Time is a number the test moves."""

from __future__ import annotations

from typing import Any

from bridge.reply.playout import (
    BotMarkPlayed,
    HangupNow,
    Output,
    PlaybackFinished,
    PlaybackInterrupted,
    PlaybackStarted,
    Playout,
    Segment,
    SendAudio,
    SendClear,
    SendMark,
    WordTime,
)


def ulaw(**options: Any) -> Playout:
    """A playout for 8 kHz mu-law (8 bytes a millisecond, 20 ms frames)."""
    return Playout(bytes_per_ms=8.0, frame_bytes=160, silence_byte=0xFF, **options)


def tone(ms: int, byte: int = 0x11) -> bytes:
    return bytes([byte]) * (ms * 8)


def sent(out: list[Output]) -> bytes:
    return b"".join(o.data for o in out if isinstance(o, SendAudio))


def marks(out: list[Output]) -> list[str]:
    return [o.name for o in out if isinstance(o, SendMark)]


def run(p: Playout, until: float, step: float = 0.02, start: float = 0.0) -> tuple[list[Output], float]:
    out: list[Output] = []
    t = start
    while t < until - 1e-9:
        t = round(t + step, 6)
        out += p.tick(t)
    return out, t


def test_audio_is_paced_at_real_time_with_the_lead_and_a_mark_after_each_sentence() -> None:
    p = ulaw(lead_ms=300, chunk_ms=100)
    out = p.add(Segment("a1", tone(1000)), now=0.0)
    assert isinstance(out[0], PlaybackStarted) and len(sent(out)) == 300 * 8  # the lead, at once
    total = len(sent(out))
    t = 0.0
    while t < 1.0:
        t = round(t + 0.02, 6)
        step = p.tick(t)
        total += len(sent(step))
        ahead_ms = total / 8 - t * 1000
        assert ahead_ms <= 300 + 1e-6 and (total == 8000 or ahead_ms > 300 - 100 - 1e-6), (t, ahead_ms)
        assert all(len(o.data) % 160 == 0 for o in step if isinstance(o, SendAudio))
        if total == 8000:
            assert marks(step) == ["b1"]
            break
    assert round(t, 2) == 0.7  # the last chunk left 300 ms before the audio ends
    assert p.playing  # sent, not yet confirmed


def test_the_mark_echo_finishes_the_action_and_sets_the_clock() -> None:
    p = ulaw()
    out = p.add(Segment("a1", tone(500)), now=0.0)
    out += p.add(Segment("a2", tone(500)), now=0.0)
    more, _ = run(p, 0.56)
    out += more
    assert marks(out) == ["b1"] and len(sent(out)) == 800 * 8
    # the carrier played a1 80 ms later than the clock thought (a jitter buffer): its clock wins
    out = p.mark_reached("b1", now=0.58)
    assert out[0] == PlaybackFinished("a1", 500) and round(p.heard_ms(0.58), 6) == 500.0
    out, _ = run(p, 0.8, start=0.58)
    assert marks(out) == ["b2"] and round(p.heard_ms(0.8), 6) == 720.0
    out = p.mark_reached("b2", now=1.08)
    assert out == [PlaybackFinished("a2", 500)] and not p.playing


def test_pause_clears_at_most_the_lead_and_resume_plays_on_from_what_was_heard() -> None:
    p = ulaw(lead_ms=300, chunk_ms=100)
    audio = bytes(range(256)) * 31 + bytes(64)  # 8000 bytes, every byte distinct in place
    before = p.add(Segment("a1", audio), now=0.0)
    more, _ = run(p, 0.5)
    before += more
    paused = p.pause(now=0.5)
    assert paused == [SendClear()] and p.paused
    assert p.counters.cleared_bytes <= (300 + 100) * 8 and p.counters.cleared_bytes == len(sent(before)) - 4000
    assert run(p, 1.5, start=0.5)[0] == []  # nothing while paused
    after = p.resume(now=1.5)
    rest, t = run(p, 3.0, start=1.5)
    after += rest
    # what the caller hears: the first 500 ms, then from there on, nothing lost or repeated
    assert sent(before)[:4000] + sent(after) == audio
    done = p.mark_reached(marks(after)[-1], now=t)
    assert PlaybackFinished("a1", 1000) in done


def test_an_interruption_reports_whole_sentences_and_the_share_of_the_cut_one() -> None:
    p = ulaw()
    p.add(Segment("a1", tone(1000), text="Your balance is ten dollars.", last=False), now=0.0)
    p.add(Segment("a1", tone(1000), text="Would you like to hear the last four payments?"), now=0.0)
    p.add(Segment("a2", tone(1000), text="Goodbye."), now=0.0)
    out = p.tick(0.0) + run(p, 1.0)[0]
    p.mark_reached("b1", now=1.0)
    run(p, 1.5, start=1.0)
    out = p.interrupt(now=1.5, reason="speech")
    assert out[0] == SendClear()
    ended = [o for o in out if isinstance(o, PlaybackInterrupted)]
    assert ended == [
        PlaybackInterrupted("a1", 1500, "Your balance is ten dollars. Would you like to", "speech"),
        PlaybackInterrupted("a2", 0, "", "speech"),  # queued, never started
    ]
    assert not p.playing


def test_word_times_make_the_cut_sentence_exact() -> None:
    p = ulaw()
    words = (
        WordTime("Press", 0.0, 0.3),
        WordTime("one", 0.35, 0.6),
        WordTime("for", 0.62, 0.75),
        WordTime("sales.", 0.8, 1.2),
    )
    p.add(Segment("a1", tone(1300), text="Press one for sales.", words=words), now=0.0)
    run(p, 0.7)
    (ended,) = [
        o for o in p.interrupt(now=0.7, reason="dtmf", only_interruptible=False) if isinstance(o, PlaybackInterrupted)
    ]
    assert ended.heard_text == "Press one" and ended.played_ms == 700


def test_a_false_interruption_keeps_the_whole_sentence_text() -> None:
    p = ulaw()
    p.add(Segment("a1", tone(1000), text="one two three four"), now=0.0)
    run(p, 0.5)
    p.pause(now=0.5)
    p.resume(now=1.0)
    out, t = run(p, 2.0, start=1.0)
    (finished,) = [o for o in p.mark_reached(marks(out)[-1], now=t) if isinstance(o, PlaybackFinished)]
    assert finished == PlaybackFinished("a1", 1000)
    p.add(Segment("a2", tone(1000), text="five six"), now=t)
    out, _ = run(p, t + 0.5, start=t)
    (ended,) = [o for o in p.interrupt(now=t + 0.5, reason="stop") if isinstance(o, PlaybackInterrupted)]
    assert ended.heard_text == "five"


def test_audio_that_may_not_be_interrupted_survives_barge_in_but_not_a_stop() -> None:
    p = ulaw()
    p.add(Segment("legal", tone(1000), text="This call is recorded.", interrupt="none"), now=0.0)
    run(p, 0.3)
    out = p.interrupt(now=0.3, reason="speech")
    assert not [o for o in out if isinstance(o, PlaybackInterrupted)] and p.current_action == "legal"
    out = p.interrupt(now=0.4, reason="stop")
    assert [o.action_id for o in out if isinstance(o, PlaybackInterrupted)] == ["legal"]


def test_a_mark_echoed_after_a_clear_means_cleared_not_played() -> None:
    p = ulaw()
    out = p.add(Segment("a1", tone(200), text="Hi."), now=0.0)
    out += p.add(Segment("a2", tone(1000), text="How can I help?"), now=0.0)
    assert marks(out) == ["b1"]
    p.pause(now=0.1)  # a1 was not heard to the end: its mark is cleared
    assert p.mark_reached("b1", now=0.12) == []  # Twilio echoes marks on clear
    out = p.resume(now=0.5)
    assert sent(out)[:800] == tone(100)  # a1 plays on from 100 ms
    assert not any(isinstance(o, PlaybackFinished) for o in out)


def test_hangup_after_playback_waits_for_the_last_mark_not_a_timer() -> None:
    p = ulaw()
    p.add(Segment("bye", tone(1000), text="Goodbye."), now=0.0)
    assert p.hangup_after_playback(now=0.0) == []  # nothing new to send, nothing to hang up yet
    out, _ = run(p, 3.0)  # far past the clock's end: still waiting for the carrier
    assert not any(isinstance(o, HangupNow) for o in out)
    out = p.mark_reached(marks(out)[0], now=3.0)
    assert out[-1] == HangupNow() and PlaybackFinished("bye", 1000) in out


def test_without_marks_the_clock_confirms_and_a_lost_mark_has_a_bound() -> None:
    fork = ulaw(marks=False)
    fork.add(Segment("bye", tone(1000)), now=0.0)
    fork.hangup_after_playback(now=0.0)
    out, _ = run(fork, 0.98)
    assert not any(isinstance(o, HangupNow) for o in out) and not marks(out)
    out, _ = run(fork, 1.02, start=0.98)
    assert PlaybackFinished("bye", 1000) in out and HangupNow() in out
    lossy = ulaw(mark_grace=2.0)
    lossy.add(Segment("bye", tone(1000)), now=0.0)
    out, _ = run(lossy, 2.98)
    assert not any(isinstance(o, PlaybackFinished) for o in out)
    out, _ = run(lossy, 3.02, start=2.98)
    assert PlaybackFinished("bye", 1000) in out and lossy.counters.missing_marks == 1


def test_bot_marks_are_reached_in_order_with_the_audio() -> None:
    p = ulaw()
    p.add(Segment("a1", tone(500)), now=0.0)
    p.add(Segment("m1", b"", bot_mark="menu-read"), now=0.0)
    out, _ = run(p, 0.3)
    assert marks(out) == ["b1", "b2"]
    assert p.mark_reached("b1", now=0.5) == [PlaybackFinished("a1", 500)]
    assert p.mark_reached("b2", now=0.5) == [BotMarkPlayed("menu-read")]


def test_the_carriers_smallest_message_is_respected() -> None:
    """Exotel: at least 3.2 kB, in multiples of 320 bytes (16-bit PCM at 8 kHz: 16 bytes a ms)."""
    p = Playout(bytes_per_ms=16.0, frame_bytes=320, silence_byte=0, min_bytes=3200, chunk_ms=100)
    out = p.add(Segment("a1", bytes(16 * 250)), now=0.0)  # 250 ms: not a multiple of 100 ms
    out += run(p, 1.0)[0]
    sizes = [len(o.data) for o in out if isinstance(o, SendAudio)]
    assert all(n >= 3200 and n % 320 == 0 for n in sizes) and sum(sizes) == 4160  # padded to whole frames
    short = Playout(bytes_per_ms=16.0, frame_bytes=320, silence_byte=0, min_bytes=3200)
    assert [len(o.data) for o in short.add(Segment("a", bytes(100)), 0.0) if isinstance(o, SendAudio)] == [3200]


def test_an_action_whose_audio_comes_late_counts_an_underrun() -> None:
    p = ulaw()
    p.add(Segment("a1", tone(300), text="First.", last=False), now=0.0)
    run(p, 0.5)  # the TTS is slow: nothing more for 200 ms after the audio ran out
    p.add(Segment("a1", tone(300), text="Second."), now=0.5)
    assert p.counters.underruns == 1
    q = ulaw()
    q.add(Segment("a1", tone(300), last=False), now=0.0)
    q.add(Segment("a1", tone(300)), now=0.1)  # in time
    assert q.counters.underruns == 0


def test_marks_that_never_come_back_are_not_hoarded() -> None:
    """Plivo sends no checkpoint echo after a clear: a long call of barge-ins keeps a bounded memory."""
    p = ulaw()
    t = 0.0
    for _ in range(400):
        p.add(Segment("a", tone(100), text="Hi."), now=t)
        p.add(Segment("b", tone(1000), text="More."), now=t)
        t += 0.2
        p.tick(t)
        p.interrupt(t, "stop")  # the marks sent so far will never be echoed
    assert len(p._cleared_marks) <= 256
