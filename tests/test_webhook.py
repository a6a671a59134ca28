"""The webhook client seam: one signed POST, and its outcome with the bot's answer.

Signatures are checked with the ``standardwebhooks`` package's own verifier; the bot is a real
aiohttp server on 127.0.0.1 with scripted answers."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook

from bridge.backoff import Backoff
from bridge.delivery.context import DeliveryContext, PendingEvent
from bridge.delivery.queue import CallDelivery
from bridge.delivery.webhook import Delivered, Failed, WebhookClient, WebhookEvent, WebhookResponse
from bridge.settings import WebhookSettings
from tests.support.calls import WEBHOOK_SECRET
from tests.support.fakes import VirtualClock


class ScriptedBot:
    """Answers each POST with the next (status, body, content type) of its script, or 204."""

    def __init__(self) -> None:
        self.script: list[tuple[int, bytes, str]] = []
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        status, body, content_type = self.script.pop(0) if self.script else (204, b"", "")
        return web.Response(
            status=status,
            body=body or None,
            content_type=content_type or None,
            headers={"Location": "http://127.0.0.1:9/elsewhere"} if 300 <= status < 400 else None,
        )


@pytest.fixture
async def bot(aiohttp_server: Any) -> tuple[ScriptedBot, str]:
    fake = ScriptedBot()
    server: TestServer = await aiohttp_server(fake.app, host="127.0.0.1")
    return fake, str(server.make_url("/hook"))


async def test_a_delivered_event_is_signed_and_brings_the_bots_answer_home(bot: tuple[ScriptedBot, str]) -> None:
    fake, url = bot
    fake.script = [(200, b'{"actions":[{"type":"say","text":"Hello"}]}', "application/json")]
    event = WebhookEvent("msg_c1_1", '{"type":"call.started","sequence":1}')
    async with WebhookClient(url, secret=WEBHOOK_SECRET, timeout=2.0) as client:
        outcome = await client.post(event)
    assert isinstance(outcome, Delivered) and outcome.outcome == "delivered"
    assert outcome.response == WebhookResponse(200, "application/json", b'{"actions":[{"type":"say","text":"Hello"}]}')
    headers, body = fake.received[0]
    assert body == event.body.encode()
    Webhook(WEBHOOK_SECRET).verify(body, headers)  # the official verifier accepts it (raises otherwise)
    assert headers["webhook-id"] == "msg_c1_1"


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # Standard Webhooks' own example
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # the prefix is optional
        "whsec_" + base64.b64encode(b"\x00\xff" * 7 + b"x").decode().rstrip("="),  # padding left out
        "whsec_" + base64.b64encode(bytes(range(64))).decode(),  # a key longer than SHA-256's block
    ],
)
async def test_every_secret_the_package_reads_signs_what_its_verifier_accepts(
    bot: tuple[ScriptedBot, str], secret: str
) -> None:
    """The bridge signs with its own HMAC call: every secret shape the ``standardwebhooks`` package reads,
    its verifier accepts (a body with non-ASCII text too: the signature is over the UTF-8 bytes)."""
    fake, url = bot
    fake.script = [(204, b"", "")]
    event = WebhookEvent("msg_c1_9", '{"type":"utterance.final","text":"¿Qué tal? 你好"}')
    async with WebhookClient(url, secret=secret, timeout=2.0) as client:
        assert isinstance(await client.post(event), Delivered)
    headers, body = fake.received[0]
    Webhook(secret).verify(body, headers)


async def test_a_long_answer_is_cut_at_the_bound(bot: tuple[ScriptedBot, str]) -> None:
    fake, url = bot
    fake.script = [(200, b"x" * 5000, "text/plain")]
    async with WebhookClient(url, secret=None, timeout=2.0, max_response_bytes=1000) as client:
        outcome = await client.post(WebhookEvent("msg_c1_1", "{}"))
    assert isinstance(outcome, Delivered)
    assert outcome.response.body == b"x" * 1000 and outcome.response.truncated
    assert "webhook-signature" not in fake.received[0][0]


@pytest.mark.parametrize(
    ("status", "retryable", "label"),
    [
        (503, True, "http_503"),
        (429, True, "http_429"),
        (408, True, "http_408"),
        (500, True, "http_500"),
        (404, False, "http_404"),
        (400, False, "http_400"),
        (307, False, "http_307"),
        (301, False, "http_301"),
    ],
)
async def test_failures_say_whether_a_retry_may_work(
    bot: tuple[ScriptedBot, str], status: int, retryable: bool, label: str
) -> None:
    fake, url = bot
    fake.script = [(status, b"", "")]
    async with WebhookClient(url, secret=None, timeout=2.0) as client:
        outcome = await client.post(WebhookEvent("msg_c1_1", "{}"))
    assert isinstance(outcome, Failed)
    assert (outcome.status, outcome.retryable, outcome.outcome) == (status, retryable, label)
    if 300 <= status < 400:
        assert "not followed" in outcome.error and len(fake.received) == 1


async def test_no_answer_is_a_retryable_failure_without_status() -> None:
    from tests.support.process import free_port

    url = f"http://127.0.0.1:{free_port()}/hook"
    async with WebhookClient(url, secret=None, timeout=2.0) as client:
        outcome = await client.post(WebhookEvent("msg_c1_1", "{}"))
    assert isinstance(outcome, Failed) and outcome.retryable and outcome.status is None
    assert outcome.outcome == "error"


async def test_each_answer_reaches_the_call_in_event_order(bot: tuple[ScriptedBot, str]) -> None:
    """A call's delivery hands every 2xx answer to its handler, in sequence order, once, after the
    retries it took (a 503 first here), in virtual time."""
    fake, url = bot
    fake.script = [(503, b"", ""), (200, b'{"n":1}', "application/json"), (200, b'{"n":2}', "application/json")]
    clock = VirtualClock()
    answers: list[tuple[int, bytes]] = []
    done = asyncio.Event()
    async with WebhookClient(url, secret=None, timeout=2.0) as client:
        settings = WebhookSettings(url=url)
        context = DeliveryContext(
            settings=settings,
            client=client,
            outbox=None,
            metrics=None,
            backoff=Backoff(1.0, 1.0, jitter=0.0),
            clock=clock.time,
            sleep=clock.sleep,
        )

        def on_response(event: PendingEvent, response: WebhookResponse) -> None:
            answers.append((event.sequence, response.body))

        delivery = CallDelivery("c1", context, on_done=lambda _: done.set(), on_response=on_response)
        delivery.submit("call.started", {})
        delivery.submit("utterance.final", {})
        delivery.close()
        await asyncio.wait_for(done.wait(), 5)
    assert answers == [(1, b'{"n":1}'), (2, b'{"n":2}')]
    assert delivery.counters.delivered == 2 and clock.slept == 1.0
