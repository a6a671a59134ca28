"""Replay buffer (pure): session offsets, acknowledgments, resend after drops, bounds."""

from __future__ import annotations

import random

import pytest

from bridge.stt.replay import MAX_PIECE_BYTES, ReplayBuffer


class FakeServer:
    """Keeps acknowledged bytes only, like a server resuming at the acknowledged offset."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.unacked = bytearray()

    def receive(self, piece: bytes) -> None:
        self.unacked += piece

    def ack(self, buf: ReplayBuffer, inclusive: bool = False) -> None:
        start = len(self.kept)
        self.kept += self.unacked
        self.unacked.clear()
        if len(self.kept) > start:
            buf.ack(start, len(self.kept) - 1 if inclusive else len(self.kept))

    def drop(self) -> None:
        self.unacked.clear()


def test_live_audio_goes_out_in_whole_chunks() -> None:
    """With a 100 ms chunk, 20 ms frames are grouped by five; flush sends the remainder."""
    buf = ReplayBuffer(max_bytes=8000, chunk_bytes=800)
    for _ in range(4):
        buf.append(b"\x01" * 160)
        assert buf.pieces() == []
    buf.append(b"\x02" * 160)
    assert [len(p) for p in buf.pieces()] == [800]
    buf.append(b"\x03" * 160)
    assert [len(p) for p in buf.pieces(flush=True)] == [160]


@pytest.mark.parametrize("inclusive", [False, True])
@pytest.mark.parametrize("seed", range(10))
def test_random_drops_and_acks_keep_the_server_copy_exact(seed: int, inclusive: bool) -> None:
    """Whatever the interleaving of audio, acks and drops, the server ends with the exact audio."""
    rng = random.Random(seed)
    buf = ReplayBuffer(max_bytes=10**6, chunk_bytes=160, frame_bytes=1)
    server = FakeServer()
    audio = rng.randbytes(160 * 400)
    for i in range(0, len(audio), 160):
        buf.append(audio[i : i + 160])
        for piece in buf.pieces():
            server.receive(piece)
        roll = rng.random()
        if roll < 0.3:
            server.ack(buf, inclusive)
        elif roll < 0.35:
            server.drop()
            buf.rewind()
            for piece in buf.pieces():
                server.receive(piece)
    for piece in buf.pieces(flush=True):
        server.receive(piece)
    server.ack(buf, inclusive)
    assert bytes(server.kept) == audio
    assert buf.unacked == 0 and buf.held == 0
    assert buf.inclusive_ranges is inclusive


def test_resend_pieces_stay_under_512_kib() -> None:
    """A large backlog is resent in pieces below Gladia's 1 MiB frame limit (SDKs use 512 KiB)."""
    buf = ReplayBuffer(max_bytes=4 * 1024 * 1024, chunk_bytes=160)
    buf.append(b"\x00" * (1_300_000))
    buf.pieces()
    resend = buf.rewind()
    pieces = buf.pieces()
    assert resend == 1_300_000
    assert all(len(p) <= MAX_PIECE_BYTES < 512 * 1024 for p in pieces)
    assert sum(map(len, pieces)) == 1_300_000
    assert buf.resent_bytes == 1_300_000


def test_overflow_is_bounded_counted_and_renumbered() -> None:
    """Audio beyond the bound drops the oldest, counts it, and the next connection resumes
    at the server's offset with the newest audio (the gap counted as lost)."""
    buf = ReplayBuffer(max_bytes=1600, chunk_bytes=160)
    server = FakeServer()
    buf.append(b"\x01" * 800)
    for p in buf.pieces():
        server.receive(p)
    server.ack(buf)  # server has 800
    for _ in range(20):  # 3200 bytes while the connection is down
        buf.append(b"\x02" * 160)
    assert buf.held == 1600
    assert buf.overflow_bytes == 1600
    buf.rewind()
    assert buf.lost_bytes == 1600
    for p in buf.pieces():
        server.receive(p)
    server.ack(buf)
    assert bytes(server.kept) == b"\x01" * 800 + b"\x02" * 1600
    assert buf.acked == 2400


def test_restart_session_starts_offsets_at_zero_with_unacked_audio() -> None:
    """A new session gets the audio the lost one never acknowledged, at offset 0."""
    buf = ReplayBuffer(max_bytes=10_000, chunk_bytes=160)
    buf.append(b"\x01" * 480)
    buf.pieces()
    buf.ack(0, 160)
    assert buf.restart_session() == 320
    pieces = buf.pieces()
    assert b"".join(pieces) == b"\x01" * 320
    assert buf.call_position_of_base() == 160
    buf.ack(0, 320)
    assert buf.unacked == 0


def test_pcm16_alignment_is_kept_on_overflow() -> None:
    """For 16-bit audio, drops and pieces keep whole samples."""
    buf = ReplayBuffer(max_bytes=1001, chunk_bytes=320, frame_bytes=2)
    buf.append(b"\x00\x01" * 700)
    assert buf.overflow_bytes % 2 == 0 and buf.held % 2 == 0


def test_acks_beyond_what_was_sent_are_counted_not_trusted() -> None:
    """An acknowledgment past the cursor cannot make the buffer forget unsent audio."""
    buf = ReplayBuffer(max_bytes=10_000, chunk_bytes=160)
    buf.append(b"\x00" * 320)
    buf.pieces()
    buf.append(b"\x00" * 100)
    buf.ack(0, 5000)
    assert buf.ack_anomalies == 1
    assert buf.acked == 320 and buf.held == 100
