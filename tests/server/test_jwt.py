"""The JWT forgery set: every token that is not a live access token of an enabled user is 401."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from tests.conftest import LiveServer
from tests.server.conftest import assert_error

Forge = Callable[[LiveServer, str], str]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def secret(server: LiveServer) -> bytes:
    return (server.data_dir / "jwt-secret").read_bytes().strip()


def signed(server: LiveServer, claims: dict[str, Any], **kwargs: Any) -> str:
    """A token signed with the server's real secret."""
    return jwt.encode(claims, secret(server), algorithm=kwargs.pop("algorithm", "HS256"), **kwargs)


def alg_none(server: LiveServer, token: str) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{token.split('.')[1]}."


def alg_none_keeping_signature(server: LiveServer, token: str) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    _, payload, signature = token.split(".")
    return f"{header}.{payload}.{signature}"


def wrong_key(server: LiveServer, token: str) -> str:
    return jwt.encode(claims_of(token), b"x" * 48, algorithm="HS256")


def hs512_with_real_key(server: LiveServer, token: str) -> str:
    return signed(server, claims_of(token), algorithm="HS512")


def tampered_payload(server: LiveServer, token: str) -> str:
    header, _, signature = token.split(".")
    claims = claims_of(token) | {"exp": int(time.time()) + 10 * 86400}
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def tampered_signature(server: LiveServer, token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{header}.{payload}.{flipped}"


def expired(server: LiveServer, token: str) -> str:
    now = int(time.time())
    return signed(server, claims_of(token) | {"iat": now - 7200, "exp": now - 3600})


def not_yet_valid(server: LiveServer, token: str) -> str:
    return signed(server, claims_of(token) | {"nbf": int(time.time()) + 3600})


def missing(claim: str) -> Forge:
    def forge(server: LiveServer, token: str) -> str:
        claims = claims_of(token)
        del claims[claim]
        return signed(server, claims)

    forge.__name__ = f"missing_{claim}"
    return forge


def unknown_user(server: LiveServer, token: str) -> str:
    return signed(server, claims_of(token) | {"sub": "4242"})


def non_numeric_sub(server: LiveServer, token: str) -> str:
    return signed(server, claims_of(token) | {"sub": "admin"})


def huge_sub(server: LiveServer, token: str) -> str:
    return signed(server, claims_of(token) | {"sub": str(2**80)})


def zero_sub(server: LiveServer, token: str) -> str:
    return signed(server, claims_of(token) | {"sub": "0"})


def enrollment_token(server: LiveServer, token: str) -> str:
    return server.enrollment_token(token)


def device_key(server: LiveServer, token: str) -> str:
    return server.enroll("forger", token)[1]


def garbage(server: LiveServer, token: str) -> str:
    return "not-a-jwt"


def truncated(server: LiveServer, token: str) -> str:
    return token[: len(token) // 2]


FORGERIES: list[Forge] = [
    alg_none, alg_none_keeping_signature, wrong_key, hs512_with_real_key, tampered_payload,
    tampered_signature, expired, not_yet_valid, missing("sub"), missing("jti"), missing("exp"),
    missing("iat"), unknown_user, non_numeric_sub, huge_sub, zero_sub, enrollment_token,
    device_key, garbage, truncated,
]  # fmt: skip


_mallory: dict[str, str] = {}


@pytest.mark.parametrize("forge", FORGERIES, ids=lambda f: f.__name__)
def test_forged_tokens_are_rejected(shared_server: LiveServer, forge: Forge) -> None:
    live_server = shared_server
    if shared_server.url not in _mallory:
        _mallory[shared_server.url] = shared_server.user_token("mallory")
    token = _mallory[shared_server.url]
    assert live_server.request("GET", "/api/auth/me", token).status_code == 200
    forged = forge(live_server, token)
    for method, path in (
        ("GET", "/api/auth/me"),
        ("GET", "/api/dashboard/users"),
        ("GET", "/api/tokens"),
        ("POST", "/api/tokens"),
        ("GET", "/api/users"),
    ):
        r = live_server.request(method, path, forged, json={} if method == "POST" else None)
        body = assert_error(r, 401)
        assert "mallory" not in r.text and body["error"] == "unauthorized"
    if forge is enrollment_token:
        return  # enrolling devices is what it is for
    # a forged access token cannot enroll devices either (header or prototype body form)
    r = live_server.request("POST", "/api/monitor/register", forged, json={"deviceName": "x"})
    assert_error(r, 401)
    r = live_server.request(
        "POST", "/api/monitor/register", json={"deviceName": "x", "token": forged}
    )
    assert_error(r, 401)


def test_role_claim_grants_nothing(live_server: LiveServer) -> None:
    """A correctly signed token that claims admin for a plain user is still a plain user."""
    token = live_server.user_token("mallory")
    promoted = signed(live_server, claims_of(token) | {"role": "admin"})
    assert live_server.request("GET", "/api/auth/me", promoted).json()["role"] == "user"
    assert_error(live_server.request("GET", "/api/users", promoted), 403)


def test_token_of_a_disabled_user_stops_working_at_once(live_server: LiveServer) -> None:
    token = live_server.user_token("mallory")
    user_id = live_server.request("GET", "/api/auth/me", token).json()["id"]
    r = live_server.request(
        "PATCH", f"/api/users/{user_id}", live_server.admin_token, json={"disabled": True}
    )
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert_error(live_server.request("GET", "/api/auth/me", token), 401)
    assert_error(live_server.request("POST", "/api/tokens", token, json={}), 401)
    # enabled again, the same token works again (it was never revoked, only refused)
    live_server.request(
        "PATCH", f"/api/users/{user_id}", live_server.admin_token, json={"disabled": False}
    )
    assert live_server.request("GET", "/api/auth/me", token).status_code == 200


def test_access_token_claims(live_server: LiveServer) -> None:
    token = live_server.admin_token
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "HS256"
    claims = jwt.decode(token, secret(live_server), algorithms=["HS256"])
    assert set(claims) >= {"sub", "role", "jti", "iat", "exp"}
    assert claims["role"] == "admin"
    assert 11.9 * 3600 <= claims["exp"] - claims["iat"] <= 12 * 3600
    # every login gets its own jti
    other = live_server.request(
        "POST", "/api/auth/login", json={"username": "admin", "password": "admin-password-1"}
    ).json()["accessToken"]
    assert jwt.decode(other, secret(live_server), algorithms=["HS256"])["jti"] != claims["jti"]
