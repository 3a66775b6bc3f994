"""`GET /` and `/dashboard/...`: the dashboard's static files, served as they are.

Only files that ship in `static/` and the pinned files of `vendor.lock.json` are served, each with
a fixed content type; nothing is rendered on the server and nothing here touches Redis, so the
page cannot slow or break the websocket service beside it. When the chart library was never
fetched (`python -m services.gateway.dashboard.vendor`), its URL answers 404 and the page says
charts are unavailable; everything else still works.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, PlainTextResponse, Response

from services.gateway.dashboard.vendor import VENDOR_DIR, VendorError, read_lock

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PREFIX = "/dashboard/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    "": "text/plain; charset=utf-8",  # LICENSE
}
# What the page may load and do (issue 19): its own gateway's files and websocket, nothing inline,
# no other origin, no framing. Each directive, and why:
CSP_DIRECTIVES = {
    # anything not named below (fonts, frames, objects, workers, media, manifests): nothing
    "default-src": "'none'",
    # the page's modules and the vendored chart library; no inline <script>, no on* attributes,
    # no eval or new Function (the page uses none of them)
    "script-src": "'self'",
    # dashboard.css alone; no <style> and no style attributes (the chart library writes its
    # styles through the CSSOM, which CSP allows; its one <style>, for the TradingView logo,
    # is not made: chart.js turns the logo off and the footer credits TradingView)
    "style-src": "'self'",
    # the favicon; the charts are canvases
    "img-src": "'self'",
    # the gateway's own /ws: CSP Level 3 matches ws: and wss: of the page's host and port to
    # 'self'; the page never connects elsewhere (connection.js `websocketUrl`: the URL is the
    # page's own, nobody can type another)
    "connect-src": "'self'",
    # no injected <base> can move the page's relative URLs (its modules, its websocket)
    "base-uri": "'none'",
    # the key form is read by script and never submitted; without script it would put the key
    # into a URL and the server's log
    "form-action": "'none'",
    # nobody frames the page (clickjacking)
    "frame-ancestors": "'none'",
}
CONTENT_SECURITY_POLICY = "; ".join(f"{name} {value}" for name, value in CSP_DIRECTIVES.items())
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_files(static_dir: Path = STATIC_DIR, vendor_dir: Path = VENDOR_DIR) -> dict[str, Path]:
    """URL path (below the prefix) -> file, for every file that may be served."""
    files: dict[str, Path] = {}
    if static_dir.is_dir():
        for path in sorted(static_dir.rglob("*")):
            if path.is_file() and path.suffix in CONTENT_TYPES and path.suffix:
                files[path.relative_to(static_dir).as_posix()] = path
    try:
        for name in read_lock().files.values():
            files[f"vendor/{name}"] = vendor_dir / name
    except (OSError, ValueError, KeyError, VendorError) as error:
        log.warning("dashboard: no vendor lock (%s): charts will be unavailable", error)
    return files


def _file(path: Path | None) -> Response:
    if path is None or not path.is_file():
        return PlainTextResponse("not found\n", status_code=404, headers=SECURITY_HEADERS)
    media_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=SECURITY_HEADERS)


def dashboard_routes(
    api: FastAPI, static_dir: Path = STATIC_DIR, vendor_dir: Path = VENDOR_DIR
) -> None:
    """Add `GET /` (the page) and `GET /dashboard/{file}` (its files) to the gateway's app."""
    files = static_files(static_dir, vendor_dir)

    @api.get("/", include_in_schema=False)
    async def index() -> Response:
        return _file(files.get("index.html"))

    @api.get(PREFIX + "{name:path}", include_in_schema=False)
    async def asset(name: str) -> Response:
        return _file(files.get(name))
