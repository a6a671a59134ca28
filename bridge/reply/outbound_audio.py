"""Audio for the carrier, made off the event loop: the way back's own thread pools, the conversions to
the carrier's format (TTS speech, a bot's WAV, DTMF tones, a bot's audio stream) and a ``play`` URL's fetch.

Used by the producing task (:mod:`bridge.reply.producer`); nothing here keeps any state of a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from bridge.audio import AudioFormat, Transcoder, make_transcoder
from bridge.errors import ActionFailed, WavError
from bridge.reply.dtmf import dtmf_pcm16
from bridge.settings import ReplySettings
from bridge.untrusted import read_bounded
from bridge.wav import read_wav

MAX_QUEUED_SECONDS = 300.0  # audio waiting to be played on one call; more is refused (action.failed)

# The way back's own threads, apart from the event loop's default executor (which aiohttp's DNS lookups,
# shutdown work and any library share, none of it on our clock): the short conversions every reply
# waits for (TTS resampling, DTMF tones, a bot's audio chunks) on one pool, and a bot's WAVs (a 4 MiB
# prompt takes far longer) on another, so that one bot's big prompts never delay another call's tones.
CONVERT = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reply-convert")
DECODE = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reply-decode")

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def off_loop(executor: Executor, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``fn(*args)`` on one of the way back's own pools (see ``CONVERT``), not the loop's default."""
    return await asyncio.get_running_loop().run_in_executor(executor, lambda: fn(*args, **kwargs))


def to_outbound(pcm: bytes, rate: int, fmt: AudioFormat) -> bytes:
    """(In a thread.) 16-bit PCM at ``rate`` in the carrier's format ``fmt``."""
    transcoder = make_transcoder(AudioFormat("pcm16", rate), fmt)
    return transcoder.feed(pcm) + transcoder.flush()


def wav_to_outbound(data: bytes, waiting: float, fmt: AudioFormat) -> bytes:
    """(In a thread.) The WAV in the carrier's format; refused before conversion when, with the
    ``waiting`` seconds already queued, it would take the call over ``MAX_QUEUED_SECONDS``."""
    wav = read_wav(data, max_seconds=MAX_QUEUED_SECONDS)
    if waiting + wav.seconds > MAX_QUEUED_SECONDS:
        raise WavError(
            f"a WAV of {wav.seconds:.1f} s with {waiting:.1f} s already waiting: over the "
            f"{MAX_QUEUED_SECONDS:.0f} s of audio a call may have waiting"
        )
    pcm = (np.clip(wav.samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return to_outbound(pcm, wav.sample_rate, fmt)


def dtmf_outbound(digits: str, fmt: AudioFormat) -> bytes:
    """(In a thread.) The digits' tones in the carrier's format."""
    return to_outbound(dtmf_pcm16(digits), 8000, fmt)


def convert(transcoder: Transcoder, pcm: bytes, last: bool) -> bytes:
    """(In a thread.) One piece of a stream through its transcoder; the rest with the last."""
    audio = transcoder.feed(pcm)
    return audio + transcoder.flush() if last else audio


def url_allowed(url: str, settings: ReplySettings) -> bool:
    """Whether a ``play`` url names one of ``BRIDGE_PLAY_URL_HOSTS``."""
    host = (urlsplit(url).hostname or "").lower()
    return bool(host) and host in settings.play_url_hosts


async def fetch(http: aiohttp.ClientSession | None, url: str, settings: ReplySettings) -> bytes:
    """A ``play`` url's body (at most ``reply.max_play_bytes``); :class:`ActionFailed` says why not."""
    if not url_allowed(url, settings) or http is None:
        raise ActionFailed(f"play url host {urlsplit(url).hostname!r} is not in BRIDGE_PLAY_URL_HOSTS")
    limit = settings.max_play_bytes
    try:
        async with http.get(url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            if resp.status != 200:
                raise ActionFailed(f"play url answered {resp.status}")
            too_big = f"play url body over {limit} bytes (reply.max_play_bytes)"
            if resp.content_length is not None and resp.content_length > limit:
                raise ActionFailed(too_big)
            # The whole body, to its end (one read returns only what has arrived so far).
            data, truncated = await read_bounded(resp.content, limit)
            if truncated:
                raise ActionFailed(too_big)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ActionFailed(f"play url failed: {type(exc).__name__}: {exc}"[:200]) from exc
    return data
