"""The agent's two requests (enroll, deliver a report) over the standard library's http.client.

The agent runs on small devices with a memory budget: httpx (and with it smartmon.client)
costs about 9 MB of resident memory before it sends a byte, http.client about a third of
that. The protocol is the same as smartmon.client's: JSON, camelCase, Bearer tokens,
error bodies {"error", "detail", "field"} and Retry-After.

Exceptions (all SendError): Unreachable (no HTTP answer: refused, DNS, timeout, reset),
Refused (an error status; `.status`, `.detail`, `.retry_after`), BadAnswer (a success
status with a body that is not what the endpoint promises).
"""

from __future__ import annotations

import http.client
import socket
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from smartmon import __version__, wire

USER_AGENT = f"smartmon-agent/{__version__}"
TIMEOUT_S = 10.0
_Answer = TypeVar("_Answer")


class SendError(Exception):
    """Base of every error the sender raises."""


class Unreachable(SendError):
    """The server gave no HTTP answer."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the server at {url}: {reason}")
        self.reason = reason


class Refused(SendError):
    """The server answered with an error status."""

    def __init__(self, status: int, error: str, detail: str, retry_after: float | None) -> None:
        super().__init__(f"{detail} ({status} {error})")
        self.status = status
        self.error = error
        self.detail = detail
        self.retry_after = retry_after


class BadAnswer(SendError):
    """A success status whose body is not what the endpoint promises."""


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _refusal(status: int, reason: str, body: bytes, retry_after: str | None) -> Refused:
    error, detail = "http_error", reason or "request failed"
    try:
        parsed: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = str(parsed.get("error", error))
        detail = str(parsed.get("detail", detail))
    return Refused(status, error, detail, _retry_after(retry_after))


class Sender:
    """One keep-alive connection to a server, reopened whenever it breaks."""

    def __init__(self, base_url: str, *, timeout: float = TIMEOUT_S) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def enroll(self, token: str, registration: wire.DeviceRegistration) -> wire.DeviceCredentials:
        """POST /api/monitor/register with an enrollment or access token."""
        return self._call(
            "/api/monitor/register",
            wire.encode(registration),
            {"authorization": f"Bearer {token}"},
            wire.DeviceCredentials,
        )

    def post_report(self, device_key: str, gzipped_report: bytes) -> wire.IngestResult:
        """POST /api/monitor/connections with a gzip-compressed report."""
        return self._call(
            "/api/monitor/connections",
            gzipped_report,
            {"authorization": f"Bearer {device_key}", "content-encoding": "gzip"},
            wire.IngestResult,
        )

    def _call(
        self, path: str, body: bytes, headers: dict[str, str], answer: type[_Answer]
    ) -> _Answer:
        status, reason, content, retry_after = self._post(path, body, headers)
        if status >= 400:
            raise _refusal(status, reason, content, retry_after)
        try:
            return msgspec.json.decode(content, type=answer)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadAnswer(f"the server's answer to {path} was not understood: {exc}") from None

    def _post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, bytes, str | None]:
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "content-length": str(len(body)),
            **headers,
        }
        reused = self._connection is not None
        try:
            return self._exchange(path, body, headers)
        except (OSError, http.client.HTTPException) as first:
            self.close()
            if not reused or isinstance(first, TimeoutError | socket.timeout):
                raise Unreachable(self.base_url, _describe(first)) from None
        # The server closed an idle keep-alive connection: one fresh attempt. Posting twice
        # is safe, the server dedupes reports by reportId.
        try:
            return self._exchange(path, body, headers)
        except (OSError, http.client.HTTPException) as second:
            self.close()
            raise Unreachable(self.base_url, _describe(second)) from None

    def _exchange(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, bytes, str | None]:
        connection = self._connection or self._open()
        self._connection = connection
        connection.request("POST", self._prefix + path, body=body, headers=headers)
        response = connection.getresponse()
        content = response.read()
        if response.will_close:
            self.close()
        return response.status, response.reason, content, response.getheader("retry-after")

    def _open(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if self._https:
            import ssl

            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        connection.connect()
        if connection.sock is not None:
            # One request is one write, but a reused connection must not wait on Nagle.
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(error, socket.gaierror):
        return f"unknown host ({error.strerror})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
