"""The load Gladia and bot of ``bridge loadtest`` (one process, ``multiprocessing`` spawn): a Gladia live v2
server that acknowledges every chunk and sends a final every :data:`~bridge.tools.load_frames.FINAL_EVERY`
bytes, measuring the forward latency of each caller frame; and the webhook sink, measuring final -> webhook
latency (and answering each final with a reply to play, with ``--reply``).

With ``--addons`` the load Gladia also sends, after each final, the realtime add-on messages the session's
``POST /v2/live`` body asks for (:func:`addon_messages`: a ``translation`` per target language, a
``sentiment_analysis``), as Gladia does; the sink counts the add-on events the bot receives."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bridge.loop import run_loop
from bridge.stt.addons import requested_addons, target_languages
from bridge.tools.load_frames import FINAL_EVERY, FirstChannel, free_port

# the bot events of the add-ons the stand-in sends (and of the others, should a profile ask for them)
ADDON_EVENTS = frozenset({"utterance.translation", "utterance.sentiment", "utterance.entities"})
CREATED_AT = "2026-01-01T00:00:00Z"
ADDON_LANGUAGES = ("fr", "es")  # --addons: the translation's target languages
ADDONS_PROFILE = f"""
# bridge loadtest --addons: Gladia's live translation (to two languages) and sentiment analysis on every call
[stt.default.realtime_processing]
translation = true
sentiment_analysis = true

[stt.default.realtime_processing.translation_config]
target_languages = {json.dumps(list(ADDON_LANGUAGES))}
"""


@dataclass
class StandinStats:
    frames: int = 0
    forward: list[float] = field(default_factory=list)
    finals_sent: int = 0
    webhook: list[float] = field(default_factory=list)  # final -> webhook latency, at its first arrival
    webhook_finals: int = 0  # distinct finals the bot received
    webhook_redelivered: int = 0  # posts of a final it already had (retries after webhook.timeout)
    sessions: int = 0
    addon_messages_sent: int = 0
    addon_events: int = 0  # distinct add-on events the bot received (translation, sentiment, entities)
    addon_events_failed: int = 0  # distinct stt.addon_failed events
    _seen: set[str] = field(default_factory=set)
    _seen_addons: set[str] = field(default_factory=set)

    def final_arrived(self, key: str, latency: float) -> None:
        """A final posted to the bot, ``key`` its ``webhook-id`` (the same on every retry): counted
        once, its latency from its first arrival; the bot behind a slow answer dedupes the rest."""
        if key in self._seen:
            self.webhook_redelivered += 1
            return
        self._seen.add(key)
        self.webhook.append(latency)
        self.webhook_finals += 1

    def addon_arrived(self, key: str, failed: bool) -> None:
        """An add-on event posted to the bot (``stt.addon_failed`` when ``failed``), ``key`` its
        ``webhook-id``: counted once, a retry of it not at all."""
        if key in self._seen_addons:
            return
        self._seen_addons.add(key)
        if failed:
            self.addon_events_failed += 1
        else:
            self.addon_events += 1


@dataclass(frozen=True)
class AddonPlan:
    """The realtime add-on messages a session's body asks for: a translation per language of
    ``translations`` (in the body's order), and a sentiment analysis when ``sentiment``."""

    translations: tuple[str, ...] = ()
    sentiment: bool = False


def addon_plan(body: dict[str, Any]) -> AddonPlan:
    """What Gladia would send after each final of a session created with ``body``: the switched-on
    ``translation`` (to each ``target_languages``) and ``sentiment_analysis``, unless the body's
    ``messages_config.receive_realtime_processing_events`` is false."""
    messages = body.get("messages_config")
    if isinstance(messages, dict) and messages.get("receive_realtime_processing_events") is False:
        return AddonPlan()
    addons = requested_addons(body)
    languages = target_languages(body) if "translation" in addons else ()
    return AddonPlan(languages, "sentiment_analysis" in addons)


def addon_messages(sid: str, utterance_id: str, utterance: dict[str, Any], plan: AddonPlan) -> list[dict[str, Any]]:
    """The add-on messages that follow the final ``utterance_id`` (its ``utterance``), as Gladia's live v2
    sends them (``translation``: ``data.translated_utterance`` in the target language; ``sentiment_analysis``:
    one neutral result spanning the utterance on its channel); ``error`` null, ``data`` set."""
    out: list[dict[str, Any]] = []
    for language in plan.translations:
        translated = dict(utterance, text=f"[{language}] {utterance['text']}", language=language, words=[])
        data = {
            "utterance_id": utterance_id,
            "utterance": utterance,
            "original_language": utterance["language"],
            "target_language": language,
            "translated_utterance": translated,
        }
        out.append({"type": "translation", "session_id": sid, "created_at": CREATED_AT, "error": None, "data": data})
    if plan.sentiment:
        result = {
            "sentiment": "neutral",
            "emotion": "neutral",
            "text": utterance["text"],
            "start": utterance["start"],
            "end": utterance["end"],
            "channel": utterance["channel"],
        }
        data = {"utterance_id": utterance_id, "utterance": utterance, "results": [result]}
        out.append(
            {"type": "sentiment_analysis", "session_id": sid, "created_at": CREATED_AT, "error": None, "data": data}
        )
    return out


def reply_wav(seconds: float = 2.0) -> str:
    """A 2 s, 440 Hz mu-law WAV at 8 kHz, base64: what the load bot plays back for every final."""
    from bridge.audio import encode_from_pcm16

    n = int(8000 * seconds)
    pcm = b"".join(struct.pack("<h", int(8000 * math.sin(6.283185307 * 440 * i / 8000))) for i in range(n))
    data = encode_from_pcm16(pcm, "ulaw")
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    wav = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    return base64.b64encode(wav + b"data" + struct.pack("<I", len(data)) + data).decode()


def addons_config(config_text: str | None) -> str:
    """The settings TOML of the bridge under ``--addons``: ``config_text`` (the ``--config`` file's; none:
    the defaults) with a default STT profile that asks for translation to :data:`ADDON_LANGUAGES` and
    sentiment analysis. A file that sets ``stt.default.realtime_processing`` itself is kept as it is: the
    load Gladia sends what its profile asks for.

    Raises:
        ValueError: the file is not TOML, or its tables cannot take the profile's (e.g. an inline ``stt``).
    """
    if config_text is None:
        return ADDONS_PROFILE
    stt = tomllib.loads(config_text).get("stt")
    default = stt.get("default") if isinstance(stt, dict) else None
    if isinstance(default, dict) and "realtime_processing" in default:
        return config_text
    merged = config_text + "\n" + ADDONS_PROFILE
    try:
        tomllib.loads(merged)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"cannot add [stt.default.realtime_processing] to it: {exc}") from None
    return merged


def gladia_and_bot(port_queue: Any, stop: Any, results: Any, reply: bool = False, addons: bool = False) -> None:
    """The load Gladia and bot, until ``stop`` is set; then its figures on ``results``. ``reply``: the bot
    answers each final with 2 s of audio. ``addons``: each final is followed by the add-on messages its
    session's body asks for (:func:`addon_plan`); without, none whatever the body says."""
    stats = StandinStats()
    answer = json.dumps({"actions": [{"type": "play", "audio": reply_wav(), "interrupt": "none"}]}) if reply else ""
    session_channels: dict[str, int] = {}  # session token -> "channels" of its POST body
    session_addons: dict[str, AddonPlan] = {}  # session token -> the add-ons its POST body asks for

    async def create(request: web.Request) -> web.Response:
        stats.sessions += 1
        token = uuid.uuid4().hex
        body = await request.json()
        session_channels[token] = int(body.get("channels", 1))
        if addons:
            session_addons[token] = addon_plan(body)
        return web.json_response(
            {"id": token, "created_at": "2026-01-01T00:00:00Z", "url": f"ws://{request.host}/v2/live?token={token}"},
            status=201,
        )

    async def session(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=2**20)
        await ws.prepare(request)
        sid = request.query.get("token", "")
        # Two channels (both parties): forward latency is measured on channel 0 only, so a frame is
        # still one frame of the caller; acknowledgments and finals count the interleaved bytes, so a
        # final comes every 1 s of a two-track call (both parties talking), every 2 s of one track.
        stream = FirstChannel(session_channels.get(sid, 1))
        rate = 8000 * stream.channels  # bytes per second of the session's stream
        finals = 0
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                data: bytes = msg.data
                now = time.monotonic()
                start = stream.received
                stamps = stream.feed(data)
                received = stream.received
                stats.forward.extend(now - t for t in stamps)
                stats.frames += len(stamps)
                await ws.send_str(
                    json.dumps(
                        {
                            "type": "audio_chunk",
                            "session_id": sid,
                            "acknowledged": True,
                            "error": None,
                            "created_at": "",
                            "data": {"byte_range": [start, received], "time_range": [start / rate, received / rate]},
                        }
                    )
                )
                while (finals + 1) * FINAL_EVERY <= received:
                    finals += 1
                    await _final(ws, sid, finals, stream.channels)
            elif msg.type is WSMsgType.TEXT and "stop_recording" in msg.data:
                if stream.received > finals * FINAL_EVERY:
                    finals += 1
                    await _final(ws, sid, finals, stream.channels, end=stream.received / rate)
                await ws.send_str(json.dumps({"type": "end_session", "session_id": sid, "created_at": ""}))
                await ws.close(code=1000)
        return ws

    async def _final(ws: web.WebSocketResponse, sid: str, n: int, channels: int, end: float | None = None) -> None:
        """Final ``n`` of a session: the parties take turns (channel 0, 1, 0, ... on two channels)."""
        stats.finals_sent += 1
        period = FINAL_EVERY / (8000 * channels)  # seconds of the call per final
        end = end if end is not None else n * period
        text = f"t={time.monotonic():.6f}"
        utterance_id = f"00_{n:08d}"
        utterance = {
            "start": end - period,
            "end": end,
            "confidence": 1.0,
            "channel": (n - 1) % channels,
            "text": text,
            "language": "en",
            "words": [],
        }
        await ws.send_str(
            json.dumps(
                {
                    "type": "transcript",
                    "session_id": sid,
                    "created_at": "",
                    "data": {"id": utterance_id, "is_final": True, "utterance": utterance},
                }
            )
        )
        plan = session_addons.get(sid)
        if plan is not None:
            for message in addon_messages(sid, utterance_id, utterance, plan):
                stats.addon_messages_sent += 1
                await ws.send_str(json.dumps(message))

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        kind = body.get("type")
        if kind in ADDON_EVENTS or kind == "stt.addon_failed":
            key = request.headers.get("webhook-id") or json.dumps(body, sort_keys=True)
            stats.addon_arrived(key, failed=kind == "stt.addon_failed")
        elif kind == "utterance.final":
            text = body["utterance"]["text"]
            sent = float(text.split("=")[1])
            # the reference forwarder neither retries nor sends a webhook-id: its text is unique
            stats.final_arrived(request.headers.get("webhook-id", text), time.monotonic() - sent)
            if answer:
                return web.Response(text=answer, content_type="application/json")
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v2/live", create)
        app.router.add_get("/v2/live", session)
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        port_queue.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        results.put(
            {
                "frames": stats.frames,
                "forward": stats.forward,
                "finals_sent": stats.finals_sent,
                "webhook": stats.webhook,
                "webhook_finals": stats.webhook_finals,
                "webhook_redelivered": stats.webhook_redelivered,
                "sessions": stats.sessions,
                "addon_messages_sent": stats.addon_messages_sent,
                "addon_events": stats.addon_events,
                "addon_events_failed": stats.addon_events_failed,
            }
        )
        await runner.cleanup()

    run_loop(main())
