"""Answers to play as the callee of an outbound call: a person's "Hello?" or an answering machine's
greeting (and beep), as 8 kHz 16-bit PCM with where the speech and the beep end.

``bridge call --answer human|machine`` plays them, the detector's tests and ``benchmarks/bench_amd.py``
measure the bridge's own answering-machine detector (:mod:`bridge.dial.detector`) on them. Two voices:
``piper``, the bridge's embedded voice (``local`` extra), and ``espeak``, the espeak-ng binary, an
independent synthesiser with other voices and speeds. Everything about a greeting (its text, silences,
level, noise, beep) is chosen by ``variant`` alone, through a generator seeded from it: with espeak the
same variant is the same audio in every run; Piper's model draws noise as it speaks, so its speech moves
by some tens of milliseconds from one process to the next (the layout around it does not).
"""

from __future__ import annotations

import functools
import random
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from bridge.wav import read_wav

if TYPE_CHECKING:
    from bridge.reply.tts import PiperSpeech

with warnings.catch_warnings():
    # stdlib audioop warns on 3.11/3.12 (see bridge.audio)
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 8000  # Hz: every greeting is narrowband telephone audio

HUMAN_TEXTS = (
    "Hello?",
    "Hi, who is this?",
    "Yes?",
    "Hello, this is Sam speaking.",
    "Speaking.",
    "Hey.",
    "Good morning, Dana here.",
    "Hello, yes?",
    "Hi there.",
    "Who's calling?",
    "Hello, Mark speaking.",
    "Yeah, hello?",
    "This is Priya.",
    "Hello, good afternoon.",
    "Hi.",
    "Hello, who's this?",
    "Yes, hello.",
    "Evening.",
    "Hello, Johnson residence.",
    "Hi, this is Alex.",
    "Hello there?",
    "Go ahead.",
)

MACHINE_TEXTS = (
    "Hi, you've reached the Millers. We can't come to the phone right now, please leave a message after the tone.",
    "You have reached the voicemail of Dana Lee. Please leave your name and number and I will call you back.",
    "Hello, this is Sam. I'm not available at the moment. Leave a message and I'll get back to you.",
    "The person you are calling is not available. Please record your message after the tone.",
    "Thanks for calling Green Valley Dental. Our office is closed. Please leave a message after the beep.",
    "Hey, it's Alex. You know what to do, leave it after the beep and I'll call you.",
    "Hi, you have reached five five five, one two three four. Please leave a message.",
    "Hello, you've reached Priya and Tom. We're out right now, so leave us a message and we'll call back.",
    "Sorry I missed your call. Please leave your name, number and a short message after the tone.",
    "You've reached the office of Doctor Chen. Please leave a detailed message and we will return your call.",
    "Hi, this is Mark. I'm on the other line or away from my desk. Please leave a message.",
    "The number you have dialed is not available. At the tone, please record your message.",
    "Hello, you've reached the Johnson residence. Nobody can take your call, please leave a message.",
    "Hi, it's Jess. Can't talk right now, leave a message and I'll get back to you as soon as I can.",
    "Welcome to the voicemail box of extension two hundred and four. Please leave a message after the tone.",
    "Hi, you've reached Riverside Plumbing. We are out on a job. Leave your number and we'll call you back.",
    "This is Maria. I'm away until Monday. Please leave a message, or call the front desk for urgent matters.",
    "Hello. Nobody is home right now. Please leave a message after the beep.",
    "Thank you for calling. The mailbox you have reached is not available. Please leave a message.",
    "Hi, you've reached Chris. I'm probably driving. Leave a message and I'll call you back later today.",
    "You have reached the Parker family. We are unable to answer. Please leave a message after the tone.",
    "Hello, this is the answering service for Lakeside Clinic. Please state your name and telephone number.",
)

ESPEAK_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us+m3", "en-gb+f2")


@dataclass(frozen=True, slots=True)
class Greeting:
    """One answer, ready to play: ``pcm`` is 16-bit little-endian mono at 8 kHz, laid out as leading
    silence, speech, then (a machine's, mostly) a gap and a beep, then trailing silence, all over a
    light noise floor."""

    kind: Literal["human", "machine"]
    text: str  # what is said
    pcm: bytes  # PCM16 LE mono, 8000 Hz
    speech_end_ms: int  # where the speech ends
    beep_end_ms: int | None  # where the beep ends (None: no beep, e.g. a greeting ending in silence)
    speech_start_ms: int = 0  # where the speech starts (the leading silence)
    beep_hz: int | None = None  # the beep's frequency

    @property
    def duration_ms(self) -> int:
        return len(self.pcm) * 1000 // (2 * RATE)


@functools.cache
def _piper() -> PiperSpeech:
    """One Piper engine per process (the voice takes about half a second to load)."""
    from bridge.reply.tts import PiperSpeech

    return PiperSpeech()


def _speak_piper(text: str) -> np.ndarray:
    # Piper's model draws noise as it speaks (VITS): the same text comes out some tens of ms longer or
    # shorter from one process to the next. espeak-ng is deterministic.
    speech = _piper()._synthesize(text)
    pcm, _ = audioop.ratecv(speech.pcm, 2, 1, speech.sample_rate, RATE, None)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0


def _speak_espeak(text: str, voice: str, speed: int) -> np.ndarray:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("the espeak voice needs the espeak-ng binary (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(
            [binary, "-w", str(path), "-s", str(speed), "-v", voice, text], check=True, capture_output=True, timeout=60
        )
        wav = read_wav(path.read_bytes())
    pcm16 = np.clip(np.rint(wav.samples * 32767), -32768, 32767).astype("<i2").tobytes()
    pcm, _ = audioop.ratecv(pcm16, 2, 1, wav.sample_rate, RATE, None)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0


def _trimmed(x: np.ndarray) -> np.ndarray:
    """The synthesiser's output without its own leading and trailing near-silence (so the greeting's
    silences are the ones chosen here, and ``speech_end_ms`` is where the sound really stops)."""
    loud = np.flatnonzero(np.abs(x) > 0.02 * float(np.max(np.abs(x)) or 1.0))
    if not len(loud):
        return x[:0]
    return x[int(loud[0]) : int(loud[-1]) + 1]


def _samples(ms: float) -> int:
    return round(ms * RATE / 1000)


def greeting(kind: Literal["human", "machine"], variant: int = 0, *, voice: str = "piper") -> Greeting:
    """The answer ``variant`` of ``kind`` in ``voice`` (``piper`` or ``espeak``); the same arguments give
    the same greeting (cached per process).

    A person (one of :data:`HUMAN_TEXTS`): 0.2-1.5 s of silence, a short answer, then 4-6 s of silence
    (a person waits for the caller). A machine (one of :data:`MACHINE_TEXTS`): 0.2-1.0 s of silence, the
    greeting (2.5-8 s of speech), then, for three variants in four, 0.2-0.8 s of silence and a beep of
    440-2000 Hz for 0.2-1.0 s, and 2-4 s of silence (the fourth ends in silence only). Speech peaks at
    -3 to -12 dBFS; a white noise floor of -66 to -48 dBFS (RMS) lies under everything.

    Raises:
        ValueError: an unknown ``kind`` or ``voice``.
        RuntimeError: the voice's synthesiser is missing (``local`` extra for piper, espeak-ng).
    """
    return _greeting(kind, variant, voice)


@functools.lru_cache(maxsize=64)
def _greeting(kind: Literal["human", "machine"], variant: int, voice: str) -> Greeting:
    if kind not in ("human", "machine"):
        raise ValueError(f"kind must be human or machine, not {kind!r}")
    if voice not in ("piper", "espeak"):
        raise ValueError(f"voice must be piper or espeak, not {voice!r}")
    rng = random.Random(f"{kind}/{variant}/{voice}")  # str seeds are stable across runs and hash seeds
    texts = HUMAN_TEXTS if kind == "human" else MACHINE_TEXTS
    text = texts[variant % len(texts)]
    if voice == "piper":
        speech = _speak_piper(text)
    else:
        speed = rng.randint(140, 185) if kind == "machine" else rng.randint(150, 190)
        speech = _speak_espeak(text, ESPEAK_VOICES[variant % len(ESPEAK_VOICES)], speed)
    speech = _trimmed(speech)
    speech *= 10 ** (-rng.uniform(3.0, 12.0) / 20) / max(float(np.max(np.abs(speech), initial=0.0)), 1e-9)

    if kind == "human":
        lead = _samples(rng.uniform(200, 1500))
        parts = [np.zeros(lead), speech, np.zeros(_samples(rng.uniform(4000, 6000)))]
        beep_end: int | None = None
        beep_hz: int | None = None
    else:
        lead = _samples(rng.uniform(200, 1000))
        parts = [np.zeros(lead), speech]
        if variant % 4 != 3:
            gap = _samples(rng.uniform(200, 800))
            beep_hz = rng.choice((440, 500, 600, 800, 850, 1000, 1000, 1000, 1200, 1400, 1500, 1800, 2000))
            beep_len = _samples(rng.uniform(200, 1000))
            t = np.arange(beep_len) / RATE
            ramp = np.minimum(1.0, np.minimum(np.arange(beep_len), np.arange(beep_len)[::-1]) / _samples(5))
            tone = 10 ** (-rng.uniform(6.0, 16.0) / 20) * ramp * np.sin(2 * np.pi * beep_hz * t)
            parts += [np.zeros(gap), tone]
            beep_end = lead + len(speech) + gap + beep_len
            parts.append(np.zeros(_samples(rng.uniform(2000, 4000))))
        else:
            beep_end, beep_hz = None, None
            parts.append(np.zeros(_samples(rng.uniform(3000, 5000))))
    x = np.concatenate(parts)
    noise = np.random.default_rng(rng.getrandbits(32)).standard_normal(len(x))
    x += noise * 10 ** (-rng.uniform(48.0, 66.0) / 20)
    pcm = np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2").tobytes()
    return Greeting(
        kind=kind,
        text=text,
        pcm=pcm,
        speech_end_ms=(lead + len(speech)) * 1000 // RATE,
        beep_end_ms=None if beep_end is None else beep_end * 1000 // RATE,
        speech_start_ms=lead * 1000 // RATE,
        beep_hz=beep_hz,
    )
