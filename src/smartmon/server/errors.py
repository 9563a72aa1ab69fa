"""Every error leaves the server as {error, detail, field} with the right status.

Handlers raise `ApiError` (or a subclass); Litestar's own exceptions and storage errors are
mapped here, once. Nothing else may turn into a 500 with a stack trace.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

log = logging.getLogger("smartmon.server")

ERROR_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


class ErrorBody(msgspec.Struct):
    """The JSON body of every error response."""

    error: str
    detail: str
    field: str | None = None


class ApiError(Exception):
    """An error meant for the client."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        error: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error or ERROR_NAMES.get(status, "error")
        self.detail = detail
        self.field = field
        self.headers = headers or {}


def unauthorized(detail: str = "a valid access token is required") -> ApiError:
    """401 with the Bearer challenge."""
    return ApiError(401, detail, headers={"www-authenticate": 'Bearer realm="smartmon"'})


def not_found(what: str) -> ApiError:
    """404 that looks the same whether the object is missing or belongs to someone else."""
    return ApiError(404, f"{what} not found")


def _response(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


_PATH_IN_MESSAGE = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING_FIELD = re.compile(r"^Object missing required field `([^`]+)`")


def validation_body(message: str) -> ErrorBody:
    """Turn a msgspec message ("Expected `int` - at `$.a[0].b`") into an ErrorBody."""
    match = _PATH_IN_MESSAGE.search(message)
    field = match.group(1) if match else None
    detail = message[: match.start()] if match else message
    missing = _MISSING_FIELD.match(detail)
    if missing:  # the path names the object; the field is the one it lacks
        field = f"{field}.{missing.group(1)}" if field else missing.group(1)
    return ErrorBody("invalid", detail, field or None)


def _from_validation(exc: ValidationException) -> tuple[int, ErrorBody]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    first = extra[0] if extra and isinstance(extra[0], dict) else {}
    message = str(first.get("message") or exc.detail)
    key = first.get("key")
    if key == "data" and message == repr(key):  # no body at all (Litestar's KeyError)
        return 400, ErrorBody("missing_body", "the request needs a JSON body", None)
    if (
        "malformed" in message.lower()
        or "JSON is malformed" in message
        or "decode" in message.lower()
    ):
        return 400, ErrorBody("malformed_json", "the request body is not valid JSON", None)
    body = validation_body(message)
    if key and key not in ("", "data", "body"):
        body.field = str(key) if body.field is None else f"{key}.{body.field}"
    status = 400 if first.get("source") in ("path", "query", "header") else 422
    return status, body


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The one exception handler of the app."""
    if isinstance(exc, ApiError):
        return _response(exc.status, ErrorBody(exc.error, exc.detail, exc.field), exc.headers)
    if isinstance(exc, ValidationException):
        status, body = _from_validation(exc)
        return _response(status, body)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        name = ERROR_NAMES.get(status, "error")
        if status == 413:
            detail = "the request body is too large"
        elif status == 400 and ("malformed" in detail.lower() or "truncated" in detail.lower()):
            name, detail = "malformed_json", "the request body is not valid JSON"
        return _response(status, ErrorBody(name, detail), exc.headers)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return _response(
            503, ErrorBody("unavailable", "the database is busy; retry"), {"retry-after": "1"}
        )
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _response(500, ErrorBody("internal", "an unexpected error occurred; it has been logged"))
