"""The login limiter: 10 failures per username or per address in 15 minutes, then 429."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from smartmon.server.auth import LoginLimiter
from smartmon.settings import ServerSettings
from tests.conftest import USER_PASSWORD, LiveServer, free_port
from tests.server.conftest import KeepAliveServer, assert_error, snapshot


def attempt(
    server: LiveServer, username: str, password: str, address: str = "127.0.0.1"
) -> httpx.Response:
    """One login from a given loopback address."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, base_url=server.url, timeout=15) as client:
        return client.post("/api/auth/login", json={"username": username, "password": password})


def assert_limited(r: httpx.Response, window_s: float = 15 * 60) -> None:
    body = assert_error(r, 429)
    assert body["error"] == "rate_limited"
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= window_s
    assert "accessToken" not in r.text


def test_ten_failures_for_one_username_lock_it_for_that_address(live_server: LiveServer) -> None:
    live_server.user_token("victim")
    before = snapshot(live_server.data_dir)
    for _ in range(10):
        assert_error(attempt(live_server, "victim", "guess-password"), 401)
    # the 11th attempt is refused even with the right password: no password is checked
    assert_limited(attempt(live_server, "victim", USER_PASSWORD))
    assert_limited(attempt(live_server, "VICTIM", "another-guess"))  # names are case-insensitive
    # the real user, from another address, still gets in
    ok = attempt(live_server, "victim", USER_PASSWORD, address="127.0.0.2")
    assert ok.status_code == 200, ok.text
    assert ok.json()["user"]["username"] == "victim"
    # and failing there still counts as an ordinary failure, not a lock-out
    assert_error(attempt(live_server, "victim", "typo-password", address="127.0.0.3"), 401)
    # ten failures from the first address also lock that address, for every username
    assert_limited(attempt(live_server, "admin", "admin-password-1"))
    assert attempt(live_server, "admin", "admin-password-1", address="127.0.0.4").status_code == 200
    assert snapshot(live_server.data_dir) == before


def test_ten_failures_from_one_address_across_usernames(live_server: LiveServer) -> None:
    live_server.user_token("realuser")
    for i in range(10):
        assert_error(attempt(live_server, f"guess{i}", "guess-password"), 401)
    assert_limited(attempt(live_server, "realuser", USER_PASSWORD))
    assert_limited(attempt(live_server, "unknown-name", "guess-password"))
    ok = attempt(live_server, "realuser", USER_PASSWORD, address="127.0.0.2")
    assert ok.status_code == 200, ok.text


@pytest.fixture
def short_window(tmp_path: Path) -> Iterator[LiveServer]:
    settings = ServerSettings(
        data_dir=tmp_path / "d", port=free_port(), login_attempts=3, login_window_s=1.0
    )
    server = KeepAliveServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_lock_lifts_when_the_window_passes(short_window: LiveServer) -> None:
    short_window.user_token("sleepy")
    for _ in range(3):
        assert_error(attempt(short_window, "sleepy", "guess-password"), 401)
    assert_limited(attempt(short_window, "sleepy", USER_PASSWORD), window_s=1.0)
    time.sleep(1.1)
    assert attempt(short_window, "sleepy", USER_PASSWORD).status_code == 200


def test_limiter_window_and_retry_after() -> None:
    limiter = LoginLimiter(attempts=10, window_s=900)
    for i in range(10):
        assert limiter.retry_after("bob", "10.0.0.1", now=100.0 + i) is None
        limiter.failed("bob", "10.0.0.1", now=100.0 + i)
    wait = limiter.retry_after("bob", "10.0.0.1", now=110.0)
    assert wait is not None and 880 <= wait <= 900
    assert limiter.retry_after("bob", "10.0.0.2", now=110.0) is None
    assert limiter.retry_after("alice", "10.0.0.1", now=110.0) is not None  # address limit
    # the oldest failure leaves the window: one more attempt is allowed
    assert limiter.retry_after("bob", "10.0.0.1", now=100.0 + 900.5) is None
    assert limiter.retry_after("bob", "10.0.0.1", now=2000.0) is None
