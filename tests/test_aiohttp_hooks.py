"""The private aiohttp behaviour the bridge relies on, checked by name on the installed aiohttp: if an
upgrade changes one of these hooks, this fails saying which, and where the bridge uses it (pyproject
pins aiohttp to the minor range these were checked on).

- ``bridge/phone_connection.py`` takes an upgraded connection over: ``request.protocol.set_parser``,
  ``keep_alive``, ``transport.set_protocol``, and forwards write pauses and the end of the connection
  to aiohttp's ``RequestHandler``.
- ``bridge/app.py``'s connection cap swaps the class of the server ``AppRunner._make_server`` returns,
  overrides ``Server.connection_made`` and reads ``RequestHandler._current_request``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

pytestmark = pytest.mark.timeout(30)


def _missing(kind: type, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not callable(getattr(kind, n, None))]


def test_the_classes_still_have_the_methods_the_bridge_overrides_or_calls() -> None:
    """RequestHandler, Server and AppRunner still have every method the phone socket and the cap use."""
    version = aiohttp.__version__
    handler = ("set_parser", "keep_alive", "force_close", "pause_writing", "resume_writing", "connection_lost")
    assert not _missing(web.RequestHandler, handler), (
        f"aiohttp {version}: RequestHandler lost {_missing(web.RequestHandler, handler)}: "
        "bridge/phone_connection.py takes upgraded connections over through them"
    )
    assert not _missing(web.Server, ("connection_made",)), (
        f"aiohttp {version}: Server.connection_made is gone: bridge/app.py's connection cap overrides it"
    )
    assert not _missing(web.AppRunner, ("_make_server",)), (
        f"aiohttp {version}: AppRunner._make_server is gone: bridge/app.py's BridgeRunner wraps it"
    )


async def test_a_live_connection_exposes_what_the_bridge_reads(aiohttp_server: Any) -> None:
    """During a request its handler's ``_current_request`` is the request, between requests None; the
    request's transport can be given a new protocol; the server is a plain ``web.Server``."""
    seen: dict[str, Any] = {}

    async def handle(request: web.Request) -> web.Response:
        seen["current"] = getattr(request.protocol, "_current_request", "missing") is request
        seen["set_protocol"] = callable(getattr(request.transport, "set_protocol", None))
        seen["handler"] = request.protocol
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/")) as resp:
        assert resp.status == 200
        await asyncio.sleep(0.05)  # the keep-alive connection is idle now
        idle = getattr(seen["handler"], "_current_request", "missing")
    version = aiohttp.__version__
    assert seen["current"], f"aiohttp {version}: RequestHandler._current_request is not the request being handled"
    assert idle is None, f"aiohttp {version}: an idle connection's _current_request is {idle!r}, not None"
    assert seen["set_protocol"], f"aiohttp {version}: the request's transport has no set_protocol"
    assert type(server.runner.server) is web.Server, (
        f"aiohttp {version}: AppRunner makes a {type(server.runner.server)}"
    )
