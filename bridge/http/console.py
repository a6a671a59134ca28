"""The console page (issue 32): ``GET /console`` and its static files, ``GET /console/<file>``.

The page is static HTML, CSS and JavaScript shipped in the package (``bridge/console/static/``): no build
step, nothing fetched from elsewhere. It asks for ``BRIDGE_API_TOKEN`` once, keeps it in the tab's
``sessionStorage`` and reads everything through the ``/v1/`` API with ``Authorization: Bearer``, so it
adds no privilege of its own: the files themselves are no secret, and the routes answer 404 while the
API is off (no token configured).

Every answer carries a strict ``Content-Security-Policy`` (:data:`CSP`): scripts and styles only from the
page's own files (no inline script or style, no ``eval``), requests only to the bridge itself, audio from
the bridge or from the ``blob:`` URLs the page makes of a recording it fetched with the token (an
``<audio>`` element cannot send a header), no frames, no plugins, no forms posted anywhere.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from bridge.app_keys import SETTINGS

# The page's own files and their types; nothing else under /console/ is served.
TYPES = {
    "index.html": "text/html",
    "console.css": "text/css",
    "api.js": "text/javascript",
    "console.js": "text/javascript",
    "live.js": "text/javascript",
    "past.js": "text/javascript",
    "render.js": "text/javascript",
}

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "media-src 'self' blob:",
        "img-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated each load: a new bridge version's files are never mixed
}

FILES = web.AppKey("console_files", dict)


def _load() -> dict[str, bytes]:
    """Every file of :data:`TYPES`, read once from the package (a missing one fails at start-up)."""
    folder = resources.files("bridge.console").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in TYPES}


def _serve(request: web.Request, name: str) -> web.Response:
    if request.app[SETTINGS].reply.api_token is None:  # the API is off: so is its page
        raise web.HTTPNotFound(text="the console needs BRIDGE_API_TOKEN (it reads the /v1/ API)\n")
    body = request.app[FILES].get(name)
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type=TYPES[name], charset="utf-8", headers=HEADERS)


async def console_page(request: web.Request) -> web.Response:
    """``GET /console``: the page."""
    return _serve(request, "index.html")


async def console_file(request: web.Request) -> web.Response:
    """``GET /console/<file>``: one of the page's files (404 for any other name)."""
    return _serve(request, request.match_info["name"])


def add_routes(app: web.Application) -> None:
    """``GET /console`` and ``GET /console/{name}`` (404 while ``BRIDGE_API_TOKEN`` is unset)."""
    app[FILES] = _load()
    app.router.add_get("/console", console_page)
    app.router.add_get("/console/{name}", console_file)
