"""A Twilio call transferred by the bot, end to end on loopback, played as Twilio documents it:
``/twilio/voice`` -> the stream -> the bot says and transfers -> the bridge closes the stream ->
``<Connect action>`` (``/twilio/after-stream``) -> ``<Dial>``; then the person answers (``<Number url>``
whisper, ``statusCallback`` answered, ``<Dial action>`` completed), or nobody does and the caller comes
back to the bot on the same call and Gladia session. Every Twilio request is signed with the official
SDK's ``RequestValidator`` (an independent oracle for the signature scheme)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.calls import BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook

AUTH_TOKEN = "twilio-test-auth-token"
API_TOKEN = "bot-api-token"
CALL_SID = "CA" + "7" * 32
ACCOUNT_SID = "AC" + "0" * 32
CALLER = {"CallSid": CALL_SID, "AccountSid": ACCOUNT_SID, "From": "+15550001", "To": "+15550002"}
VALIDATOR = RequestValidator(AUTH_TOKEN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Twilio:
    """Twilio's side of one call: signed webhooks, the media stream, marks echoed."""

    base: str
    http: aiohttp.ClientSession
    received: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    async def post(self, url: str, form: dict[str, str]) -> tuple[int, str]:
        signature = VALIDATOR.compute_signature(url, form)
        async with self.http.post(url, data=form, headers={"X-Twilio-Signature": signature}) as resp:
            return resp.status, await resp.text()

    async def twiml(self, url: str, form: dict[str, str]) -> ET.Element:
        status, text = await self.post(url, form)
        assert status == 200, text
        return ET.fromstring(text)

    async def stream(self, parameters: dict[str, str], stream_sid: str, audio: bytes, *, stop: bool) -> None:
        """Stream ``audio`` in 20 ms frames at 10x real time, echo the bridge's marks, then wait for the
        bridge to close the socket (``stop``: send Twilio's stop first)."""
        url = self.base.replace("http", "ws", 1) + "/twilio/stream"
        signature = VALIDATOR.compute_signature(url, {})
        writer = TwilioStreamWriter(CALL_SID, stream_sid, account_sid=ACCOUNT_SID, parameters=parameters)
        async with self.http.ws_connect(url, headers={"X-Twilio-Signature": signature}) as ws:
            await ws.send_str(writer.connected())
            await ws.send_str(writer.start())

            async def listen() -> None:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        self.received.append(data)
                        if data.get("event") == "mark":
                            await ws.send_str(writer.mark(data["mark"]["name"]))

            listener = asyncio.create_task(listen())
            for i in range(0, len(audio), 160):
                if ws.closed:
                    break
                await ws.send_str(writer.media(audio[i : i + 160]))
                await asyncio.sleep(0.002)
            if stop and not ws.closed:
                await ws.send_str(writer.stop())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener, 20)
            self.close_code = ws.close_code


@contextlib.asynccontextmanager
async def twilio_bridge(make_bridge: BridgeFactory, **env: str) -> AsyncIterator[tuple[Twilio, Any]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environ = {
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "BRIDGE_PUBLIC_URL": base,
        "BRIDGE_SECRET": "s" * 32,
        "BRIDGE_API_TOKEN": API_TOKEN,
        "BRIDGE_TRANSFER_TO": "+1555,pbx.example.com",
    } | env
    server = await make_bridge(environ, port=port)
    async with aiohttp.ClientSession() as http:
        yield Twilio(base, http), server


def transfer_bot(hook: FakeWebhook, transfer: dict[str, Any]) -> None:
    """The bot: on call.started, a short say then the transfer; nothing else."""

    def answer(event: dict[str, Any]) -> Any:
        if event["type"] == "call.started":
            # barge-in off: the fake Gladia's finals for the caller's noise would cut the say short
            configure = {"type": "configure", "barge_in": {"enabled": False}}
            return {"actions": [configure, {"type": "say", "text": "Please hold.", "id": "hold"}, transfer]}
        return None

    hook.answer = answer


async def start_call(twilio: Twilio) -> dict[str, str]:
    """/twilio/voice: the TwiML's <Connect action> and the stream's parameters."""
    twiml = await twilio.twiml(twilio.base + "/twilio/voice", CALLER)
    (connect,) = twiml.iter("Connect")
    assert connect.attrib["action"] == twilio.base + "/twilio/after-stream"
    assert [el.tag for el in twiml] == ["Connect"]  # nothing after it: its action decides
    return {p.attrib["name"]: p.attrib["value"] for p in twiml.iter("Parameter")}


async def test_a_transfer_the_person_answers_ends_the_call_as_transferred(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    transfer_bot(
        hook,
        {"type": "transfer", "id": "t1", "to": "+15550142", "caller_id": "+15550002", "announce": "A caller."},
    )
    async with twilio_bridge(make_bridge) as (twilio, _):
        parameters = await start_call(twilio)
        await twilio.stream(parameters, "MZ" + "1" * 32, caller_audio(4.0), stop=False)
        assert twilio.close_code == 1000  # the bridge closed the stream: Twilio runs <Connect action>
        assert [e["event"] for e in twilio.received if e["event"] == "media"]  # "Please hold." played first
        await wait_for(lambda: bool(hook.events("transfer.started")))
        (started,) = hook.events("transfer.started")
        capabilities = hook.events("call.started")[0]["capabilities"]
        assert capabilities == {"transfer": True, "announce": True, "return": True, "gather": True}
        assert started["action_id"] == "t1" and started["to"] == "+15550142" and started["method"] == "twiml"
        finished = hook.events("playback.finished")
        assert [e["action_id"] for e in finished] == ["hold"]  # the say played out before the hand-over
        assert hook.events().index(finished[0]) < hook.events().index(started)

        twiml = await twilio.twiml(twilio.base + "/twilio/after-stream", CALLER | {"CallStatus": "in-progress"})
        (dial,) = twiml.iter("Dial")
        (number,) = dial.iter("Number")
        assert number.text == "+15550142" and dial.attrib["callerId"] == "+15550002"
        assert dial.attrib["timeout"] == "30"
        assert dial.attrib["action"].startswith(twilio.base + "/twilio/dial-status?t=")
        # a second fetch gets the default: the desk's answer is taken once
        again = await twilio.twiml(twilio.base + "/twilio/after-stream", CALLER)
        assert [el.tag for el in again] == ["Hangup"]

        # the person answers: Twilio runs the <Number url> whisper on their end
        whisper = await twilio.twiml(number.attrib["url"], {"CallSid": "CA" + "9" * 32, "AccountSid": ACCOUNT_SID})
        (play,) = whisper.iter("Play")
        async with twilio.http.get(play.text or "") as resp:
            assert resp.status == 200 and resp.content_type == "audio/wav"
            wav = await resp.read()
        assert wav[:4] == b"RIFF" and len(wav) > 44 + 8000  # the briefing, spoken
        # ... and reports the answer (statusCallbackEvent=answered)
        status, _ = await twilio.post(
            number.attrib["statusCallback"], {"CallSid": "CA" + "9" * 32, "CallStatus": "in-progress"}
        )
        assert status == 200
        await wait_for(lambda: bool(hook.events("call.ended")))
        (completed,) = hook.events("transfer.completed")
        assert completed == completed | {"action_id": "t1", "status": "answered"}
        assert hook.events("call.ended")[0]["summary"]["end_reason"] == "transferred"
        # when the person's call ends, Twilio posts <Dial action>: the call is over
        done = await twilio.twiml(dial.attrib["action"], CALLER | {"DialCallStatus": "completed"})
        assert [el.tag for el in done] == ["Hangup"]
    assert not hook.events("transfer.failed")


@pytest.mark.parametrize("status", ["no-answer", "busy"])
async def test_nobody_answers_and_the_caller_comes_back_to_the_bot_on_the_same_call(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], status: str
) -> None:
    hook, _ = webhook
    transfer_bot(hook, {"type": "transfer", "id": "t2", "to": "sip:agent@pbx.example.com", "ring_timeout_s": 10})
    async with twilio_bridge(make_bridge) as (twilio, _):
        parameters = await start_call(twilio)
        await twilio.stream(parameters, "MZ" + "1" * 32, caller_audio(3.0), stop=False)
        twiml = await twilio.twiml(twilio.base + "/twilio/after-stream", CALLER)
        (sip,) = twiml.iter("Sip")
        assert sip.text == "sip:agent@pbx.example.com"
        (dial,) = twiml.iter("Dial")
        back = await twilio.twiml(dial.attrib["action"], CALLER | {"DialCallStatus": status})
        (connect,) = back.iter("Connect")
        (stream,) = connect.iter("Stream")
        assert stream.attrib["url"] == twilio.base.replace("http", "ws", 1) + "/twilio/stream"
        returned = {p.attrib["name"]: p.attrib["value"] for p in back.iter("Parameter")}
        assert returned["From"] == "+15550001" and "bridge.resume" in returned
        hook.answer = None
        await twilio.stream(returned, "MZ" + "2" * 32, caller_audio(2.0, seed=2), stop=True)
        await wait_for(lambda: bool(hook.events("call.ended")))
    types = [e["type"] for e in hook.events()]
    assert types.index("transfer.started") < types.index("call.stream_restarted") < types.index("transfer.failed")
    (failed,) = hook.events("transfer.failed")
    assert failed["action_id"] == "t2" and failed["status"] == status
    assert len({e["call"]["id"] for e in hook.events()}) == 1  # same call_id
    assert len(fake_gladia.sessions) == 1  # same Gladia session
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["end_reason"] == "stop" and summary["phone_streams"] == 2


async def test_on_no_answer_hangup_ends_the_call(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    transfer_bot(hook, {"type": "transfer", "id": "t3", "to": "+15550142", "after": "now", "on_no_answer": "hangup"})
    async with twilio_bridge(make_bridge) as (twilio, _):
        parameters = await start_call(twilio)
        await twilio.stream(parameters, "MZ" + "1" * 32, caller_audio(3.0), stop=False)
        twiml = await twilio.twiml(twilio.base + "/twilio/after-stream", CALLER)
        (dial,) = twiml.iter("Dial")
        end = await twilio.twiml(dial.attrib["action"], CALLER | {"DialCallStatus": "failed"})
        assert [el.tag for el in end] == ["Hangup"]
        await wait_for(lambda: bool(hook.events("call.ended")))
    assert hook.events("transfer.failed")[0] == hook.events("transfer.failed")[0] | {
        "action_id": "t3",
        "status": "failed",
    }
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "transfer_failed"
    # after=now: the say queued before it never played
    assert [e["reason"] for e in hook.events("playback.interrupted")] == ["transfer"]


@pytest.mark.parametrize(
    ("env", "to", "error"),
    [
        ({}, "+19005550100", "+19005550100 is not in BRIDGE_TRANSFER_TO"),
        ({}, "sip:agent@pbx.example.com.evil.org", "is not in BRIDGE_TRANSFER_TO"),
        ({"BRIDGE_TRANSFER_TO": ""}, "+15550142", "set BRIDGE_TRANSFER_TO"),
    ],
)
async def test_a_transfer_outside_the_allow_list_is_refused(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    env: dict[str, str],
    to: str,
    error: str,
) -> None:
    hook, _ = webhook
    async with twilio_bridge(make_bridge, **env) as (twilio, _):
        parameters = await start_call(twilio)
        streaming = asyncio.create_task(twilio.stream(parameters, "MZ" + "1" * 32, caller_audio(6.0), stop=True))
        await wait_for(lambda: bool(hook.events("call.started")))
        call_id = hook.events("call.started")[0]["call"]["id"]
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        url = f"{twilio.base}/v1/calls/{call_id}/actions"
        body = {"actions": [{"type": "transfer", "id": "t4", "to": to}]}
        async with twilio.http.get(f"{twilio.base}/v1/calls/{call_id}", headers=headers) as resp:
            assert (await resp.json())["capabilities"]["transfer"] is bool(env.get("BRIDGE_TRANSFER_TO", "+1555"))
        async with twilio.http.post(url, json=body, headers=headers) as resp:
            assert resp.status == 202
            (result,) = (await resp.json())["actions"]
        assert result["status"] == "failed" and error in result["error"]
        bad = {"actions": [{"type": "transfer", "to": "+1 555 0142"}]}
        async with twilio.http.post(url, json=bad, headers=headers) as resp:
            assert resp.status == 422 and "actions[0].to" in (await resp.json())["error"]
        await streaming
        await wait_for(lambda: bool(hook.events("call.ended")))
    assert hook.events("action.failed")[0]["action_id"] == "t4"
    assert not hook.events("transfer.started")
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "stop"


async def test_the_callback_routes_check_signatures_and_tokens(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    async with twilio_bridge(make_bridge, TWILIO_AFTER_STREAM_URL="https://app.example/next") as (twilio, _):
        url = twilio.base + "/twilio/after-stream"
        async with twilio.http.post(url, data=CALLER, headers={"X-Twilio-Signature": "forged"}) as resp:
            assert resp.status == 403
        twiml = await twilio.twiml(url, CALLER)  # no transfer under way: the operator's next TwiML
        assert [(el.tag, el.text) for el in twiml] == [("Redirect", "https://app.example/next")]
        for forged in ("", "x", "e30.AAAA"):
            twiml = await twilio.twiml(
                f"{twilio.base}/twilio/dial-status?t={forged}", CALLER | {"DialCallStatus": "no-answer"}
            )
            assert [el.tag for el in twiml] == ["Hangup"]  # no stream back on a token the bridge did not sign
        async with twilio.http.get(f"{twilio.base}/transfer/announce.wav?t=e30.AAAA") as resp:
            assert resp.status == 403


async def test_a_call_on_the_operators_own_twiml_is_transferred_by_the_rest_api(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], aiohttp_server: Any
) -> None:
    """TwiML the bridge did not write (no resume token on the stream): the bridge updates the live call
    over Twilio's REST API with the same <Dial>, inline; Twilio then ends the stream itself, and a
    dial nobody answered still brings the caller back (the <Dial action> answers the call's stream)."""
    from aiohttp import web

    updates: list[tuple[str, dict[str, str], str]] = []

    async def update(request: web.Request) -> web.Response:
        form = await request.post()
        updates.append((request.path, {k: str(v) for k, v in form.items()}, request.headers["Authorization"]))
        return web.json_response({"sid": CALL_SID, "status": "in-progress"})

    api = web.Application()
    api.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}.json", update)
    api_server = await aiohttp_server(api, host="127.0.0.1")
    hook, _ = webhook
    transfer_bot(hook, {"type": "transfer", "id": "t5", "to": "+15550142", "after": "now"})
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_API_URL": str(api_server.make_url("")).rstrip("/")}
    async with twilio_bridge(make_bridge, **env) as (twilio, _):
        own = {"From": "+15550001", "To": "+15550002"}  # the operator's <Parameter>s: no bridge.resume
        streaming = asyncio.create_task(twilio.stream(own, "MZ" + "1" * 32, caller_audio(8.0), stop=False))
        await wait_for(lambda: bool(hook.events("transfer.started")))
        assert hook.events("transfer.started")[0]["method"] == "rest"
        (path, form, auth) = updates[0]
        assert path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json"
        assert auth.startswith("Basic ") and set(form) == {"Twiml"}
        dial = ET.fromstring(form["Twiml"]).find("Dial")
        assert dial is not None and dial.findtext("Number") == "+15550142"
        streaming.cancel()  # Twilio leaves <Connect> for the new TwiML: the stream goes
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
        back = await twilio.twiml(dial.attrib["action"], CALLER | {"DialCallStatus": "no-answer"})
        returned = {p.attrib["name"]: p.attrib["value"] for p in back.iter("Parameter")}
        hook.answer = None
        await twilio.stream(returned, "MZ" + "2" * 32, caller_audio(1.0, seed=3), stop=True)
        await wait_for(lambda: bool(hook.events("call.ended")))
    assert hook.events("transfer.failed")[0]["status"] == "no-answer"
    assert len({e["call"]["id"] for e in hook.events()}) == 1 and len(fake_gladia.sessions) == 1


@pytest.mark.recognition
async def test_the_briefing_is_the_bridges_own_voice_saying_the_announce(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], recognizer: Any
) -> None:
    """The person's phone fetches the whisper TwiML, then its <Play> URL: what it plays is the embedded
    voice speaking the bot's `announce`, transcribed back by the local recogniser."""
    import numpy as np

    from bridge.audio import resample
    from bridge.tools.speech import normalised_words
    from bridge.wav import read_wav

    hook, _ = webhook
    announce = "A caller asking about a lost card. The account is verified."
    transfer_bot(hook, {"type": "transfer", "id": "t6", "to": "+15550142", "after": "now", "announce": announce})
    async with twilio_bridge(make_bridge) as (twilio, _):
        parameters = await start_call(twilio)
        await twilio.stream(parameters, "MZ" + "1" * 32, caller_audio(2.0), stop=False)
        twiml = await twilio.twiml(twilio.base + "/twilio/after-stream", CALLER)
        (number,) = twiml.iter("Number")
        whisper = await twilio.twiml(number.attrib["url"], {"CallSid": "CA" + "9" * 32, "AccountSid": ACCOUNT_SID})
        (play,) = whisper.iter("Play")
        async with twilio.http.get(play.text or "") as resp:
            wav = read_wav(await resp.read())
    assert wav.seconds > 1.5
    text = recognizer.transcribe(resample(wav.samples, wav.sample_rate, 16000).astype(np.float32)).text
    said, got = normalised_words(announce), normalised_words(text)
    assert sum(w in got for w in said) >= 0.6 * len(said), (text, announce)
