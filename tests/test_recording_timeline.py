"""The recording timeline (pure): placement, gaps, clearing, silencing before and after emission, bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.recording.ogg import crc, pages, plan_repair, with_eos
from bridge.recording.timeline import Timeline

RATE = 8000


def pcm(*values: int) -> bytes:
    return np.array(values, dtype="<i2").tobytes()


def ramp(n: int, start: int = 1) -> bytes:
    return np.arange(start, start + n, dtype="<i2").tobytes()


def channels(stereo: bytes) -> tuple[list[int], list[int]]:
    a = np.frombuffer(stereo, dtype="<i2")
    return a[0::2].tolist(), a[1::2].tolist()


def test_channels_are_placed_at_their_sample_offsets() -> None:
    t = Timeline(RATE)
    t.caller(pcm(1, 2, 3, 4), at=0)
    t.other(pcm(7, 8), at=2)
    assert channels(t.take(4)) == ([1, 2, 3, 4], [0, 0, 7, 8])
    assert t.taken == 4


def test_gaps_and_missing_audio_are_zeros() -> None:
    t = Timeline(RATE)
    t.caller(pcm(1, 2), at=0)
    t.caller(pcm(5, 6), at=4)  # a gap of two samples in the caller's audio
    left, right = channels(t.take(8))
    assert left == [1, 2, 0, 0, 5, 6, 0, 0]
    assert right == [0] * 8


def test_take_is_incremental_and_empty_when_nothing_new() -> None:
    t = Timeline(RATE)
    t.caller(ramp(10), at=0)
    first, second = t.take(4), t.take(10)
    assert channels(first)[0] == [1, 2, 3, 4]
    assert channels(second)[0] == [5, 6, 7, 8, 9, 10]
    assert t.take(10) == b"" and t.take(3) == b""


def test_output_is_interleaved_little_endian_int16() -> None:
    t = Timeline(RATE)
    t.caller(pcm(0x0102), at=0)
    t.other(pcm(-2), at=0)
    assert t.take(1) == b"\x02\x01\xfe\xff"


def test_later_write_wins_on_overlap() -> None:
    t = Timeline(RATE)
    t.other(pcm(1, 1, 1, 1), at=0)
    t.other(pcm(9, 9), at=1)
    assert channels(t.take(4))[1] == [1, 9, 9, 1]


def test_other_clear_drops_unemitted_playout_at_and_after_the_cut() -> None:
    t = Timeline(RATE)
    t.other(ramp(10), at=0)
    assert channels(t.take(3))[1] == [1, 2, 3]
    t.other_clear(6)  # barge-in: the caller never heard samples 6..9
    assert channels(t.take(10))[1] == [4, 5, 6, 0, 0, 0, 0]
    t.other(pcm(5, 5), at=12)  # the next playout lands after the cut
    assert channels(t.take(14))[1] == [0, 0, 5, 5]


def test_other_clear_before_the_taken_point_keeps_what_was_heard() -> None:
    t = Timeline(RATE)
    t.other(ramp(6), at=0)
    t.take(3)
    t.other_clear(1)
    assert channels(t.take(6))[1] == [0, 0, 0]


def test_silence_before_emission_mutes_both_channels_even_for_audio_arriving_later() -> None:
    t = Timeline(RATE)
    assert t.silence(2, 5) == []
    t.caller(ramp(8), at=0)
    t.other(ramp(8, 100), at=0)
    left, right = channels(t.take(8))
    assert left == [1, 2, 0, 0, 0, 6, 7, 8]
    assert right == [100, 101, 0, 0, 0, 105, 106, 107]
    assert t.late_silence_spans == 0


def test_silence_after_emission_is_returned_for_the_file_and_counted() -> None:
    t = Timeline(RATE)
    t.caller(ramp(10), at=0)
    t.take(6)
    assert t.silence(4, 8) == [(4, 6)]  # the emitted part, to patch in the file
    assert channels(t.take(10))[0] == [0, 0, 9, 10]  # the rest is muted here
    assert (t.late_silence_spans, t.late_silence_samples) == (1, 2)
    assert t.silence(0, 2) == [(0, 2)]
    assert t.silence(5, 5) == []


def test_mute_until_unmute_silences_both_channels() -> None:
    t = Timeline(RATE)
    t.caller(ramp(12), at=0)
    t.other(ramp(12, 50), at=0)
    assert t.mute(3) == []
    assert t.muted
    left, right = channels(t.take(6))
    assert left == [1, 2, 3, 0, 0, 0] and right == [50, 51, 52, 0, 0, 0]
    t.unmute(9)
    assert channels(t.take(12))[0] == [0, 0, 0, 10, 11, 12]
    t.caller(ramp(2, 20), at=12)
    assert channels(t.take(14))[0] == [20, 21]


def test_mute_reaching_back_into_emitted_audio_returns_the_span() -> None:
    t = Timeline(RATE)
    t.caller(ramp(10), at=0)
    t.take(5)
    assert t.mute(2) == [(2, 5)]
    assert t.mute(3) == []  # already muted
    t.unmute(7)
    assert channels(t.take(10))[0] == [0, 0, 8, 9, 10]


def test_settled_emission_keeps_the_settle_window_back() -> None:
    t = Timeline(RATE, settle_s=0.5)
    t.caller(ramp(8000), at=0)
    assert t.settled(3000) == 0
    assert len(t.take_settled(6000)) == 2000 * 4
    assert t.taken == 2000
    assert t.settled(1000) == 2000  # never backwards


def test_start_offset_for_a_continued_recording() -> None:
    t = Timeline(RATE, start=1000)
    t.caller(ramp(4), at=998)  # two samples before the start: late, counted
    assert channels(t.take(1002))[0] == [3, 4]
    assert t.late_samples == 2


def test_overflow_past_the_cap_is_dropped_and_counted() -> None:
    t = Timeline(RATE, max_buffered_s=0.001)  # 8 samples
    t.other(ramp(6), at=4)  # the last two would go past the cap
    t.other(ramp(3), at=20)  # entirely past it
    assert t.overflow_samples == 5
    assert t.dropped_samples == 5
    assert channels(t.take(8))[1] == [0, 0, 0, 0, 1, 2, 3, 4]
    assert t.buffered_samples == 0


def test_late_audio_is_counted_not_silently_lost() -> None:
    t = Timeline(RATE)
    t.take(4)
    t.caller(ramp(6), at=2)
    assert t.late_samples == 2
    assert channels(t.take(6))[0] == [3, 4]


def test_odd_byte_and_bad_rates() -> None:
    t = Timeline(16000)
    t.caller(pcm(5) + b"\x01", at=0)
    assert channels(t.take(1))[0] == [5]
    with pytest.raises(ValueError):
        Timeline(44100)
    with pytest.raises(ValueError):
        Timeline(RATE, settle_s=-1)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["caller", "other", "clear", "take", "silence"]), st.integers(0, 300)),
        max_size=40,
    )
)
def test_against_a_reference_model(ops: list[tuple[str, int]]) -> None:
    """Random interleavings agree with a plain array model of the same rules. A silence over audio already
    taken comes back as spans for the writer to patch in the file: applied here as the writer does."""
    size = 2000
    patched: list[tuple[int, int]] = []
    model = np.zeros((size, 2), dtype=np.int64)
    silent = np.zeros(size, dtype=bool)
    taken = 0
    out: list[bytes] = []
    t = Timeline(RATE, max_buffered_s=1.0)
    for n, (op, x) in enumerate(ops):
        if op in ("caller", "other"):
            ch = 0 if op == "caller" else 1
            at, length = x, 1 + n % 7
            data = np.arange(1 + n * 10, 1 + n * 10 + length)
            getattr(t, op)(data.astype("<i2").tobytes(), at)
            lo = max(at, taken)
            model[lo : at + length, ch] = data[lo - at :]
        elif op == "clear":
            t.other_clear(x)
            model[max(x, taken) :, 1] = 0
        elif op == "silence":
            patched += t.silence(x, x + 5)
            silent[x : x + 5] = True
        else:
            upto = max(taken, x)
            out.append(t.take(upto))
            taken = upto
    out.append(t.take(size))
    got = np.frombuffer(b"".join(out), dtype="<i2").reshape(-1, 2).copy()
    for lo, hi in patched:
        got[lo:hi] = 0
    want = model.copy()
    want[silent] = 0
    assert got.tolist() == want.tolist()


# -- Ogg page helpers (pure) ------------------------------------------------------------------------


def _page(serial: int, seq: int, flags: int, granule: int, body: bytes) -> bytes:
    import struct

    segs = [255] * (len(body) // 255) + [len(body) % 255]
    head = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, seq, 0, len(segs)) + bytes(segs)
    raw = bytearray(head + body)
    raw[22:26] = struct.pack("<I", crc(raw))
    return bytes(raw)


def test_ogg_crc_matches_the_reference_vector() -> None:
    # CRC-32/MPEG-2 without init or final xor over "123456789" (the bit-by-bit definition, computed here).
    def slow(data: bytes) -> int:
        reg = 0
        for byte in data:
            reg ^= byte << 24
            for _ in range(8):
                reg = ((reg << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if reg & 0x80000000 else (reg << 1) & 0xFFFFFFFF
        return reg

    for data in (b"123456789", bytes(range(256)) * 3, b""):
        assert crc(data) == slow(data)


def test_ogg_repair_plan_cuts_a_torn_page_and_sets_eos() -> None:
    import struct

    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, 8000, 0, 0)
    data = (
        _page(7, 0, 0x02, 0, head)
        + _page(7, 1, 0, 0, b"OpusTags" + bytes(8))
        + _page(7, 2, 0, 48312, b"a" * 300)
        + _page(7, 3, 0, 96312, b"b" * 100)
    )
    torn = data + _page(7, 4, 0, 144312, b"c" * 100)[:-10]
    plan = plan_repair(torn)
    assert plan.keep == len(data) and not plan.clean
    assert plan.last_page is not None and plan.last_page[5] & 0x04
    fixed = data[: plan.last_offset] + plan.last_page
    assert [p.sequence for p in pages(fixed)] == [0, 1, 2, 3]
    (link,) = plan_repair(fixed).links
    assert link.samples(8000) == 16000 and link.channels == 2 and link.audio_pages == 2
    assert plan_repair(fixed).clean
    corrupt = bytearray(fixed)
    corrupt[-5] ^= 0xFF  # a flipped byte in the last page: its CRC fails, the page goes
    assert plan_repair(corrupt).keep == pages(fixed)[-1].offset
    assert with_eos(fixed[pages(fixed)[-1].offset :]) == fixed[pages(fixed)[-1].offset :]
    assert plan_repair(b"").clean and plan_repair(b"junk").keep == 0
