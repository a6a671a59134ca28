"""Both parties as two channels: the interleaver, pure (no event loop).

The oracle is positional: every frame carries its own index in its samples, so where a frame lands
in the output (and what landed beside it on the other channel) is read back from the bytes alone.
"""

from __future__ import annotations

import random
import struct

import pytest

from bridge.audio import PCM16_8K, ULAW_8K, AudioFormat
from bridge.tracks import TrackInterleaver

FRAME = 160  # samples in 20 ms at 8 kHz


def pcm_frame(value: int, n: int = FRAME) -> bytes:
    return struct.pack(f"<{n}h", *([value] * n))


def channels(out: bytes, width: int = 2) -> tuple[list[int], list[int]]:
    """The two channels of interleaved 16-bit output, as sample lists."""
    if width == 1:
        return list(out[0::2]), list(out[1::2])
    samples = struct.unpack(f"<{len(out) // 2}h", out)
    return list(samples[0::2]), list(samples[1::2])


def test_two_tracks_are_interleaved_sample_by_sample() -> None:
    mux = TrackInterleaver(ULAW_8K)
    out = mux.push(0, b"\x01\x02\x03\x04")  # no timestamps: contiguous per track
    assert out == b""  # the other channel has nothing yet
    out = mux.push(1, b"\x11\x12\x13")
    assert out == bytes([1, 0x11, 2, 0x12, 3, 0x13])
    assert mux.flush() == bytes([4, 0xFF])  # the shorter track padded with mu-law silence

    pcm = TrackInterleaver(PCM16_8K)
    assert pcm.push(0, struct.pack("<2h", 100, -200)) == b""
    assert pcm.push(1, struct.pack("<2h", 300, -400)) == struct.pack("<4h", 100, 300, -200, -400)


def test_a_lost_frame_is_silence_in_its_place_and_the_other_channel_is_untouched() -> None:
    mux = TrackInterleaver(PCM16_8K)
    out = b""
    for k in range(1, 21):
        out += mux.push(0, pcm_frame(k), timestamp_ms=20 * k)
        if k not in (5, 6, 12):  # three frames of the second track never come
            out += mux.push(1, pcm_frame(1000 + k), timestamp_ms=20 * k)
    out += mux.flush()
    left, right = channels(out)
    assert len(left) == len(right) == 20 * FRAME
    assert left == [k for k in range(1, 21) for _ in range(FRAME)]
    assert right == [0 if k in (5, 6, 12) else 1000 + k for k in range(1, 21) for _ in range(FRAME)]
    assert mux.counters[1].silence == 3 * FRAME and mux.counters[1].dropped == 0


def test_frames_out_of_order_are_put_back_in_order() -> None:
    rng = random.Random(7)
    frames = [(track, k) for k in range(200) for track in (0, 1)]
    # Each message may arrive up to 4 places from where it was sent (Telnyx does not promise order).
    order = sorted(range(len(frames)), key=lambda i: i + rng.uniform(-4, 4))
    mux = TrackInterleaver(PCM16_8K)
    out = b"".join(
        mux.push(frames[i][0], pcm_frame(frames[i][1] + 1000 * frames[i][0]), 20.0 * frames[i][1]) for i in order
    )
    out += mux.flush()
    left, right = channels(out)
    assert left == [k for k in range(200) for _ in range(FRAME)]
    assert right == [1000 + k for k in range(200) for _ in range(FRAME)]
    assert all(c.silence == 0 and c.dropped == 0 for c in mux.counters)


def test_a_frame_that_comes_after_its_place_was_filled_is_dropped_and_counted() -> None:
    mux = TrackInterleaver(PCM16_8K, max_delay_ms=100)
    out = b""
    for k in range(30):
        out += mux.push(0, pcm_frame(1), 20.0 * k)
        if k != 3:
            out += mux.push(1, pcm_frame(2), 20.0 * k)
    out += mux.push(1, pcm_frame(9), 60.0)  # frame 3, 27 frames late: its place went out as silence
    out += mux.push(1, pcm_frame(2), 20.0 * 29)  # a repeat of audio the track has
    out += mux.flush()
    left, right = channels(out)
    assert len(left) == len(right) == 30 * FRAME and 9 not in right
    assert right[3 * FRAME : 4 * FRAME] == [0] * FRAME
    assert mux.counters[1].dropped == 2 * FRAME and mux.counters[1].silence == FRAME


def test_a_quiet_leg_does_not_hold_the_talking_one_back() -> None:
    """The second leg sends nothing for 5 s (on hold): the first reaches Gladia at most
    ``max_delay_ms`` late, and when the second comes back it lands at its own time."""
    mux = TrackInterleaver(ULAW_8K, max_delay_ms=300)
    emitted = 0
    for k in range(400):
        emitted += len(mux.push(0, bytes([k % 200]) * FRAME, 20.0 * k)) // 2
        if k < 50 or k >= 300:
            emitted += len(mux.push(1, b"\x07" * FRAME, 20.0 * k)) // 2
        assert (k + 1) * FRAME - emitted <= 300 * 8 + FRAME  # never more than the delay behind
    assert mux.counters[1].silence == 250 * FRAME  # exactly the 5 s it was away
    assert mux.counters[0].silence == 0


def test_a_thirty_minute_call_does_not_drift() -> None:
    """30 minutes of both tracks (90,000 frames each), arriving with jitter and timestamps that
    wobble by up to 2 ms: every frame of both tracks lands at its own place, so the channels are
    exactly aligned at the end as at the start, and no audio is lost, duplicated or invented."""
    rng = random.Random(30)
    n = 90_000
    mux = TrackInterleaver(ULAW_8K)
    out = bytearray()
    late: list[tuple[int, int]] = []  # a message of track 1 held back a few frames, now and then
    for k in range(n):
        value = k % 251
        out += mux.push(0, bytes([value]) * FRAME, 20.0 * k + rng.uniform(-2, 2))
        frame1 = (1, k)
        if rng.random() < 0.05:
            late.append(frame1)
        else:
            out += mux.push(1, bytes([value]) * FRAME, 20.0 * k + rng.uniform(-2, 2))
        while late and (rng.random() < 0.5 or k - late[0][1] > 4):
            _, j = late.pop(0)
            out += mux.push(1, bytes([j % 251]) * FRAME, 20.0 * j + rng.uniform(-2, 2))
    for _, j in late:
        out += mux.push(1, bytes([j % 251]) * FRAME, 20.0 * j)
    out += mux.flush()
    left, right = channels(bytes(out), width=1)
    assert len(left) == len(right) == n * FRAME
    assert left == right  # both tracks carry the frame index: equal everywhere means aligned
    assert left[::FRAME] == [k % 251 for k in range(n)]
    assert all(c.silence == 0 and c.dropped == 0 and c.jumps == 0 for c in mux.counters)


def test_a_clock_jump_is_a_discontinuity_not_an_hour_of_silence() -> None:
    mux = TrackInterleaver(ULAW_8K)
    out = b""
    for k in range(10):
        out += mux.push(0, b"\x01" * FRAME, 20.0 * k) + mux.push(1, b"\x02" * FRAME, 20.0 * k)
    for k in range(10):  # both legs' timestamps jump an hour ahead
        t = 3_600_000 + 20.0 * k
        out += mux.push(0, b"\x03" * FRAME, t) + mux.push(1, b"\x04" * FRAME, t)
    out += mux.flush()
    left, right = channels(out, width=1)
    assert len(left) == 20 * FRAME  # no invented hour
    assert left == [1] * (10 * FRAME) + [3] * (10 * FRAME) and right == [2] * (10 * FRAME) + [4] * (10 * FRAME)
    assert [c.jumps for c in mux.counters] == [1, 1]


def test_a_leg_whose_clock_starts_when_it_joins_is_placed_where_it_arrives() -> None:
    """The second leg joins 5 s into the call with its own timestamps from zero: it is not dropped
    as 5 s late for the rest of the call, it lands where it arrives (within the delay)."""
    mux = TrackInterleaver(ULAW_8K, max_delay_ms=300)
    out = b""
    for k in range(500):
        out += mux.push(0, b"\x01" * FRAME, 20.0 * k)
        if k >= 250:
            out += mux.push(1, b"\x02" * FRAME, 20.0 * (k - 250))
    out += mux.flush()
    _, right = channels(out, width=1)
    first = right.index(2)
    assert abs(first - 250 * FRAME) <= 300 * 8  # where it arrived, give or take the delay
    assert right[first:].count(2) == 250 * FRAME and mux.counters[1].dropped == 0
    assert mux.counters[1].jumps == 1


def test_half_samples_and_stereo_formats_are_refused_or_trimmed() -> None:
    mux = TrackInterleaver(PCM16_8K)
    assert mux.push(0, b"\x01") == b""  # less than a sample
    assert mux.push(0, b"\x01\x00\x02") + mux.push(1, b"\x05\x00") == struct.pack("<2h", 1, 5)
    with pytest.raises(ValueError):
        TrackInterleaver(AudioFormat("pcm16", 8000, channels=2))
