"""Admin endpoints: list, create and change accounts; who may, and what cannot be undone."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import USER_PASSWORD, LiveServer
from tests.server.conftest import assert_error, conn, login, report, snapshot


def me(server: LiveServer, token: str) -> dict[str, Any]:
    r = server.request("GET", "/api/auth/me", token)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_list_and_create_users(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    r = live_server.request(
        "POST", "/api/users", admin,
        json={"username": "ops", "password": USER_PASSWORD, "role": "admin", "email": "ops@example.org"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["role"] == "admin" and created["email"] == "ops@example.org"
    assert created["disabled"] is False
    r = live_server.request(
        "POST", "/api/users", admin, json={"username": "plain", "password": USER_PASSWORD}
    )
    assert r.status_code == 201 and r.json()["role"] == "user"
    users = live_server.request("GET", "/api/users", admin)
    assert users.status_code == 200
    assert [u["username"] for u in users.json()] == ["admin", "ops", "plain"]
    assert "argon2" not in users.text and "password" not in users.text.lower()
    # the created admin is a real admin
    ops = login(live_server, "ops").json()["accessToken"]
    assert live_server.request("GET", "/api/users", ops).status_code == 200
    before = snapshot(live_server.data_dir)
    dup = live_server.request(
        "POST", "/api/users", admin, json={"username": "Plain", "password": USER_PASSWORD}
    )
    assert_error(dup, 409, "username")
    bad_role = live_server.request(
        "POST",
        "/api/users",
        admin,
        json={"username": "root2", "password": USER_PASSWORD, "role": "root"},
    )
    assert_error(bad_role, 422, "role")
    assert snapshot(live_server.data_dir) == before


def test_non_admins_get_403_and_change_nothing(live_server: LiveServer) -> None:
    user = live_server.user_token("pleb")
    admin_id = me(live_server, live_server.admin_token)["id"]
    own_id = me(live_server, user)["id"]
    before = snapshot(live_server.data_dir)
    for method, path, body in (
        ("GET", "/api/users", None),
        ("POST", "/api/users", {"username": "sneaky", "password": USER_PASSWORD, "role": "admin"}),
        ("PATCH", f"/api/users/{own_id}", {"role": "admin"}),
        ("PATCH", f"/api/users/{admin_id}", {"disabled": True}),
        ("PATCH", "/api/users/999", {"disabled": True}),
    ):
        r = live_server.request(method, path, user, json=body)
        assert_error(r, 403)
        assert "admin-password" not in r.text
    assert snapshot(live_server.data_dir) == before
    assert me(live_server, user)["role"] == "user"


def test_patch_role_takes_effect_at_once(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    user = live_server.user_token("climber")
    user_id = me(live_server, user)["id"]
    r = live_server.request("PATCH", f"/api/users/{user_id}", admin, json={"role": "admin"})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    # the token issued while a user now acts as admin (the role is read from the database)
    assert live_server.request("GET", "/api/users", user).status_code == 200
    r = live_server.request("PATCH", f"/api/users/{user_id}", admin, json={"role": "user"})
    assert r.status_code == 200 and r.json()["role"] == "user"
    assert_error(live_server.request("GET", "/api/users", user), 403)


def test_disabling_a_user_revokes_their_access_at_once(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    user = live_server.user_token("leaver")
    enrollment = live_server.enrollment_token(user)
    device_id, key = live_server.enroll("leaver-box", user)
    user_id = me(live_server, user)["id"]
    r = live_server.request("PATCH", f"/api/users/{user_id}", admin, json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    for method, path in (
        ("GET", "/api/auth/me"),
        ("GET", "/api/dashboard/users"),
        ("GET", f"/api/dashboard/user/{device_id}"),
    ):
        assert_error(live_server.request(method, path, user), 401)
    assert_error(login(live_server, "leaver"), 401)
    # the enrollment tokens of a disabled account enroll nothing
    r = live_server.request(
        "POST", "/api/monitor/register", enrollment, json={"deviceName": "new-box"}
    )
    assert_error(r, 401)
    assert "leaver-box" in live_server.request("GET", "/api/dashboard/users", admin).text
    assert "new-box" not in live_server.request("GET", "/api/dashboard/users", admin).text
    users = live_server.request("GET", "/api/users", admin).json()
    assert [u["disabled"] for u in users if u["username"] == "leaver"] == [True]
    assert key.startswith("smd_")


def test_admin_cannot_disable_or_demote_self(live_server: LiveServer) -> None:
    admin = live_server.admin_token
    admin_id = me(live_server, admin)["id"]
    before = snapshot(live_server.data_dir)
    for body, field in (
        ({"disabled": True}, "disabled"),
        ({"role": "user"}, "role"),
        ({"role": "user", "disabled": True}, None),
    ):
        r = live_server.request("PATCH", f"/api/users/{admin_id}", admin, json=body)
        assert_error(r, 409, field)
    assert snapshot(live_server.data_dir) == before
    assert me(live_server, admin)["role"] == "admin"
    # harmless self-updates are fine
    r = live_server.request(
        "PATCH", f"/api/users/{admin_id}", admin, json={"role": "admin", "disabled": False}
    )
    assert r.status_code == 200 and r.json()["role"] == "admin"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/users/999", 404),
        ("/api/users/0", 404),
        ("/api/users/-1", 404),
        ("/api/users/99999999999999999999999999", 404),
        ("/api/users/abc", 404),
        ("/api/users/1.5", 404),
    ],
)
def test_patch_unknown_user(shared_server: LiveServer, path: str, status: int) -> None:
    admin = shared_server.admin_token
    before = snapshot(shared_server.data_dir)
    r = shared_server.request("PATCH", path, admin, json={"disabled": True})
    assert r.status_code in (status, 400, 405), r.text  # never a 500
    assert_error(r, r.status_code)
    assert snapshot(shared_server.data_dir) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [({"role": "root"}, "role"), ({"disabled": "yes"}, "disabled"), ({"role": 1}, "role")],
)
def test_patch_validation(shared_server: LiveServer, body: dict[str, Any], field: str) -> None:
    admin = shared_server.admin_token
    admin_id = me(shared_server, admin)["id"]
    before = snapshot(shared_server.data_dir)
    assert_error(
        shared_server.request("PATCH", f"/api/users/{admin_id}", admin, json=body), 422, field
    )
    assert snapshot(shared_server.data_dir) == before


def test_disabling_a_user_stops_their_devices_reporting_until_enabled(
    live_server: LiveServer,
) -> None:
    token = live_server.user_token("carol")
    _device_id, key = live_server.enroll("carol-meter", token)
    first = live_server.request(
        "POST", "/api/monitor/connections", key, json=report([conn()], seq=1)
    )
    assert first.status_code == 200
    users = live_server.request("GET", "/api/users", live_server.admin_token).json()
    carol = next(u for u in users if u["username"] == "carol")
    for disabled, status in ((True, 401), (False, 200)):
        r = live_server.request(
            "PATCH",
            f"/api/users/{carol['id']}",
            live_server.admin_token,
            json={"disabled": disabled},
        )
        assert r.status_code == 200
        again = live_server.request(
            "POST", "/api/monitor/connections", key, json=report([conn()], seq=2)
        )
        assert again.status_code == status, again.text
