"""The bot webhook client: one signed POST of one event, and what came of it.

:meth:`WebhookClient.post` never raises for a network or HTTP failure: it returns a
:data:`PostOutcome`, either :class:`Delivered` (a 2xx, with the bot's :class:`WebhookResponse`:
status, content type and the first ``max_response_bytes`` of the body, which is where a bot's
answer to an event lives) or :class:`Failed` (whether a retry may succeed, the HTTP status if
there was one, a short error). Retry policy, ordering and storage are the caller's
(:mod:`bridge.delivery`); this module only speaks HTTP.

Signing follows Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature:
v1,<base64 HMAC-SHA256 of "id.timestamp.body">``) with the ``standardwebhooks`` package.
Redirects are failures, never followed: a 301/302 would turn the POST into a body-less GET that
counts as delivered, a 307/308 would send the signed transcript to another host.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import aiohttp
from standardwebhooks.webhooks import Webhook
from yarl import URL

from bridge.errors import http_status_retryable
from bridge.untrusted import read_bounded

MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One event as it goes on the wire: its stable id (kept across retries) and its JSON body."""

    webhook_id: str
    body: str


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    """What the bot answered to a delivered event."""

    status: int
    content_type: str
    body: bytes  # at most MAX_RESPONSE_BYTES; longer answers are cut (``truncated``)
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Delivered:
    response: WebhookResponse
    latency: float  # seconds from the request to the end of the answer

    @property
    def outcome(self) -> Literal["delivered"]:
        return "delivered"


@dataclass(frozen=True, slots=True)
class Failed:
    error: str
    retryable: bool
    status: int | None = None  # None: no HTTP answer (connection error, timeout)

    @property
    def outcome(self) -> str:
        """The metrics label: ``http_<status>`` or ``error``."""
        return f"http_{self.status}" if self.status else "error"


PostOutcome = Delivered | Failed


class WebhookClient:
    """POSTs events to one URL, signed when a secret is set."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        *,
        secret: str | None,
        timeout: float,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.http = http
        self.url = url
        self._url = URL(url)  # parsed once, not per POST
        self.timeout = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_response_bytes = max_response_bytes
        self.signer = Webhook(secret) if secret else None

    def headers(self, event: WebhookEvent) -> dict[str, str]:
        now = datetime.now(tz=UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "telephony-gladia-bridge",
            "webhook-id": event.webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if self.signer is not None:
            headers["webhook-signature"] = self.signer.sign(event.webhook_id, now, event.body)
        return headers

    async def post(self, event: WebhookEvent) -> PostOutcome:
        started = time.monotonic()
        try:
            async with self.http.post(
                self._url,
                data=event.body.encode(),
                headers=self.headers(event),
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if 200 <= resp.status < 300:
                    # the whole answer, however many writes it came in, up to the bound
                    body, truncated = await read_bounded(resp.content, self.max_response_bytes)
                    return Delivered(
                        WebhookResponse(
                            status=resp.status,
                            content_type=resp.headers.get("Content-Type", ""),
                            body=body,
                            truncated=truncated,
                        ),
                        latency=time.monotonic() - started,
                    )
                if 300 <= resp.status < 400:
                    location = resp.headers.get("Location", "")[:200]
                    return Failed(
                        f"webhook answered {resp.status} (redirect to {location!r} not followed: "
                        "set BOT_WEBHOOK_URL to the final URL)",
                        retryable=False,
                        status=resp.status,
                    )
                return Failed(
                    f"webhook answered {resp.status}", retryable=http_status_retryable(resp.status), status=resp.status
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Failed(f"{type(exc).__name__}: {exc}"[:200], retryable=True)
