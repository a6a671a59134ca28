"""Gladia's REST side for live sessions: ``POST /v2/live`` (create) and ``GET /v2/live/{id}`` (read
back), with one place where network and HTTP failures become :class:`~bridge.errors.SttError`
(retryable or not). Redirects are never followed: the API key must not travel to another host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from bridge.errors import SttError, http_status_retryable
from bridge.settings import GladiaSettings
from bridge.stt.read_back import ReadBack, read_back

MAX_READ_BACK = 32 * 1024 * 1024  # bytes of a session read back (its transcript, messages and add-ons)


@dataclass(frozen=True, slots=True)
class LiveSession:
    """What ``POST /v2/live`` answers: the session's id and its WebSocket URL."""

    id: str
    url: str


class GladiaApi:
    def __init__(self, http: aiohttp.ClientSession, settings: GladiaSettings) -> None:
        if settings.api_url is None:
            raise ValueError("gladia.api_url is not set")
        self._http = http
        self._settings = settings
        self._base = settings.api_url
        self._headers = {"x-gladia-version": "telephony-gladia-bridge"}
        if settings.api_key is not None:
            self._headers["x-gladia-key"] = settings.api_key.get_secret_value()

    async def create(self, body: dict[str, Any]) -> LiveSession:
        """``POST /v2/live``: a new live session for ``body`` (a ``StreamingRequest``).

        Raises:
            SttError: refused (``retryable`` for 408/425/429/5xx) or unreachable (retryable).
        """
        params = {"region": self._settings.region} if self._settings.region else None
        async with self._request("POST", "/v2/live", "POST /v2/live", json=body, params=params) as resp:
            if resp.status not in (200, 201):
                detail = (await resp.text())[:300]
                raise SttError(
                    f"POST /v2/live answered {resp.status}: {detail}",
                    retryable=http_status_retryable(resp.status),
                    status=resp.status,
                )
            data = await resp.json(content_type=None)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("url"), str):
            raise SttError("POST /v2/live answer has no id/url", retryable=True)
        return LiveSession(data["id"], data["url"])

    async def read(self, session_id: str) -> ReadBack:
        """``GET /v2/live/{id}``: where the session stands and, once it is done, what it holds
        (:func:`~bridge.stt.read_back.read_back`). The answer is read up to :data:`MAX_READ_BACK` bytes.

        Raises:
            SttError: refused, unreachable, or an answer over the bound (not retryable).
        """
        async with self._request("GET", f"/v2/live/{session_id}", "GET /v2/live/{id}") as resp:
            if resp.status != 200:
                raise SttError(
                    f"GET /v2/live/{{id}} answered {resp.status}",
                    retryable=http_status_retryable(resp.status),
                    status=resp.status,
                )
            if (resp.content_length or 0) > MAX_READ_BACK:
                raise SttError(f"GET /v2/live/{{id}} answer over {MAX_READ_BACK} bytes", retryable=False)
            body = bytearray()
            async for chunk in resp.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > MAX_READ_BACK:
                    raise SttError(f"GET /v2/live/{{id}} answer over {MAX_READ_BACK} bytes", retryable=False)
        try:
            data = orjson.loads(body)
        except ValueError:
            raise SttError("GET /v2/live/{id} answer is not JSON", retryable=True) from None
        return read_back(data)

    @asynccontextmanager
    async def _request(self, method: str, path: str, name: str, **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """The one place where a failure to talk to Gladia becomes an :class:`SttError`."""
        try:
            async with self._http.request(
                method,
                self._base + path,
                headers=self._headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._settings.http_timeout),
                **kwargs,
            ) as resp:
                yield resp
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise SttError(f"{name} failed: {type(exc).__name__}", retryable=True) from exc
