"""ASGI middleware: security headers on every response, gzip request bodies with limits."""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

from smartmon.server.errors import ErrorBody

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
API_ONLY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]


def security_headers(message: Any, scope: Any) -> None:
    """before_send hook: security headers on every HTTP response.

    A hook rather than a middleware: Litestar runs hooks for everything it sends, including
    the router's own 404/405 answers and CORS preflight refusals, which bypass middleware.
    """
    if message["type"] != "http.response.start":
        return
    extra = SECURITY_HEADERS + (API_ONLY_HEADERS if scope["path"].startswith("/api") else [])
    headers = list(message.get("headers") or [])
    present = {bytes(name).lower() for name, _ in headers}
    message["headers"] = headers + [(k, v) for k, v in extra if k not in present]


async def _reply(send: Any, status: int, body: ErrorBody) -> None:
    content = msgspec.json.encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content, "more_body": False})


def decompress_requests(max_bytes: int) -> type:
    """Middleware factory: inflate `Content-Encoding: gzip` bodies, at most max_bytes each way."""

    class Decompress:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            headers = dict(scope["headers"])
            encoding = (
                headers.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
            )
            if encoding in ("", "identity"):
                await self.app(scope, receive, send)
                return
            if encoding not in ("gzip", "x-gzip"):
                await _reply(
                    send,
                    415,
                    ErrorBody(
                        "unsupported_media_type",
                        f"unsupported Content-Encoding {encoding!r}; use gzip",
                    ),
                )
                return
            compressed = bytearray()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                compressed += message.get("body", b"")
                if len(compressed) > max_bytes:
                    await _reply(
                        send,
                        413,
                        ErrorBody(
                            "too_large", f"the request body is larger than {max_bytes} bytes"
                        ),
                    )
                    return
                if not message.get("more_body", False):
                    break
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                body = inflater.decompress(bytes(compressed), max_bytes + 1)
            except zlib.error:
                await _reply(send, 400, ErrorBody("bad_encoding", "the body is not valid gzip"))
                return
            if len(body) > max_bytes or inflater.unconsumed_tail:
                await _reply(
                    send,
                    413,
                    ErrorBody(
                        "too_large", f"the decompressed body is larger than {max_bytes} bytes"
                    ),
                )
                return
            if not inflater.eof:
                await _reply(send, 400, ErrorBody("bad_encoding", "the gzip body is truncated"))
                return
            new_headers = [
                (k, v)
                for k, v in scope["headers"]
                if k not in (b"content-encoding", b"content-length")
            ] + [(b"content-length", str(len(body)).encode())]
            sent = False

            async def replay() -> Any:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app({**scope, "headers": new_headers}, replay, send)

    return Decompress
