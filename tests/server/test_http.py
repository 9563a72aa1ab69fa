"""HTTP surface: security headers on every answer, CORS only when asked, the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from smartmon.server.app import create_app
from smartmon.settings import ServerSettings
from tests.conftest import LiveServer
from tests.server.conftest import SECURITY_HEADERS

BASE_HEADERS = ("x-content-type-options", "x-frame-options", "referrer-policy")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(ServerSettings(data_dir=tmp_path / "d"))) as c:
        yield c


@pytest.fixture
def cors_client(tmp_path: Path) -> Iterator[TestClient[Any]]:
    settings = ServerSettings(data_dir=tmp_path / "d", cors_origins=("https://ops.example",))
    with TestClient(create_app(settings)) as c:
        yield c


def assert_secure(headers: Any, api: bool = True) -> None:
    for name in SECURITY_HEADERS if api else BASE_HEADERS:
        assert name in headers, name
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("method", "path", "status", "kwargs"),
    [
        ("GET", "/api/health", 200, {}),
        ("GET", "/api/auth/me", 401, {}),
        ("POST", "/api/auth/login", 422, {"json": {"username": 1}}),
        ("POST", "/api/auth/login", 400, {"content": b"{", "headers": {"content-type": "application/json"}}),
        ("GET", "/api/nothing-here", 404, {}),
        ("GET", "/nothing-here", 404, {}),
        ("GET", "/api/dashboard/user/abc", 404, {}),
        ("PUT", "/api/auth/login", 405, {}),
        ("POST", "/api/monitor/connections", 413, {"content": b" " * (10 * 1024 * 1024 + 1), "headers": {"content-type": "application/json"}}),
        ("POST", "/api/monitor/connections", 415, {"content": b"x", "headers": {"content-encoding": "br"}}),
    ],
)  # fmt: skip
def test_security_headers_on_every_response(
    client: TestClient[Any], method: str, path: str, status: int, kwargs: dict[str, Any]
) -> None:
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert_secure(r.headers, api=path.startswith("/api"))
    if status >= 400:
        assert r.headers["content-type"].startswith("application/json")
        assert set(r.json()) >= {"error", "detail"}
    assert "server" not in {k.lower() for k in r.headers} or "uvicorn" not in r.headers.get(
        "server", ""
    )


def test_security_headers_over_the_wire(live_server: LiveServer) -> None:
    for path in ("/api/health", "/api/nothing", "/schema/openapi.json"):
        r = live_server.request("GET", path)
        assert_secure(r.headers, api=path.startswith("/api"))


def test_no_cors_by_default(client: TestClient[Any]) -> None:
    origin = {"origin": "https://ops.example"}
    r = client.get("/api/health", headers=origin)
    assert "access-control-allow-origin" not in r.headers
    r = client.options(
        "/api/auth/login",
        headers=origin
        | {
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization",
        },
    )
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-credentials" not in r.headers


def test_cors_for_the_named_origin_only(cors_client: TestClient[Any]) -> None:
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    ok = cors_client.options(
        "/api/auth/login", headers={"origin": "https://ops.example"} | preflight
    )
    assert ok.status_code in (200, 204)
    assert ok.headers["access-control-allow-origin"] == "https://ops.example"
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    for evil in (
        "https://evil.example",
        "https://ops.example.evil.com",
        "http://ops.example",
        "null",
    ):
        r = cors_client.options("/api/auth/login", headers={"origin": evil} | preflight)
        assert r.headers.get("access-control-allow-origin") not in (evil, "*"), evil
        assert r.status_code >= 400 or "access-control-allow-origin" not in r.headers
        assert_secure(r.headers)
        simple = cors_client.get("/api/health", headers={"origin": evil})
        assert simple.headers.get("access-control-allow-origin") not in (evil, "*")
    simple = cors_client.get("/api/health", headers={"origin": "https://ops.example"})
    assert simple.headers["access-control-allow-origin"] == "https://ops.example"


ENDPOINTS = {
    ("post", "/api/auth/register"), ("post", "/api/auth/login"), ("post", "/api/auth/logout"),
    ("get", "/api/auth/me"), ("get", "/api/users"), ("post", "/api/users"), ("patch", "/api/users/{user_id}"),
    ("post", "/api/tokens"), ("get", "/api/tokens"), ("delete", "/api/tokens/{token_id}"),
    ("post", "/api/monitor/register"), ("post", "/api/monitor/connections"),
    ("get", "/api/dashboard/users"), ("get", "/api/dashboard/user/{device_id}"),
    ("delete", "/api/dashboard/user/{device_id}"), ("post", "/api/devices/{device_id}/revoke"),
}  # fmt: skip
WITH_BODY = {
    ("post", "/api/auth/register"): "username", ("post", "/api/auth/login"): "password",
    ("post", "/api/users"): "role", ("patch", "/api/users/{user_id}"): "disabled",
    ("post", "/api/tokens"): "expiresDays", ("post", "/api/monitor/register"): "deviceName",
    ("post", "/api/monitor/connections"): "reportId",
}  # fmt: skip


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref (and a oneOf with null) to the object schema."""
    while True:
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        elif "oneOf" in schema or "anyOf" in schema:
            options = [
                s for s in schema.get("oneOf", schema.get("anyOf", [])) if s.get("type") != "null"
            ]
            schema = options[0]
        else:
            return schema


def test_openapi_lists_every_endpoint_with_schemas(client: TestClient[Any]) -> None:
    r = client.get("/schema/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    listed = {
        (m, p)
        for p, ops in spec["paths"].items()
        for m in ops
        if m in ("get", "post", "patch", "delete", "put")
    }
    assert listed >= ENDPOINTS, ENDPOINTS - listed
    for method, path in ENDPOINTS:
        op = spec["paths"][path][method]
        ok = [code for code in op["responses"] if code.startswith("2")]
        assert ok, (method, path)
        content = op["responses"][ok[0]].get("content", {})
        assert "application/json" in content, (method, path)
        assert resolve(spec, content["application/json"]["schema"]), (method, path)
        if (method, path) in WITH_BODY:
            body = op["requestBody"]["content"]["application/json"]["schema"]
            properties = resolve(spec, body).get("properties", {})
            assert WITH_BODY[(method, path)] in properties, (method, path, properties)
    # camelCase names, as on the wire
    device = spec["components"]["schemas"]["DeviceList"]
    assert "stats" in device["properties"]
    assert any(
        "deviceName" in s.get("properties", {}) for s in spec["components"]["schemas"].values()
    )
