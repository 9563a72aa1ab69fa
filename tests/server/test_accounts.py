"""Accounts: registration, validation, login/logout/me, no user enumeration, argon2id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from litestar.testing import TestClient

from smartmon.server import auth
from smartmon.server.app import create_app
from smartmon.settings import ServerSettings
from tests.conftest import ADMIN_PASSWORD, USER_PASSWORD, LiveServer
from tests.server.conftest import assert_error, login, snapshot, sql

REAL_ARGON2 = True  # these tests are about the real password hashing


def register(server: LiveServer, username: str, password: str = USER_PASSWORD, **extra: Any) -> Any:
    return server.request(
        "POST", "/api/auth/register", json={"username": username, "password": password, **extra}
    )


def test_first_account_is_admin_then_registration_closes(live_server: LiveServer) -> None:
    r = register(live_server, "first", email="first@example.org")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["tokenType"] == "bearer"
    assert body["user"]["role"] == "admin" and body["user"]["username"] == "first"
    assert body["accessToken"].count(".") == 2 and body["expiresAt"]
    before = snapshot(live_server.data_dir)
    r = register(live_server, "second")
    err = assert_error(r, 403)
    assert err["error"] == "registration_closed"
    assert "admin" in err["detail"]
    assert snapshot(live_server.data_dir) == before
    assert_error(login(live_server, "second"), 401)
    # an admin can still create accounts
    r = live_server.request(
        "POST",
        "/api/users",
        body["accessToken"],
        json={"username": "second", "password": USER_PASSWORD},
    )
    assert r.status_code == 201 and r.json()["role"] == "user"


def test_open_registration_lets_anyone_register_as_user(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "d", open_registration=True)
    with TestClient(create_app(settings)) as client:
        first = client.post(
            "/api/auth/register", json={"username": "boss", "password": "pw-12345678"}
        )
        second = client.post(
            "/api/auth/register", json={"username": "worker", "password": "pw-12345678"}
        )
        assert first.status_code == 201 and first.json()["user"]["role"] == "admin"
        assert second.status_code == 201 and second.json()["user"]["role"] == "user"
        # the same name again (any case) is a conflict, and the first account is untouched
        r = client.post(
            "/api/auth/register", json={"username": "WORKER", "password": "other-pass-1"}
        )
        assert r.status_code == 409 and r.json()["field"] == "username"
        ok = client.post("/api/auth/login", json={"username": "worker", "password": "pw-12345678"})
        assert ok.status_code == 200 and ok.json()["user"]["role"] == "user"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "ab", "password": "long-enough-1"}, "username"),
        ({"username": "a" * 65, "password": "long-enough-1"}, "username"),
        ({"username": "bad name", "password": "long-enough-1"}, "username"),
        ({"username": "semi;colon", "password": "long-enough-1"}, "username"),
        ({"username": "ünïcode", "password": "long-enough-1"}, "username"),
        ({"username": "admin\n", "password": "long-enough-1"}, "username"),
        ({"username": "okname", "password": "short"}, "password"),
        ({"username": "okname", "password": "x" * 129}, "password"),
        ({"username": "okname"}, "password"),
        ({"password": "long-enough-1"}, "username"),
        ({"username": 12345, "password": "long-enough-1"}, "username"),
        ({"username": "okname", "password": ["long-enough-1"]}, "password"),
        ({"username": "okname", "password": "long-enough-1", "email": "not-an-email"}, "email"),
    ],
)
def test_register_validation(shared_server: LiveServer, body: dict[str, Any], field: str) -> None:
    shared_server.admin_token  # noqa: B018 - the first account exists, so these would be users
    before = snapshot(shared_server.data_dir)
    for path in ("/api/auth/register", "/api/users"):
        r = shared_server.request("POST", path, shared_server.admin_token, json=body)
        assert_error(r, 422, field)
    assert snapshot(shared_server.data_dir) == before


def test_validation_boundaries_accepted(live_server: LiveServer) -> None:
    token = live_server.admin_token
    for username, password in (("abc", "x" * 8), ("A" * 64, "y" * 128), ("a_b.c-D9", "é" * 8)):
        r = live_server.request(
            "POST", "/api/users", token, json={"username": username, "password": password}
        )
        assert r.status_code == 201, r.text
        assert login(live_server, username, password).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b'{"username": "x", "password": }', b"\xff\xfe", b""],
)
def test_malformed_json_is_400(shared_server: LiveServer, raw: bytes) -> None:
    token = shared_server.admin_token
    before = snapshot(shared_server.data_dir)
    paths = ["/api/auth/register", "/api/auth/login", "/api/users"]
    if raw:  # POST /api/tokens takes an optional body
        paths.append("/api/tokens")
    for path in paths:
        r = shared_server.request(
            "POST", path, token, content=raw, headers={"content-type": "application/json"}
        )
        body = assert_error(r, 400)
        assert body["error"] == ("malformed_json" if raw else "missing_body"), body
    assert snapshot(shared_server.data_dir) == before


def test_login_me_logout(live_server: LiveServer) -> None:
    live_server.admin_token  # noqa: B018
    r = login(live_server, "admin", ADMIN_PASSWORD)
    assert r.status_code == 200
    body = r.json()
    assert body["tokenType"] == "bearer" and body["user"]["role"] == "admin"
    assert set(body["user"]) >= {"id", "username", "role"}
    token = body["accessToken"]
    me = live_server.request("GET", "/api/auth/me", token)
    assert me.status_code == 200
    assert me.json()["username"] == "admin" and me.json()["role"] == "admin"
    assert "passwordHash" not in me.text and "argon2" not in me.text
    # the username is case-insensitive for login
    assert login(live_server, "ADMIN", ADMIN_PASSWORD).status_code == 200
    out = live_server.request("POST", "/api/auth/logout", token)
    assert out.status_code == 200
    # revoked at once, for every endpoint
    for method, path in (
        ("GET", "/api/auth/me"),
        ("GET", "/api/tokens"),
        ("POST", "/api/auth/logout"),
    ):
        assert_error(live_server.request(method, path, token), 401)
    # other sessions of the same user are unaffected
    assert live_server.request("GET", "/api/auth/me", live_server.admin_token).status_code == 200


def test_me_without_or_with_broken_authorization(live_server: LiveServer) -> None:
    r = live_server.request("GET", "/api/auth/me")
    assert_error(r, 401)
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
    for header in ("Basic YWRtaW46cGFzcw==", "Bearer", "token abc", "Bearer a.b.c", "Bearer smt_x"):
        r = live_server.request("GET", "/api/auth/me", headers={"authorization": header})
        assert_error(r, 401)


def test_wrong_password_and_unknown_user_answer_alike(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    live_server.admin_token  # noqa: B018
    calls: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            calls.append(str(hash))
            return super().verify(hash, password)

    monkeypatch.setattr(auth, "_hasher", CountingHasher())
    wrong = login(live_server, "admin", "not-the-password")
    assert len(calls) == 1
    unknown = login(live_server, "nobody-here", "not-the-password")
    assert len(calls) == 2, "argon2 must run for an unknown username too"
    assert calls[1].startswith("$argon2id$")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.content == unknown.content
    assert wrong.headers.get("www-authenticate") == unknown.headers.get("www-authenticate")


def test_disabled_user_cannot_log_in_and_answers_like_wrong_password(
    live_server: LiveServer,
) -> None:
    token = live_server.user_token("carol")
    me = live_server.request("GET", "/api/auth/me", token).json()
    r = live_server.request(
        "PATCH", f"/api/users/{me['id']}", live_server.admin_token, json={"disabled": True}
    )
    assert r.status_code == 200
    disabled = login(live_server, "carol")
    unknown = login(live_server, "nobody-here")
    assert disabled.status_code == 401 and disabled.content == unknown.content


def test_stored_hash_is_argon2id_and_never_plaintext(live_server: LiveServer) -> None:
    live_server.admin_token  # noqa: B018
    ((stored,),) = sql(
        live_server.data_dir, "SELECT password_hash FROM users WHERE username = 'admin'"
    )
    assert stored.startswith("$argon2id$")
    params = PasswordHasher()
    assert f"m={params.memory_cost},t={params.time_cost},p={params.parallelism}" in stored
    for path in live_server.data_dir.iterdir():
        assert ADMIN_PASSWORD.encode() not in path.read_bytes(), path


def test_rehash_on_login_when_parameters_change(live_server: LiveServer) -> None:
    live_server.user_token("dave")
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(USER_PASSWORD)
    sql(live_server.data_dir, "UPDATE users SET password_hash = ? WHERE username = 'dave'", (weak,))
    assert login(live_server, "dave").status_code == 200
    ((stored,),) = sql(
        live_server.data_dir, "SELECT password_hash FROM users WHERE username = 'dave'"
    )
    assert stored != weak
    assert stored.startswith("$argon2id$")
    assert not PasswordHasher().check_needs_rehash(stored)
    assert PasswordHasher().verify(stored, USER_PASSWORD)
    # and it keeps working
    assert login(live_server, "dave").status_code == 200
    assert login(live_server, "dave", "wrong-password-1").status_code == 401


def test_login_body_validation(live_server: LiveServer) -> None:
    live_server.admin_token  # noqa: B018
    for body in ({}, {"username": "admin"}, {"username": ["admin"], "password": "x"}, [], "admin"):
        r = live_server.request("POST", "/api/auth/login", json=body)
        assert r.status_code in (400, 422), r.text
        assert_error(r, r.status_code)
    r = live_server.request(
        "POST", "/api/auth/login", json={"username": "a" * 10_000, "password": "x"}
    )
    assert_error(r, 422, "username")


def test_racing_first_registrations_make_one_admin(live_server: LiveServer) -> None:
    import threading

    import httpx

    answers: list[httpx.Response] = []

    def attempt(i: int) -> None:
        answers.append(
            httpx.post(
                live_server.url + "/api/auth/register",
                json={"username": f"racer{i}", "password": USER_PASSWORD},
                timeout=30,
            )
        )

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(r.status_code for r in answers) == [201, 403, 403, 403, 403]
    assert sql(live_server.data_dir, "SELECT role FROM users") == [("admin",)]
