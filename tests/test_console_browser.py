"""The console page (issue 32): ``GET /console`` and its files, off without the API token, under a strict
Content-Security-Policy."""

from __future__ import annotations

import aiohttp

from bridge.http.console import CSP, TYPES
from tests.support.calls import BridgeFactory

TOKEN = "console-test-token-0123456789"


# -- the routes, without a browser ----------------------------------------------------------------------


async def test_console_is_off_without_the_api_token(make_bridge: BridgeFactory) -> None:
    """No BRIDGE_API_TOKEN, no /v1/ API: the page and its files answer 404."""
    server = await make_bridge()
    async with aiohttp.ClientSession() as http:
        for path in ("/console", "/console/console.js"):
            async with http.get(server.make_url(path)) as resp:
                assert resp.status == 404, path


async def test_console_files_carry_a_strict_policy(make_bridge: BridgeFactory) -> None:
    """With the token set: the page and each of its files, typed, under a CSP that allows no inline script
    or style and no other origin; any other name is 404; the page links only its own files."""
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN})
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/console")) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert resp.headers["Content-Security-Policy"] == CSP
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            page = await resp.text()
        for name, content_type in TYPES.items():
            async with http.get(server.make_url(f"/console/{name}")) as resp:
                assert resp.status == 200 and resp.content_type == content_type, name
                assert resp.headers["Content-Security-Policy"] == CSP
        for name in ("nope.js", "..%2Fapp.py", "%2e%2e"):
            async with http.get(server.make_url(f"/console/{name}")) as resp:
                assert resp.status == 404, name
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"):
        assert directive in CSP
    assert "unsafe" not in CSP and "http" not in CSP
    assert "<script>" not in page and "style=" not in page and "//" not in page.replace("<!doctype html>", "")
