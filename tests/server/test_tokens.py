"""Enrollment tokens: shown once, stored hashed, listed without secrets, revocable, expiring."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.server.conftest import assert_error, post, report, snapshot, sql

URLSAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def create(server: LiveServer, token: str, **body: Any) -> dict[str, Any]:
    r = server.request("POST", "/api/tokens", token, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def enroll_with(server: LiveServer, enrollment: str, name: str = "box") -> Any:
    return server.request("POST", "/api/monitor/register", enrollment, json={"deviceName": name})


def test_token_format_and_shown_once(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    seen = set()
    for i in range(5):
        created = create(live_server, admin, name=f"batch {i}")
        token = created["token"]
        assert token.startswith("smt_")
        secret = token[len("smt_") :]
        assert URLSAFE.match(secret), token
        assert len(secret) * 6 >= 128, "at least 128 random bits"
        assert created["name"] == f"batch {i}" and created["expiresAt"] is None
        seen.add(secret)
    assert len(seen) == 5
    listing = live_server.request("GET", "/api/tokens", admin)
    assert listing.status_code == 200
    assert [t["name"] for t in listing.json()] == [f"batch {i}" for i in reversed(range(5))]
    for entry in listing.json():
        assert "token" not in entry and entry["status"] == "active"
    assert not any(secret in listing.text for secret in seen)
    # a default name when none is given
    assert create(live_server, admin)["name"]


def test_no_secret_is_stored_in_plaintext(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    tokens = [live_server.enrollment_token() for _ in range(3)]
    keys = []
    for i, token in enumerate(tokens):
        r = enroll_with(live_server, token, f"box-{i}")
        keys.append(r.json()["deviceKey"])
    # make sure the WAL has been written and also look at the checkpointed file
    files = sorted(p for p in live_server.data_dir.iterdir() if p.name.startswith("smartmon.db"))
    assert files, "the database file exists"
    for secret in [*tokens, *keys]:
        for path in files:
            data = path.read_bytes()
            assert secret.encode() not in data, (secret[:8], path.name)
            assert secret[4:].encode() not in data, (secret[:8], path.name)
    ((n,),) = sql(live_server.data_dir, "SELECT count(*) FROM enrollment_tokens")
    assert n == 3
    assert admin not in (live_server.data_dir / "smartmon.db").read_text(errors="replace")


def test_revoke_stops_enrollment_and_keeps_enrolled_devices(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    created = create(live_server, admin, name="to revoke")
    enrolled = enroll_with(live_server, created["token"], "early-box")
    assert enrolled.status_code == 200
    key = enrolled.json()["deviceKey"]
    r = live_server.request("DELETE", f"/api/tokens/{created['id']}", admin)
    assert r.status_code == 200
    before = snapshot(live_server.data_dir)
    assert_error(enroll_with(live_server, created["token"], "late-box"), 401)
    assert_error(enroll_with(live_server, created["token"], "early-box"), 401)
    assert snapshot(live_server.data_dir) == before
    # devices it enrolled keep their keys
    assert post(live_server, key, report()).status_code == 200
    (entry,) = live_server.request("GET", "/api/tokens", admin).json()
    assert entry["status"] == "revoked" and entry["revokedAt"] and entry["lastUsedAt"]
    # revoking twice is harmless; the revocation time stays the first one
    assert live_server.request("DELETE", f"/api/tokens/{created['id']}", admin).status_code == 200
    (again,) = live_server.request("GET", "/api/tokens", admin).json()
    assert again["revokedAt"] == entry["revokedAt"]


def test_expires_days_is_honoured(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    created = create(live_server, admin, name="short", expiresDays=2)
    expires = datetime.fromisoformat(created["expiresAt"]).timestamp()
    assert abs(expires - (time.time() + 2 * 86400)) < 60
    assert enroll_with(live_server, created["token"], "in-time").status_code == 200
    sql(
        live_server.data_dir,
        "UPDATE enrollment_tokens SET expires_at = ? WHERE id = ?",
        (time.time() - 1, created["id"]),
    )
    before = snapshot(live_server.data_dir)
    assert_error(enroll_with(live_server, created["token"], "too-late"), 401)
    assert snapshot(live_server.data_dir) == before
    (entry,) = live_server.request("GET", "/api/tokens", admin).json()
    assert entry["status"] == "expired"
    fractional = create(live_server, admin, expiresDays=0.5)
    assert (
        abs(datetime.fromisoformat(fractional["expiresAt"]).timestamp() - (time.time() + 43200))
        < 60
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expiresDays": 0}, "expiresDays"),
        ({"expiresDays": -1}, "expiresDays"),
        ({"expiresDays": 100000}, "expiresDays"),
        ({"expiresDays": [7]}, "expiresDays"),
        ({"name": ""}, "name"),
        ({"name": "n" * 129}, "name"),
        ({"name": 5}, "name"),
    ],
)
def test_create_validation(shared_server: LiveServer, body: dict[str, Any], field: str) -> None:
    admin = shared_server.admin_token
    before = snapshot(shared_server.data_dir)
    assert_error(shared_server.request("POST", "/api/tokens", admin, json=body), 422, field)
    assert snapshot(shared_server.data_dir) == before


def test_other_users_tokens_are_404(live_server: LiveServer) -> None:
    alice = live_server.user_token("alice")
    bob = live_server.user_token("bob")
    alices = create(live_server, alice, name="alice's")
    before = snapshot(live_server.data_dir)
    r = live_server.request("DELETE", f"/api/tokens/{alices['id']}", bob)
    missing = live_server.request("DELETE", "/api/tokens/999999", bob)
    assert_error(r, 404)
    assert_error(missing, 404)
    assert r.json() == missing.json() | {"detail": r.json()["detail"]}
    assert snapshot(live_server.data_dir) == before
    assert live_server.request("GET", "/api/tokens", bob).json() == []
    assert enroll_with(live_server, alices["token"]).status_code == 200
    # even an admin cannot revoke (or see) another user's token through this endpoint
    assert_error(
        live_server.request("DELETE", f"/api/tokens/{alices['id']}", live_server.admin_token), 404
    )
    assert "alice's" not in live_server.request("GET", "/api/tokens", live_server.admin_token).text


@pytest.mark.parametrize("token_id", ["0", "-5", "abc", "99999999999999999999999999"])
def test_revoke_odd_ids(shared_server: LiveServer, token_id: str) -> None:
    r = shared_server.request("DELETE", f"/api/tokens/{token_id}", shared_server.admin_token)
    assert r.status_code in (400, 404, 405), r.text
    assert_error(r, r.status_code)


def test_enrollment_token_needs_no_login(live_server: LiveServer) -> None:
    """The token alone enrolls; the owner's access token is not involved."""
    token = live_server.enrollment_token()
    live_server.request("POST", "/api/auth/logout", live_server.admin_token)
    assert enroll_with(live_server, token, "headless").status_code == 200
