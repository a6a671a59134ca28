"""Ogg/Opus recordings encoded by the system's libopus (:mod:`bridge.recording.opus_file`), read back by
ffmpeg (an independent decoder) and by soundfile (libsndfile's): channels, length, RFC 7845 headers,
crash repair at any byte, continued files as chained streams."""

from __future__ import annotations

import itertools
import random
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile  # type: ignore[import-untyped]  # no stubs, no py.typed (0.14)

from bridge.recording import formats, ogg, opus_encoder
from bridge.recording.opus_file import LibopusFile
from tests.support.recording_oracle import decode, speech

if opus_encoder.version() is None:  # pragma: no cover - the Dockerfile and .ci/run install libopus0
    pytest.skip("libopus not installed (apt-get install libopus0)", allow_module_level=True)

RATE = 8000


def tones(frames: int, rate: int = RATE, start: int = 0) -> np.ndarray:
    """1 kHz on channel 0 (the caller), 400 Hz on channel 1 (the bot), as (frames, 2) int16."""
    t = np.arange(start, start + frames) / rate
    return np.stack([8000 * np.sin(2 * np.pi * 1000 * t), 8000 * np.sin(2 * np.pi * 400 * t)], 1).astype("<i2")


def write(f: formats.RecordingFile, audio: np.ndarray, piece: int = 1234) -> None:
    for i in range(0, len(audio), piece):  # pieces that are not whole 20 ms frames
        f.write(audio[i : i + piece].tobytes())


def record(path: Path, audio: np.ndarray, rate: int = RATE) -> formats.RecordingFile:
    f = formats.open_recording(path, "opus", rate)
    write(f, audio)
    f.close()
    return f


def dominant_hz(channel: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(channel.astype(float) * np.hanning(len(channel))))
    return float(np.fft.rfftfreq(len(channel), 1 / rate)[int(np.argmax(spectrum))])


def level_db(channel: np.ndarray, rate: int, hz: float) -> float:
    """The spectrum's level at ``hz`` (dB, arbitrary reference)."""
    spectrum = np.abs(np.fft.rfft(channel.astype(float) * np.hanning(len(channel))))
    return float(20 * np.log10(spectrum[round(hz * len(channel) / rate)] + 1e-9))


def assert_tones(decoded: np.ndarray, rate: int) -> None:
    """Each tone dominates its own channel. Coupled stereo Opus at 12 kb/s a channel lets some of a pure
    tone through to the other channel (14 to 38 dB down; libsndfile's complexity 10 about 25 dB): speech,
    the real content, is held to a tighter bound below."""
    middle = decoded[rate // 2 : -rate // 2]
    assert dominant_hz(middle[:, 0], rate) == pytest.approx(1000, abs=5)
    assert dominant_hz(middle[:, 1], rate) == pytest.approx(400, abs=5)
    assert level_db(middle[:, 0], rate, 400) < level_db(middle[:, 0], rate, 1000) - 10
    assert level_db(middle[:, 1], rate, 1000) < level_db(middle[:, 1], rate, 400) - 10


def test_libopus_is_the_opus_encoder() -> None:
    assert opus_encoder.version() == formats.OPUS_ENCODER
    assert formats.OPUS_ENCODER is not None and formats.OPUS_ENCODER.startswith("libopus 1.")


@pytest.mark.parametrize("rate", [8000, 16000])
def test_tones_come_back_on_their_channels_at_the_length_written(tmp_path: Path, rate: int) -> None:
    """ffmpeg and soundfile both decode the file; each tone is on its channel; the length is what was
    written (the last page's granule trims the encoder's padding)."""
    path = tmp_path / "call.opus"
    audio = tones(3 * rate + 77, rate)  # not a whole number of 20 ms frames
    f = record(path, audio, rate)
    assert isinstance(f, LibopusFile) and f.frames == len(audio)
    by_ffmpeg = decode(path, rate, "ffmpeg")
    by_soundfile, read_rate = soundfile.read(path, dtype="int16", always_2d=True)
    assert read_rate == rate  # the input rate from OpusHead: 8 kHz stays 8 kHz
    for decoded in (by_ffmpeg, by_soundfile):
        assert abs(len(decoded) - len(audio)) <= rate // 50  # within one 20 ms frame
        assert_tones(decoded, rate)
    assert len(by_ffmpeg) == len(audio)  # in fact exact
    assert formats.repair(path).was_clean and formats.repair(path).frames == len(audio)


def test_two_people_talking_at_once_stay_on_their_own_channels(tmp_path: Path) -> None:
    """Two stretches of the shipped call's speech, one a channel, overlapping: each decoded channel holds
    at most a trace of the other party (its least-squares share 25 dB down; 33 and 37 dB measured
    with libopus 1.3.1)."""
    path = tmp_path / "call.opus"
    talk = speech()
    caller, other = talk[: 15 * RATE, 0], talk[15 * RATE : 30 * RATE, 1]
    record(path, np.stack([caller, other], 1))
    decoded = decode(path, RATE, "ffmpeg").astype(float)
    for channel, intruder in ((0, other), (1, caller)):
        share = (decoded[:, channel] @ intruder) / (intruder.astype(float) @ intruder)
        assert 20 * np.log10(abs(share)) < -25, channel


def test_opus_head_and_tags_follow_rfc_7845(tmp_path: Path) -> None:
    path = tmp_path / "call.opus"
    f = record(path, tones(2 * RATE))
    data = path.read_bytes()
    found = ogg.pages(data)
    head = data[found[0].body_offset : found[0].end]
    magic, version, channels, pre_skip, input_rate, gain, family = struct.unpack("<8sBBHIhB", head)
    lookahead = opus_encoder.OpusEncoder(RATE, 2, bitrate=24000).lookahead
    assert (magic, version, channels, input_rate, gain, family) == (b"OpusHead", 1, 2, 8000, 0, 0)
    assert pre_skip == lookahead * 6  # 8 kHz samples to 48 kHz ones
    assert found[0].flags == ogg.FLAG_BOS and found[0].granule == 0 and len(head) == 19
    tags = data[found[1].body_offset : found[1].end]
    vendor_length = struct.unpack_from("<I", tags, 8)[0]
    assert tags[:8] == b"OpusTags" and tags[12 : 12 + vendor_length] == formats.OPUS_ENCODER.encode()
    assert found[1].granule == 0 and found[1].flags == 0
    audio_pages = found[2:]
    assert [p.sequence for p in found] == list(range(len(found)))
    assert len({p.serial for p in found}) == 1
    assert all(b.granule - a.granule <= ogg.OPUS_RATE for a, b in itertools.pairwise(audio_pages))
    assert audio_pages[-1].flags == ogg.FLAG_EOS and audio_pages[-1].granule == pre_skip + f.frames * 6


def test_a_page_reaches_the_file_every_second_and_at_each_flush(tmp_path: Path) -> None:
    """A kill loses at most a second of the encoder's output, and nothing before the last flush (but
    the encoder's lookahead and a partial frame)."""
    path = tmp_path / "call.opus"
    f = formats.open_recording(path, "opus", RATE)
    audio = tones(5 * RATE + 100)
    write(f, audio[: 3 * RATE + 50])
    seen = formats.repair(shutil.copy(path, tmp_path / "killed.opus"))
    assert 2 * RATE <= seen.frames < 3 * RATE
    f.flush()
    seen = formats.repair(shutil.copy(path, tmp_path / "flushed.opus"))
    assert 3 * RATE + 50 - RATE // 50 - 52 <= seen.frames <= 3 * RATE + 50
    write(f, audio[3 * RATE + 50 :])
    f.close()
    assert len(decode(path, RATE, "ffmpeg")) == len(audio)


@pytest.mark.parametrize("seed", range(6))
def test_a_file_cut_at_any_byte_is_repaired_and_decodes(tmp_path: Path, seed: int) -> None:
    """What a SIGKILL leaves (the file truncated at a random byte, mid-page or not) is repaired by
    formats.repair and decodes to the frames it reports: the audio of every whole page."""
    path = tmp_path / "call.opus"
    audio = tones(6 * RATE)
    f = formats.open_recording(path, "opus", RATE)
    write(f, audio)
    f.flush()
    size = path.stat().st_size
    f.abandon()
    cut = random.Random(seed).randrange(1, size)
    with open(path, "r+b") as torn:
        torn.truncate(cut)
    repaired = formats.repair(path)
    assert not repaired.was_clean and formats.repair(path).was_clean
    if repaired.frames == 0:  # cut inside the headers or the first audio page: no audio to keep
        assert path.stat().st_size == 0
        return
    decoded = decode(path, RATE, "ffmpeg")
    assert len(decoded) == repaired.frames
    by_soundfile, _ = soundfile.read(path, dtype="int16", always_2d=True)
    assert abs(len(by_soundfile) - repaired.frames) <= RATE // 50
    if repaired.frames > 2 * RATE:
        assert_tones(decoded, RATE)


def test_a_continued_file_is_one_chained_stream_of_the_total_length(tmp_path: Path) -> None:
    """Open, write, close, open again, write: two links with their own serials, decoded end to end."""
    path = tmp_path / "call.opus"
    first, second = 3 * RATE + 30, 2 * RATE + 111
    record(path, tones(first))
    again = formats.open_recording(path, "opus", RATE)
    assert again.frames == first  # the new owner knows where the file ends
    write(again, tones(second, start=first))
    again.close()
    assert again.frames == first + second
    data = path.read_bytes()
    links = ogg.links(data, ogg.pages(data))
    assert len(links) == 2 and links[0].serial != links[1].serial and ogg.plan_repair(data).clean
    decoded = decode(path, RATE, "ffmpeg")
    assert len(decoded) == first + second
    assert_tones(decoded[:first], RATE)
    assert_tones(decoded[first:], RATE)
    assert formats.repair(path).frames == first + second


def test_an_abandoned_file_is_continued_after_its_last_page(tmp_path: Path) -> None:
    """A failed owner (no EOS, its last partial page lost): the next owner repairs and appends."""
    path = tmp_path / "call.opus"
    f = formats.open_recording(path, "opus", RATE)
    write(f, tones(2 * RATE + 500))
    f.abandon()  # only the page of the first two seconds is on disk
    again = formats.open_recording(path, "opus", RATE)
    assert again.frames == 2 * RATE - 52  # two seconds of packets, less the lookahead
    write(again, tones(RATE, start=again.frames))
    again.close()
    assert len(decode(path, RATE, "ffmpeg")) == 3 * RATE - 52


def test_silence_cannot_be_patched_and_other_formats_are_not_continued(tmp_path: Path) -> None:
    f = formats.open_recording(tmp_path / "a.opus", "opus", RATE)
    write(f, tones(RATE))
    assert f.patch_silence(0, 10) is False
    f.close()
    with pytest.raises(ValueError):
        formats.open_recording(tmp_path / "a.opus", "opus", 16000)  # another rate
    wav = formats.open_recording(tmp_path / "b.wav", "wav", RATE)
    wav.write(bytes(400))
    wav.close()
    before = (tmp_path / "b.wav").read_bytes()
    (tmp_path / "b.opus").write_bytes(before)
    with pytest.raises(ValueError):
        formats.open_recording(tmp_path / "b.opus", "opus", RATE)  # a WAV where an Opus recording was expected
    assert (tmp_path / "b.opus").read_bytes() == before


def test_libsndfile_encodes_when_libopus_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "OPUS_ENCODER", "libsndfile")
    f = formats.open_recording(tmp_path / "a.opus", "opus", RATE)
    assert isinstance(f, formats.OpusFile)
    f.close()


def test_the_encoder_refuses_what_libopus_refuses() -> None:
    with pytest.raises(ValueError):
        opus_encoder.OpusEncoder(44100, 2, bitrate=24000)
    with pytest.raises(ValueError):
        opus_encoder.OpusEncoder(RATE, 2, bitrate=24000, complexity=11)


def test_the_encoder_makes_20_ms_packets_and_pads_its_lookahead() -> None:
    """Packets for whole frames only; finish() encodes the rest and the lookahead, padded to a frame."""
    enc = opus_encoder.OpusEncoder(RATE, 2, bitrate=24000)
    assert (enc.frame, enc.packet_samples, enc.pre_skip) == (160, 960, enc.lookahead * 6)
    assert len(enc.encode(tones(159).tobytes())) == 0
    assert len(enc.encode(tones(2).tobytes())) == 1  # 161 frames: one packet, one frame waiting
    assert len(enc.finish()) == 1  # 1 + 52 frames of lookahead fit one more packet
    with pytest.raises(ValueError):
        enc.encode(bytes(640))
