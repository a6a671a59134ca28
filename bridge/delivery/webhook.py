"""The bot webhook client: one signed POST of one event, and what came of it.

:meth:`WebhookClient.post` never raises for a network or HTTP failure: it returns a
:data:`PostOutcome`, either :class:`Delivered` (a 2xx, with the bot's :class:`WebhookResponse`:
status, content type and the first ``max_response_bytes`` of the body, which is where a bot's
answer to an event lives) or :class:`Failed` (whether a retry may succeed, the HTTP status if
there was one, a short error). Retry policy, ordering and storage are the caller's
(:mod:`bridge.delivery`); this module only speaks HTTP.

Signing follows Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature:
v1,<base64 HMAC-SHA256 of "id.timestamp.body">``): the secret is read as the ``standardwebhooks``
package reads it (``whsec_`` then base64) and each event signed with one call to OpenSSL's HMAC
(the package's ``Webhook.sign`` builds an HMAC object and a datetime per event); the tests check the
signatures with the package's ``verify``.
Redirects are failures, never followed: a 301/302 would turn the POST into a body-less GET that
counts as delivered, a 307/308 would send the signed transcript to another host.

The POSTs go over :class:`~bridge.delivery.http_post.HttpPool`'s keep-alive connections to the URL's
origin (no task per POST, the answer read by llhttp; aiohttp's client costs about twice the CPU per
event): close the client with :meth:`WebhookClient.aclose` (or ``async with``).
"""

from __future__ import annotations

import base64
import hmac
import time
from dataclasses import dataclass
from typing import Literal

from yarl import URL

from bridge.delivery.http_post import HttpPool
from bridge.errors import PostFailed, http_status_retryable

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
    """POSTs events to one URL, signed when a secret is set. Close it (:meth:`aclose`): it keeps connections."""

    def __init__(
        self,
        url: str,
        *,
        secret: str | None,
        timeout: float,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.url = url
        parsed = URL(url)  # parsed once, not per POST
        self._pool = HttpPool(parsed)
        self._target = parsed.raw_path_qs
        # user:password in the URL is HTTP Basic authentication, as aiohttp sent it
        credentials = f"{parsed.user or ''}:{parsed.password or ''}".encode("latin-1") if parsed.user else None
        self._authorization = f"Basic {base64.b64encode(credentials).decode()}" if credentials else None
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._key = secret_key(secret) if secret else None

    async def aclose(self) -> None:
        """Close the connections kept to the bot (call it after the last POST; a later POST opens one again)."""
        await self._pool.aclose()

    async def __aenter__(self) -> WebhookClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    def headers(self, event: WebhookEvent, body: bytes | None = None) -> list[tuple[str, str]]:
        """The event's headers, signed now (``body``: the event's body encoded, if it already is)."""
        stamp = str(int(time.time()))
        headers = [
            ("content-type", "application/json"),
            ("user-agent", "telephony-gladia-bridge"),
            ("webhook-id", event.webhook_id),
            ("webhook-timestamp", stamp),
        ]
        if self._key is not None:
            signed = b"%s.%s.%s" % (event.webhook_id.encode(), stamp.encode(), body or event.body.encode())
            signature = base64.b64encode(hmac.digest(self._key, signed, "sha256")).decode()
            headers.append(("webhook-signature", f"v1,{signature}"))
        if self._authorization is not None:
            headers.append(("Authorization", self._authorization))
        return headers

    async def post(self, event: WebhookEvent) -> PostOutcome:
        started = time.monotonic()
        body = event.body.encode()
        headers = self.headers(event, body)  # the pool adds Host first and Content-Length last
        try:
            # the whole answer, however many writes it came in, up to the bound
            status, answer_headers, answer, truncated = await self._pool.post(
                self._target, headers, body, self.timeout, self.max_response_bytes
            )
        except PostFailed as exc:
            return Failed(str(exc)[:200], retryable=True)
        if 200 <= status < 300:
            return Delivered(
                WebhookResponse(
                    status=status,
                    content_type=answer_headers.get("content-type", ""),
                    body=answer,
                    truncated=truncated,
                ),
                latency=time.monotonic() - started,
            )
        if 300 <= status < 400:
            location = answer_headers.get("location", "")[:200]
            return Failed(
                f"webhook answered {status} (redirect to {location!r} not followed: "
                "set BOT_WEBHOOK_URL to the final URL)",
                retryable=False,
                status=status,
            )
        return Failed(f"webhook answered {status}", retryable=http_status_retryable(status), status=status)


def secret_key(secret: str) -> bytes:
    """A Standard Webhooks secret's key, read as the ``standardwebhooks`` package reads it: ``whsec_``
    (optional) then base64, padding optional. The settings check it at start-up with the package itself."""
    return base64.b64decode(secret.removeprefix("whsec_") + "==")
