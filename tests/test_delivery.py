"""Webhook delivery against a misbehaving bot: redirects are failures, never followed."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestServer

from tests.support.calls import BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirecting_bot_gets_nothing_followed(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    aiohttp_server: Any,
    status: int,
) -> None:
    """Attack: the bot answers 3xx with a Location on another host. The bridge follows nothing (a
    301/302 became a body-less GET counted as delivered; a 307 re-POSTed the signed transcript
    elsewhere): the other host gets no request, the event is dead-lettered, not counted delivered, and
    the log line names the Location."""
    hook, _ = webhook
    elsewhere = FakeWebhook()
    other: TestServer = await aiohttp_server(elsewhere.app, host="127.0.0.1")
    hook.location = str(other.make_url("/hook"))
    hook.fail_statuses = [status]  # the first event (call.started) is redirected, the rest accepted
    server: Any = await make_bridge()
    with structlog.testing.capture_logs() as logs:
        assert await play_call(str(server.make_url("/twilio/stream")), caller_audio(1.0)) == 1000
        await wait_for(lambda: bool(hook.events("transcript.completed")))
    assert elsewhere.requests == []
    assert hook.requests[0].status == status
    assert [e["type"] for e in hook.events()] == ["utterance.final", "call.ended", "transcript.completed"]
    (dead,) = [line for line in logs if line["event"] == "webhook.dead_lettered"]
    assert dead["status"] == status and hook.location in dead["error"] and dead["attempts"] == 1
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["webhook_failed"] == 1
