"""Tenant isolation: user B, and B's device key, against every endpoint and object of user A."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import USER_PASSWORD, LiveServer
from tests.server.conftest import assert_error, conn, detail, post, report, snapshot

# what must never appear in an answer to B: A's name, device, peer address and process
A_SECRETS = ("alice", "198.51.100.7", "alice-proc")


def a_objects(server: LiveServer, fleet: dict[str, Any]) -> dict[str, Any]:
    a = fleet["a_token"]
    token_id = server.request("POST", "/api/tokens", a, json={"name": "alice-token"}).json()["id"]
    user_id = server.request("GET", "/api/auth/me", a).json()["id"]
    return {"device": fleet["a_device"], "token_id": token_id, "user_id": user_id}


# (method, path template, body, statuses B may get)
DENIED = [
    ("GET", "/api/dashboard/user/{device}", None, {404}),
    ("GET", "/api/dashboard/user/{device}?closed=true", None, {404}),
    ("DELETE", "/api/dashboard/user/{device}", None, {404}),
    ("POST", "/api/devices/{device}/revoke", None, {404}),
    ("DELETE", "/api/tokens/{token_id}", None, {404}),
    ("GET", "/api/users", None, {403}),
    (
        "POST",
        "/api/users",
        {"username": "bobs-alt", "password": USER_PASSWORD, "role": "admin"},
        {403},
    ),
    ("PATCH", "/api/users/{user_id}", {"disabled": True}, {403}),
    ("PATCH", "/api/users/{user_id}", {"role": "user"}, {403}),
]
ALLOWED_BUT_EMPTY_OF_A = [
    ("GET", "/api/dashboard/users"),
    ("GET", "/api/tokens"),
    ("GET", "/api/auth/me"),
]


@pytest.mark.parametrize(("method", "template", "body", "statuses"), DENIED, ids=lambda v: str(v))
def test_user_b_cannot_touch_a(
    live_server: LiveServer,
    fleet: dict[str, Any],
    method: str,
    template: str,
    body: Any,
    statuses: set[int],
) -> None:
    objects = a_objects(live_server, fleet)
    before = snapshot(live_server.data_dir)
    r = live_server.request(method, template.format(**objects), fleet["b_token"], json=body)
    assert r.status_code in statuses, r.text
    assert_error(r, r.status_code)
    assert not any(s in r.text for s in A_SECRETS), r.text
    assert snapshot(live_server.data_dir) == before
    if r.status_code == 404 and "{device}" in template:
        # indistinguishable from a device that does not exist
        missing = live_server.request(
            method, template.format(device=987654), fleet["b_token"], json=body
        )
        assert (missing.status_code, missing.json()) == (r.status_code, r.json())
    # and A's things still work
    assert (
        post(live_server, fleet["a_key"], report([conn("198.51.100.7", 8443)])).status_code == 200
    )
    assert detail(live_server, fleet["a_device"], fleet["a_token"])["deviceName"] == "alice-meter"


@pytest.mark.parametrize(("method", "path"), ALLOWED_BUT_EMPTY_OF_A)
def test_user_b_lists_only_own(
    live_server: LiveServer, fleet: dict[str, Any], method: str, path: str
) -> None:
    a_objects(live_server, fleet)
    r = live_server.request(method, path, fleet["b_token"])
    assert r.status_code == 200
    assert not any(s in r.text for s in A_SECRETS), r.text


def test_b_key_against_everything(live_server: LiveServer, fleet: dict[str, Any]) -> None:
    objects = a_objects(live_server, fleet)
    key = fleet["b_key"]
    before = snapshot(live_server.data_dir)
    for method, template, body, _ in DENIED:
        r = live_server.request(method, template.format(**objects), key, json=body)
        assert_error(r, 401)
        assert not any(s in r.text for s in A_SECRETS)
    for method, path in ALLOWED_BUT_EMPTY_OF_A:
        r = live_server.request(method, path, key)
        assert_error(r, 401)
    r = live_server.request(
        "POST", "/api/monitor/register", key, json={"deviceName": "alice-meter"}
    )
    assert_error(r, 401)
    assert snapshot(live_server.data_dir) == before
    # what B's key writes lands in B's device only
    assert post(live_server, key, report([conn("203.0.113.200", 9)])).status_code == 200
    a_view = detail(live_server, fleet["a_device"], fleet["a_token"])
    assert "203.0.113.200" not in str(a_view)
    assert [
        c["destIp"] for c in detail(live_server, fleet["b_device"], fleet["b_token"])["connections"]
    ] == ["203.0.113.200"]


def test_b_enrolling_a_devices_name_gets_its_own_device(
    live_server: LiveServer, fleet: dict[str, Any]
) -> None:
    for credential in (fleet["b_token"], live_server.enrollment_token(fleet["b_token"])):
        r = live_server.request(
            "POST", "/api/monitor/register", credential, json={"deviceName": "alice-meter"}
        )
        assert r.status_code == 200
        assert r.json()["deviceId"] != fleet["a_device"]
    # A's key was not replaced
    assert (
        post(live_server, fleet["a_key"], report([conn("198.51.100.7", 8443)])).status_code == 200
    )
    names = [
        d["deviceName"]
        for d in live_server.request("GET", "/api/dashboard/users", fleet["b_token"]).json()["data"]
    ]
    assert sorted(names) == ["alice-meter", "bob-meter"]
    a_names = [
        d["deviceName"]
        for d in live_server.request("GET", "/api/dashboard/users", fleet["a_token"]).json()["data"]
    ]
    assert a_names == ["alice-meter"]


def test_b_legacy_agent_cannot_reach_a(live_server: LiveServer, fleet: dict[str, Any]) -> None:
    """The prototype form carries B's login token: it maps only onto B's devices."""
    b = fleet["b_token"]
    r = live_server.request(
        "POST", "/api/monitor/register", json={"token": b, "deviceName": "alice-meter"}
    )
    assert r.status_code == 200 and r.json()["deviceId"] != fleet["a_device"]
    r = live_server.request(
        "POST", "/api/monitor/connections",
        json={"token": b, "sourceIp": "10.9.9.9", "sourcePort": 1, "destIp": "10.8.8.8", "destPort": 2, "protocol": "TCP"},
    )  # fmt: skip
    assert r.status_code == 200
    assert "10.8.8.8" not in str(detail(live_server, fleet["a_device"], fleet["a_token"]))
    # A's device key is not a login token, and cannot be used in the body either
    r = live_server.request(
        "POST", "/api/monitor/connections",
        json={"token": fleet["a_key"], "sourceIp": "10.9.9.9", "sourcePort": 1, "destIp": "10.7.7.7", "destPort": 2, "protocol": "TCP"},
    )  # fmt: skip
    assert_error(r, 401)


def test_a_cannot_see_bs_enrollment_tokens_or_users(
    live_server: LiveServer, fleet: dict[str, Any]
) -> None:
    live_server.request("POST", "/api/tokens", fleet["b_token"], json={"name": "bob-secret-token"})
    r = live_server.request("GET", "/api/tokens", fleet["a_token"])
    assert "bob-secret-token" not in r.text
    # the admin sees B's device but not B's enrollment tokens (those are B's own)
    assert (
        "bob-secret-token"
        not in live_server.request("GET", "/api/tokens", live_server.admin_token).text
    )


def _events(ws: Any, seconds: float, until: str | None = None) -> list[dict[str, Any]]:
    """The events the stream sends within `seconds` (or a little after one contains `until`)."""
    import json

    from websockets.exceptions import ConnectionClosed

    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = ws.recv(timeout=left)
        except (TimeoutError, ConnectionClosed):
            break
        events.append(json.loads(message))
        if until is not None and until in message:
            deadline = min(deadline, time.monotonic() + 0.3)
    return events


def test_b_stream_hears_nothing_of_a(live_server: LiveServer, fleet: dict[str, Any]) -> None:
    import json

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = live_server.url.replace("http://", "ws://") + "/api/stream"
    for credential in (fleet["b_key"], "garbage", fleet["a_key"]):
        try:
            with connect(
                url, additional_headers={"authorization": f"Bearer {credential}"}, open_timeout=5
            ) as ws:
                assert not [e for e in _events(ws, 0.5) if e.get("type") == "hello"], credential[:4]
        except InvalidStatus:
            pass  # refused before the upgrade: fine too
    with connect(
        url, additional_headers={"authorization": f"Bearer {fleet['b_token']}"}, open_timeout=5
    ) as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello["type"] == "hello" and hello["user"]["username"] == "bob"
        assert [d["deviceName"] for d in hello["devices"]] == ["bob-meter"]
        ws.send(json.dumps({"subscribe": [fleet["a_device"], fleet["b_device"]]}))
        time.sleep(0.2)
        a_report = report(
            [conn("198.51.100.7", 8443, process="alice-proc"), conn("198.51.100.8", 1)]
        )
        assert post(live_server, fleet["a_key"], a_report).status_code == 200
        b_report = report([conn("203.0.113.9", 8443), conn("203.0.113.10", 2)])
        assert post(live_server, fleet["b_key"], b_report).status_code == 200
        events = _events(ws, 5, until="203.0.113.10")
    text = json.dumps(events)
    assert not any(s in text for s in A_SECRETS), text
    assert "203.0.113.10" in text, "B's own events arrive, so the stream was live"
