"""The official Gladia Python SDK (gladiaio-sdk 2.2.0) as the client of the local server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gladiaio_sdk import GladiaClient, HttpError

from tests.support.proxy import TcpProxy
from tests.support.speech import SPANS, ULAW, words

AUDIO = ULAW[: 8000 * 10]  # the first two sentences
REQUEST = {"encoding": "wav/ulaw", "sample_rate": 8000, "bit_depth": 8, "endpointing": 0.3}


async def run_sdk_session(api_url: str, proxy: TcpProxy | None = None) -> tuple[list[str], Any, list[Any]]:
    """Stream AUDIO through the SDK; with ``proxy``, cut the connection after about 4 s of audio."""
    live = GladiaClient(api_key="local", api_url=api_url).live_v2_async()
    session = live.start_session(dict(REQUEST))
    messages: list[Any] = []
    errors: list[Any] = []
    connected = asyncio.Event()
    ended: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    session.on("message", messages.append)
    session.on("error", errors.append)
    session.on("connected", lambda _: connected.set())

    def on_ended(message: Any) -> None:
        if not ended.done():
            ended.set_result(message)

    session.on("ended", on_ended)
    await asyncio.wait_for(connected.wait(), 10)
    for i in range(0, len(AUDIO), 1600):
        session.send_audio(AUDIO[i : i + 1600])
        await asyncio.sleep(0.005)
        if proxy is not None and i == 32000:
            await asyncio.sleep(0.05)
            assert proxy.cut() >= 1  # the WebSocket (and an idle HTTP keep-alive)
    # The SDK drops a stop_recording sent while it is reconnecting: wait to be connected again.
    await asyncio.wait_for(connected.wait(), 10)
    await asyncio.sleep(0.2)
    session.stop_recording()
    end = await asyncio.wait_for(ended, 30)
    # The SDK has no close() of its own for its HTTP client (a known defect): close it here.
    await live._http_client.close()
    finals = [m.data.utterance.text for m in messages if getattr(m, "type", None) == "transcript" and m.data.is_final]
    return finals, end, errors


@pytest.mark.recognition
async def test_sdk_completes_a_session(make_stt_server: Any) -> None:
    """One final per spoken sentence, then a normal end (1000). (Which words: test_recognition_quality.)"""
    stt, server = await make_stt_server()
    finals, end, errors = await run_sdk_session(str(server.make_url("")).rstrip("/"))
    assert end.code == 1000 and not errors
    assert len(finals) == len([s for s in SPANS if s[1] <= len(AUDIO) / 8000]) == 2
    assert all(words(text) for text in finals)
    (rt,) = stt.sessions.values()
    assert rt.live.received_bytes == len(AUDIO) and rt.live.state == "done"


@pytest.mark.recognition
async def test_sdk_resumes_after_a_drop_with_the_same_transcript(make_stt_server: Any) -> None:
    """The socket is cut mid-session; the SDK reconnects to the same URL, resends what was not
    acknowledged, and the session ends with exactly the audio and the transcript of an unbroken run."""
    _, reference_server = await make_stt_server()
    reference, _, _ = await run_sdk_session(str(reference_server.make_url("")).rstrip("/"))

    stt, server = await make_stt_server()
    proxy = TcpProxy(server.port)
    await proxy.start()
    try:
        finals, end, _errors = await run_sdk_session(f"http://127.0.0.1:{proxy.port}", proxy)
    finally:
        await proxy.close()
    assert end.code == 1000
    (rt,) = stt.sessions.values()
    assert rt.live.connections == 2
    assert rt.live.received_bytes == len(AUDIO)
    assert len(reference) == 2 and finals == reference


class NeverRecognizes:
    """The recogniser of a server whose session is refused at init: fails if asked, spares the model."""

    name = "none"
    languages = frozenset({"en"})

    def transcribe(
        self, audio: Any, language: str | None = None, prompt: str | None = None, among: tuple[str, ...] = ()
    ) -> Any:
        raise AssertionError("nothing here should reach the recogniser")


async def test_sdk_reads_the_refusal_of_an_addon_the_local_engine_does_not_do(aiohttp_server: Any) -> None:
    """The SDK asking the local server for live translation gets its own error path for a 4xx init: an
    ``HttpError`` with the 422, raised to ``get_session_id`` and emitted as ``error``, whose
    ``invalid_parameters`` (the SDK's reading of the validation errors) name the field; the session then
    ends (1006, "Couldn't start a new session") and the server holds no session."""
    from bridge.local_stt.server import LocalSttServer, ServerOptions

    stt = LocalSttServer(ServerOptions(), recognizer=NeverRecognizes())
    server = await aiohttp_server(stt.app, host="127.0.0.1")
    live = GladiaClient(api_key="local", api_url=str(server.make_url("")).rstrip("/")).live_v2_async()
    translation = {"translation": True, "translation_config": {"target_languages": ["fr", "es"]}}
    session = live.start_session({**REQUEST, "realtime_processing": translation})
    errors: list[Any] = []
    ended: list[Any] = []
    session.on("error", errors.append)
    session.on("ended", ended.append)
    try:
        with pytest.raises(HttpError) as raised:
            await asyncio.wait_for(session.get_session_id(), 10)
        # A defect of the SDK: its start task emits the error a second time after the first one removed
        # every listener, and pyee raises an unheard "error": that task ends with the same HttpError,
        # which nothing of the SDK retrieves ("Task exception was never retrieved"). Retrieve it here.
        (again,) = await asyncio.wait_for(asyncio.gather(session._start_session_task, return_exceptions=True), 10)
    finally:
        await live._http_client.close()
    assert again is raised.value
    err = raised.value
    assert err.status == 422 and err.method == "POST" and err.url.endswith("/v2/live")
    assert err.invalid_parameters == ["realtime_processing.translation"]
    assert "realtime_processing.translation must be false" in str(err) and "no translation" in str(err)
    assert errors == [err]
    assert [(m.code, m.reason) for m in ended] == [(1006, "Couldn't start a new session")]
    assert session.status == "ended" and not stt.sessions
