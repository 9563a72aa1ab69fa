"""The typed HTTP client used by the CLI, TUI, agent and simulator.

Exceptions (all subclasses of ClientError):
- ServerUnreachable: no HTTP answer (refused, DNS, timeout, TLS).
- ApiError: the server answered with an error status; `.status`, `.error`, `.detail`,
  `.field` and `.retry_after` come from the server's JSON error body.

Both `Client` (sync) and `AsyncClient` build requests with the same `_Calls` table and
parse answers with `_parse`, so they cannot drift apart. The transport is the test seam.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import httpx
import msgspec

from smartmon import __version__, wire

USER_AGENT = f"smartmon/{__version__}"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
GZIP_MIN_BYTES = 1024


class ClientError(Exception):
    """Base of every error the client raises."""


class ServerUnreachable(ClientError):
    """The server gave no HTTP answer."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the server at {url}: {reason}")
        self.url = url
        self.reason = reason


class ApiError(ClientError):
    """The server answered with an error status."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{detail} ({status} {error})")
        self.status = status
        self.error = error
        self.detail = detail
        self.field = field
        self.retry_after = retry_after


@dataclass(frozen=True)
class Call:
    """One API request, before it is sent."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    content: bytes | None = None
    headers: Mapping[str, str] | None = None
    token: str | None = None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _parse(response: httpx.Response) -> Any:
    if response.status_code < 400:
        if not response.content:
            return None
        try:
            return msgspec.json.decode(response.content)
        except msgspec.DecodeError as exc:
            raise ApiError(
                response.status_code, "bad_response", "the server sent invalid JSON"
            ) from exc
    error, detail, field = "http_error", response.reason_phrase or "request failed", None
    try:
        body = msgspec.json.decode(response.content)
        if isinstance(body, dict):
            error = str(body.get("error", error))
            detail = str(body.get("detail", detail))
            field = body.get("field")
    except msgspec.DecodeError:
        pass
    raise ApiError(response.status_code, error, detail, field, _retry_after(response))


def _report_call(device_key: str, report: wire.Report | bytes) -> Call:
    body = report if isinstance(report, bytes) else wire.encode(report)
    headers = {"content-type": "application/json"}
    if len(body) >= GZIP_MIN_BYTES:
        body = gzip.compress(body, compresslevel=6)
        headers["content-encoding"] = "gzip"
    return Call("POST", "/api/monitor/connections", content=body, headers=headers, token=device_key)


class _Calls:
    """Every endpoint once, as a Call."""

    @staticmethod
    def register(username: str, password: str, email: str | None = None) -> Call:
        body = {"username": username, "password": password}
        if email:
            body["email"] = email
        return Call("POST", "/api/auth/register", json=body)

    @staticmethod
    def login(username: str, password: str) -> Call:
        return Call("POST", "/api/auth/login", json={"username": username, "password": password})

    @staticmethod
    def logout(token: str) -> Call:
        return Call("POST", "/api/auth/logout", token=token)

    @staticmethod
    def me(token: str) -> Call:
        return Call("GET", "/api/auth/me", token=token)

    @staticmethod
    def create_token(token: str, name: str | None, expires_days: float | None) -> Call:
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if expires_days is not None:
            body["expiresDays"] = expires_days
        return Call("POST", "/api/tokens", json=body, token=token)

    @staticmethod
    def list_tokens(token: str) -> Call:
        return Call("GET", "/api/tokens", token=token)

    @staticmethod
    def revoke_token(token: str, token_id: int) -> Call:
        return Call("DELETE", f"/api/tokens/{token_id}", token=token)

    @staticmethod
    def register_device(token: str, registration: wire.DeviceRegistration) -> Call:
        return Call(
            "POST", "/api/monitor/register", json=msgspec.to_builtins(registration), token=token
        )

    @staticmethod
    def devices(token: str) -> Call:
        return Call("GET", "/api/dashboard/users", token=token)

    @staticmethod
    def device(token: str, device_id: int, filters: Mapping[str, Any] | None) -> Call:
        params = {k: v for k, v in (filters or {}).items() if v is not None}
        return Call("GET", f"/api/dashboard/user/{device_id}", params=params, token=token)

    @staticmethod
    def delete_device(token: str, device_id: int) -> Call:
        return Call("DELETE", f"/api/dashboard/user/{device_id}", token=token)

    @staticmethod
    def list_users(token: str) -> Call:
        return Call("GET", "/api/users", token=token)

    @staticmethod
    def update_user(token: str, user_id: int, changes: Mapping[str, Any]) -> Call:
        return Call("PATCH", f"/api/users/{user_id}", json=dict(changes), token=token)


def _request(http: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
    headers = dict(call.headers or {})
    if call.token:
        headers["authorization"] = f"Bearer {call.token}"
    return http.build_request(
        call.method,
        call.path,
        json=call.json,
        params=call.params,
        content=call.content,
        headers=headers,
    )


class Client(_Calls):
    """Synchronous API client; `Client(url)` or with a transport for tests."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            transport=transport,
            timeout=timeout,
            headers={"user-agent": USER_AGENT},
        )

    def send(self, call: Call) -> Any:
        """Send one Call; returns the decoded JSON body or raises ClientError."""
        try:
            response = self._http.send(_request(self._http, call))
        except httpx.HTTPError as exc:
            raise ServerUnreachable(self.base_url, str(exc) or type(exc).__name__) from exc
        return _parse(response)

    def post_report(self, device_key: str, report: wire.Report | bytes) -> wire.IngestResult:
        """Deliver one report (JSON bytes or a Report), gzip-compressed when worth it."""
        body = self.send(_report_call(device_key, report))
        return msgspec.convert(body, wire.IngestResult)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Calls):
    """Asynchronous API client with the same calls as Client."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.base_url = base_url
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=timeout,
            headers={"user-agent": USER_AGENT},
            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )

    async def send(self, call: Call) -> Any:
        """Send one Call; returns the decoded JSON body or raises ClientError."""
        try:
            response = await self._http.send(_request(self._http, call))
        except httpx.HTTPError as exc:
            raise ServerUnreachable(self.base_url, str(exc) or type(exc).__name__) from exc
        return _parse(response)

    async def post_report(self, device_key: str, report: wire.Report | bytes) -> wire.IngestResult:
        """Deliver one report (JSON bytes or a Report), gzip-compressed when worth it."""
        body = await self.send(_report_call(device_key, report))
        return msgspec.convert(body, wire.IngestResult)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
