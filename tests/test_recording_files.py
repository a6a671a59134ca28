"""Recording files read back by independent decoders (sox, ffmpeg, Python's wave): WAV exactly, Opus by
correlation; crash repair, continuing a recording, silencing in place; the writer thread end to end."""

from __future__ import annotations

import asyncio
import shutil
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.recording import formats, ogg
from bridge.recording.timeline import Timeline
from bridge.recording.writer import RecordingWriter
from tests.support.recording_oracle import Reply, decode, ramp_signal, similarity, soxi, speech


def write_in_pieces(f: formats.RecordingFile, audio: np.ndarray, piece: int = 1600) -> None:
    for i in range(0, len(audio), piece):
        f.write(audio[i : i + piece].tobytes())


@pytest.mark.parametrize("rate", [8000, 16000])
def test_wav_reads_back_exactly_in_sox_ffmpeg_and_wave(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "call.wav"
    audio = ramp_signal(0, 3 * rate)
    f = formats.WavFile.open(path, rate)
    write_in_pieces(f, audio[:rate])
    f.flush()  # a reader in the middle of the call sees everything so far
    assert np.array_equal(decode(path, rate, "sox"), audio[:rate])
    write_in_pieces(f, audio[rate:])
    f.close()
    assert f.frames == 3 * rate and path.stat().st_size == 44 + 3 * rate * 4
    for tool in ("sox", "ffmpeg"):
        assert np.array_equal(decode(path, rate, tool), audio), tool
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (rate, 2, 2)
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2), audio)
    assert soxi(path, "-r") == str(rate)  # 8 kHz stays 8 kHz on disk


@pytest.mark.parametrize("rate", [8000, 16000])
def test_opus_decodes_in_ffmpeg_at_its_length_and_correlates(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "call.opus"
    audio = speech(12, rate)
    f = formats.OpusFile.open(path, rate)
    write_in_pieces(f, audio, piece=rate // 5)
    f.close()
    decoded = decode(path, rate, "ffmpeg")
    assert len(decoded) == len(audio)
    for corr, lag in similarity(audio, decoded, max_lag=rate // 250):  # within 4 ms
        assert corr > 0.9 and abs(lag) <= rate // 500
    data = path.read_bytes()
    (link,) = ogg.links(data, ogg.pages(data))
    assert (link.input_rate, link.channels) == (rate, 2)  # encoded from 8 kHz, not upsampled first
    assert ogg.plan_repair(data).clean  # every page whole, EOS on the last


def test_soundfile_bundles_ogg_opus() -> None:
    import soundfile  # type: ignore[import-untyped]

    assert "OGG" in soundfile.available_formats()
    assert "OPUS" in soundfile.available_subtypes("OGG")


@pytest.mark.parametrize("fmt", ["wav", "opus"])
def test_a_crashed_file_is_repaired_with_everything_up_to_its_last_flush(tmp_path: Path, fmt: str) -> None:
    """The file as a SIGKILL leaves it (copied while open, after a flush and further unflushed writes,
    with half a page or frame torn off), repaired, reads back in sox and ffmpeg."""
    rate, path = 8000, tmp_path / f"call.{fmt}"
    audio = ramp_signal(0, 10 * rate) if fmt == "wav" else speech(10)
    f = formats.open_recording(path, fmt, rate)
    write_in_pieces(f, audio[: 6 * rate])
    f.flush()
    write_in_pieces(f, audio[6 * rate : 8 * rate])  # after the last flush
    crashed = tmp_path / f"crashed.{fmt}"
    shutil.copy(path, crashed)
    with open(crashed, "ab") as torn:
        torn.write(b"OggS\0\0\0\0\0\0\0" if fmt == "opus" else b"\1\2\3")  # a write cut short
    f.close()
    repaired = formats.repair(crashed)
    assert not repaired.was_clean and repaired.cut_bytes > 0
    assert repaired.frames >= 6 * rate - (rate + rate // 50 if fmt == "opus" else 0)  # Opus: 1 s pages
    assert formats.repair(crashed).was_clean  # idempotent
    for tool in ("sox", "ffmpeg") if fmt == "wav" else ("ffmpeg",):
        decoded = decode(crashed, rate, tool)
        assert len(decoded) == repaired.frames
        if fmt == "wav":
            assert np.array_equal(decoded, audio[: len(decoded)])
        else:
            assert min(c for c, _ in similarity(audio, decoded, 32)) > 0.9


@pytest.mark.parametrize("fmt", ["wav", "opus"])
def test_a_recording_continues_in_the_same_file(tmp_path: Path, fmt: str) -> None:
    """A call that moved: the new owner opens the same path and appends (Opus: a chained Ogg link)."""
    rate, path = 8000, tmp_path / f"call.{fmt}"
    audio = ramp_signal(0, 6 * rate) if fmt == "wav" else speech(9)
    cut = 4 * rate
    first = formats.open_recording(path, fmt, rate)
    write_in_pieces(first, audio[:cut])
    first.flush()
    first.abandon() if fmt == "opus" else first.close()  # Opus: the first owner died (no EOS)
    second = formats.open_recording(path, fmt, rate)
    # Opus: what the dead owner's encoder held (a page is written each second of audio) is lost.
    assert cut - (rate + rate // 20 if fmt == "opus" else 0) <= second.frames <= cut
    write_in_pieces(second, audio[second.frames :])
    second.close()
    assert second.frames == len(audio)
    decoded = decode(path, rate, "ffmpeg")
    assert len(decoded) == len(audio)
    if fmt == "wav":
        assert np.array_equal(decoded, audio) and np.array_equal(decode(path, rate, "sox"), audio)
    else:
        data = path.read_bytes()
        assert len(ogg.links(data, ogg.pages(data))) == 2 and ogg.plan_repair(data).clean
        assert min(c for c, _ in similarity(audio, decoded, 32)) > 0.85


def test_a_recording_at_another_rate_or_format_is_not_continued_nor_touched(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    f = formats.WavFile.open(path, 8000)
    f.write(bytes(400))
    f.close()
    before = path.read_bytes()
    with pytest.raises(ValueError):
        formats.WavFile.open(path, 16000)
    with pytest.raises(ValueError):
        formats.OpusFile.open(path, 8000)  # a WAV where an Opus recording was expected
    with pytest.raises(ValueError):
        formats.open_recording(path, "mp3", 8000)
    (tmp_path / "short.wav").write_bytes(b"hello")
    with pytest.raises(ValueError):
        formats.repair(tmp_path / "short.wav")
    assert path.read_bytes() == before and (tmp_path / "short.wav").read_bytes() == b"hello"


async def test_on_change_and_on_closed_are_called_on_the_loop_when_given_one(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    changed: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
    w = RecordingWriter(
        max_queued_bytes=100, on_change=lambda s, r: changed.put_nowait((s, r, threading.get_ident())), loop=loop
    )
    w.start()
    w.open("c", tmp_path / "c.wav", "wav", 8000)
    assert not w.append("c", bytes(400))  # over the bound: refused at once
    assert await asyncio.wait_for(changed.get(), 10) == ("degraded", "queue full", threading.get_ident())
    closed: asyncio.Future[dict[str, Any]] = loop.create_future()
    w.close("c", closed.set_result)
    assert (await asyncio.wait_for(closed, 10))["duration_s"] == 0.0125  # the refused audio, as silence
    assert (await asyncio.wait_for(changed.get(), 10))[:2] == ("ok", "recovered")
    await asyncio.to_thread(w.stop)


def test_wav_silence_is_patched_in_place_and_opus_says_it_cannot(tmp_path: Path) -> None:
    rate = 8000
    audio = ramp_signal(0, 2 * rate)
    wav = formats.WavFile.open(tmp_path / "a.wav", rate)
    wav.write(audio.tobytes())
    assert wav.patch_silence(1000, 3000)
    assert wav.patch_silence(15000, 99999)  # clipped to the file
    wav.close()
    want = audio.copy()
    want[1000:3000] = 0
    want[15000:] = 0
    assert np.array_equal(decode(tmp_path / "a.wav", rate, "sox"), want)
    opus = formats.OpusFile.open(tmp_path / "a.opus", rate)
    opus.write(audio.tobytes())
    assert opus.patch_silence(0, 10) is False
    opus.close()


def test_bytes_per_call_minute(tmp_path: Path) -> None:
    """The disk figures in the docs: WAV is 8000 x 2 x 2 bytes a second; Opus (speech, 12 kb/s a
    channel) well under a tenth of it."""
    rate, audio = 8000, speech()
    sizes = {}
    for fmt in ("wav", "opus"):
        f = formats.open_recording(tmp_path / f"m.{fmt}", fmt, rate)
        write_in_pieces(f, audio, piece=rate)
        f.close()
        sizes[fmt] = f.size / (len(audio) / rate / 60)
    assert sizes["wav"] == pytest.approx(rate * 4 * 60, rel=0.001)
    assert 60_000 < sizes["opus"] < sizes["wav"] / 10


# -- the writer thread ---------------------------------------------------------------------------------


def run_writer(**kw: Any) -> tuple[RecordingWriter, list[tuple[str, str]]]:
    changes: list[tuple[str, str]] = []
    w = RecordingWriter(on_change=lambda s, r: changes.append((s, r)), **kw)
    w.start()
    return w, changes


def closed_info(w: RecordingWriter, call_id: str) -> dict[str, Any]:
    reply: Reply[dict[str, Any]] = Reply()
    w.close(call_id, reply)
    return reply.wait()


@pytest.mark.timeout(60)
def test_writer_records_a_call_from_the_timeline(tmp_path: Path) -> None:
    """Caller audio, playout placed on its clock and partly cleared, a late silence patched in the file."""
    rate = 8000
    w, changes = run_writer(flush_s=0.05)
    path = tmp_path / "c1.wav"
    w.open("c1", path, "wav", rate)
    t = Timeline(rate, settle_s=0.2)
    caller = ramp_signal(0, 3 * rate)[:, 0]
    bot = ramp_signal(0, 3 * rate)[:, 1]
    t.other(bot[:rate].tobytes(), at=rate // 2)  # the bot's reply, ahead of time
    for now in range(800, 3 * rate + 1, 800):  # 100 ms of the caller at a time
        t.caller(caller[now - 800 : now].tobytes(), at=now - 800)
        if now == rate:
            t.other_clear(rate + 400)  # barge-in: what was not heard goes
        if now == 2 * rate:
            for start, end in t.silence(100, 300):  # e.g. a redaction, already written
                w.silence("c1", start, end)
        w.append("c1", t.take_settled(now))
    w.append("c1", t.take(3 * rate))
    info = closed_info(w, "c1")
    w.stop()
    assert info["duration_s"] == 3.0 and info["format"] == "wav" and info["channels"] == 2
    assert info["bytes"] == path.stat().st_size == 44 + 3 * rate * 4
    assert info["dropped_bytes"] == 0 and not info["degraded"] and info["unpatched_spans"] == []
    want = np.zeros((3 * rate, 2), dtype="<i2")
    want[:, 0] = caller
    want[rate // 2 : rate + 400, 1] = bot[: rate // 2 + 400]
    want[100:300] = 0
    assert np.array_equal(decode(path, rate, "sox"), want)
    assert changes == [] and w.status().state == "ok"


@pytest.mark.timeout(60)
def test_writer_reports_opus_silence_it_could_not_patch(tmp_path: Path) -> None:
    w, _ = run_writer()
    w.open("c", tmp_path / "c.opus", "opus", 8000)
    w.append("c", speech(2).tobytes())
    w.silence("c", 100, 200)
    info = closed_info(w, "c")
    assert info["unpatched_spans"] == [(100, 200)] and w.status().unpatched_silence_spans == 1
    w.stop()
    assert len(decode(tmp_path / "c.opus", 8000, "ffmpeg")) == 16000


@pytest.mark.timeout(60)
def test_a_full_queue_drops_appends_counts_them_and_keeps_time(tmp_path: Path) -> None:
    """The queue refuses audio beyond its bound (the call goes on); what was refused is silence of the
    right length in the file, counted, and reported as one degraded change and one recovery."""
    w, changes = run_writer(max_queued_bytes=8000 * 4)
    w.open("c", tmp_path / "c.wav", "wav", 8000)
    second = ramp_signal(0, 8000).tobytes()
    with w._cond:  # hold the writer thread's lock: it cannot drain while we append, like a stuck disk
        results = [w.append("c", second) for _ in range(3)]
        status = w.status()
    assert results == [True, False, False]
    assert status.state == "degraded" and status.reason == "queue full" and status.dropped_bytes == 64000
    info = closed_info(w, "c")
    assert info["duration_s"] == 3.0 and info["dropped_bytes"] == 0  # the queue's drops are the writer's
    decoded = decode(tmp_path / "c.wav", 8000, "ffmpeg")
    assert np.array_equal(decoded[:8000], ramp_signal(0, 8000)) and not decoded[8000:].any()
    for _ in range(100):
        if w.status().state == "ok":
            break
        threading.Event().wait(0.05)
    w.stop()
    assert changes == [("degraded", "queue full"), ("ok", "recovered")]


@pytest.mark.timeout(60)
def test_recover_closes_files_left_by_a_killed_bridge(tmp_path: Path) -> None:
    for fmt in ("wav", "opus"):
        f = formats.open_recording(tmp_path / f"old.{fmt}", fmt, 8000)
        write_in_pieces(f, speech(1))
        f.flush()
        write_in_pieces(f, speech(2))  # WAV: the header does not say these frames are there
        f.abandon() if fmt == "opus" else None
    (tmp_path / "notes.txt").write_text("not a recording")
    w, _ = run_writer()
    reply: Reply[list[str]] = Reply()
    w.recover(tmp_path, reply)
    repaired = reply.wait()
    w.stop()
    assert sorted(Path(p).name for p in repaired) == ["old.opus", "old.wav"]
    assert len(decode(tmp_path / "old.wav", 8000, "sox")) == 24000
    assert ogg.plan_repair((tmp_path / "old.opus").read_bytes()).clean
